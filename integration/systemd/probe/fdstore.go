package main

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// fdstore is a service that keeps a socket across its restarts in
// systemd's file descriptor store (FileDescriptorStoreMax=, NotifyAccess=):
// without a stored descriptor it makes an unbound TCP socket, hands it to
// the store (FDSTORE=1; FDPOLL=0, or systemd drops it: an unconnected TCP
// socket polls as hung up) and exits 1 (Restart= starts the next run); with
// one (LISTEN_FDS=1, fd 3) it listens on it, prints "listening PORT", then
// "accepted" and a greeting for each connection.
func fdstore() int {
	if os.Getenv("LISTEN_FDS") == "1" {
		if err := unix.Listen(3, 8); err != nil {
			fmt.Println("error: listen:", err)
			return 1
		}
		sa, err := unix.Getsockname(3)
		if err != nil {
			fmt.Println("error: getsockname:", err)
			return 1
		}
		in4, ok := sa.(*unix.SockaddrInet4)
		if !ok {
			fmt.Println("error: not an IPv4 socket")
			return 1
		}
		fmt.Println("listening", in4.Port)
		for {
			nfd, _, err := unix.Accept(3)
			if err != nil {
				fmt.Println("error: accept:", err)
				return 1
			}
			fmt.Println("accepted")
			unix.Write(nfd, []byte("hello\n")) //nolint:errcheck
			unix.Close(nfd)
		}
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fmt.Println("error: socket:", err)
		return 1
	}
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		fmt.Println("error: no NOTIFY_SOCKET")
		return 1
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:]
	}
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fmt.Println("error: socket:", err)
		return 1
	}
	if err := unix.Sendmsg(s, []byte("FDSTORE=1\nFDNAME=door\nFDPOLL=0"), unix.UnixRights(fd), &unix.SockaddrUnix{Name: addr}, 0); err != nil {
		fmt.Println("error: sd_notify:", err)
		return 1
	}
	fmt.Println("stored")
	// systemd reads the message after the exit otherwise, when the sender
	// is no longer the main process it accepts notifications from.
	time.Sleep(2 * time.Second)
	return 1
}
