// Command compat32 is the red team's 32-bit helper (issue 28, rt28): built
// with GOARCH=386, its system calls enter the kernel's compat (ia32) entry,
// where net/socket.c runs no cgroup setsockopt program. It binds a UDP
// socket to 127.0.0.1 on a port the kernel picks, sets IP_RECVERR, prints
// "ok PORT", then waits up to 3 s for an ICMP error on the error queue and
// prints "got PAYLOAD" (the quoted datagram's payload) or "none (...)", as
// the package's rtu=errq helper does. With a last argument
// "udp4,127.0.0.1,PORT" it binds that port instead and prints "ok PORT" or
// the error ("EPERM" for a refusal), and exits. Standard library only: the test builds
// it with the Go toolchain that runs it.
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	port, explicit := 0, false
	if p, ok := strings.CutPrefix(os.Args[len(os.Args)-1], "udp4,127.0.0.1,"); ok {
		port, _ = strconv.Atoi(p)
		explicit = true
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM, syscall.IPPROTO_UDP)
	if err == nil {
		err = syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
	}
	if err == syscall.EPERM {
		fmt.Println("EPERM")
		os.Exit(1)
	}
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	if explicit {
		fmt.Println("ok", port)
		return
	}
	var refused string
	if err := syscall.SetsockoptInt(fd, syscall.SOL_IP, syscall.IP_RECVERR, 1); err != nil {
		refused = fmt.Sprintf(" (IP_RECVERR: %v)", err)
	} else if v, err := syscall.GetsockoptInt(fd, syscall.SOL_IP, syscall.IP_RECVERR); err != nil || v == 0 {
		refused = fmt.Sprintf(" (IP_RECVERR off: %d, %v)", v, err)
	}
	fmt.Println("ok", sa.(*syscall.SockaddrInet4).Port)
	buf, oob := make([]byte, 256), make([]byte, 256)
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		n, _, _, _, err := syscall.Recvmsg(fd, buf, oob, syscall.MSG_DONTWAIT|syscall.MSG_ERRQUEUE)
		if err == nil {
			if i := strings.Index(string(buf[:n]), "door"); i > 0 {
				n, buf = n-i, buf[i:]
			}
			fmt.Println("got", string(buf[:n]))
			return
		}
	}
	fmt.Println("none" + refused)
}
