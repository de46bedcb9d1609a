//go:build linux

package resolver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dialUDP opens a fresh UDP socket connected to srv. connect binds it to a
// source port the kernel picks at random, as net.DialUDP does, but in fewer
// system calls (socket, connect, and the runtime poller's registration:
// no SO_BROADCAST, getsockname or getpeername, which a query does not need).
func dialUDP(srv netip.AddrPort) (udpConn, error) {
	fd, zoned, err := connectUDP(srv)
	if zoned {
		// A link-local resolver: the zone names an interface.
		return net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(srv))
	}
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "udp "+srv.String()), nil
}

// connectUDP opens a non-blocking UDP socket connected to srv (the kernel
// binds it to a random source port). zoned: srv is a link-local address
// with a zone, which names an interface; the caller goes through package
// net then.
func connectUDP(srv netip.AddrPort) (fd int, zoned bool, err error) {
	addr := srv.Addr().Unmap()
	var sa syscall.Sockaddr
	family := syscall.AF_INET
	switch {
	case addr.Is4():
		sa = &syscall.SockaddrInet4{Port: int(srv.Port()), Addr: addr.As4()}
	case addr.Zone() != "":
		return -1, true, nil
	default:
		family = syscall.AF_INET6
		sa = &syscall.SockaddrInet6{Port: int(srv.Port()), Addr: addr.As16()}
	}
	fd, err = syscall.Socket(family, syscall.SOCK_DGRAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, syscall.IPPROTO_UDP)
	if err != nil {
		return -1, false, os.NewSyscallError("socket", err)
	}
	if err := syscall.Connect(fd, sa); err != nil {
		syscall.Close(fd) //nolint:errcheck // the connect error is the one to report
		return -1, false, os.NewSyscallError("connect", err)
	}
	return fd, false, nil
}

// dialSend opens a fresh UDP socket connected to srv, as dialUDP does, and
// sends pkts on it in one sendmmsg: one system call for a name's two
// queries instead of a write each. The socket is registered with the
// runtime poller only when a reply has to be waited for (fresh.conn): replies
// already received are read without it (fresh.tryRead), which saves the
// registration and its removal. A send the kernel does not take whole (a
// full socket buffer, unlikely on a fresh socket) is an error, as a failed
// write is.
func dialSend(srv netip.AddrPort, pkts [][]byte) (fresh, error) {
	fd, zoned, err := connectUDP(srv)
	if zoned {
		return dialWrite(srv, pkts)
	}
	if err != nil {
		return nil, err
	}
	if err := sendAll(fd, pkts); err != nil {
		syscall.Close(fd) //nolint:errcheck // the send error is the one to report
		return nil, err
	}
	return &rawSocket{fd: fd, srv: srv}, nil
}

// rawSocket is a fresh socket not (yet) registered with the poller.
type rawSocket struct {
	fd  int
	srv netip.AddrPort
	f   *os.File // once conn was called: it owns fd
}

// tryRead reads the datagrams already received (up to len(bufs), at most
// 2) without waiting; lens[i] is the length of the one read into bufs[i].
func (s *rawSocket) tryRead(bufs [][]byte) (lens []int) {
	if s.f != nil || len(bufs) == 0 || len(bufs) > 2 {
		return nil
	}
	var iov [2]unix.Iovec
	var hdr [2]unix.Mmsghdr
	for i, b := range bufs {
		iov[i].Base = &b[0]
		iov[i].SetLen(len(b))
		hdr[i].Hdr.Iov = &iov[i]
		hdr[i].Hdr.SetIovlen(1)
	}
	var n uintptr
	var errno syscall.Errno
	for {
		n, _, errno = unix.Syscall6(unix.SYS_RECVMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&hdr[0])), uintptr(len(bufs)), unix.MSG_DONTWAIT, 0, 0)
		runtime.KeepAlive(&iov)
		if errno != unix.EINTR {
			break
		}
	}
	if errno != 0 {
		return nil // nothing yet, or an error the poller's read reports
	}
	lens = make([]int, n)
	for i := range lens {
		lens[i] = int(hdr[i].Len)
	}
	return lens
}

// conn registers the socket with the runtime poller, to wait for replies.
func (s *rawSocket) conn() (udpConn, error) {
	if s.f == nil {
		s.f = os.NewFile(uintptr(s.fd), "udp "+s.srv.String())
	}
	return s.f, nil
}

func (s *rawSocket) Close() error {
	if s.f != nil {
		return s.f.Close()
	}
	return syscall.Close(s.fd)
}

// sendAll sends each of pkts (at most 2) as a datagram on the connected fd.
func sendAll(fd int, pkts [][]byte) error {
	var iov [2]unix.Iovec
	var hdr [2]unix.Mmsghdr
	if len(pkts) > len(hdr) {
		return fmt.Errorf("sendmmsg: %d datagrams", len(pkts))
	}
	for i, p := range pkts {
		if len(p) == 0 {
			return errors.New("sendmmsg: an empty datagram")
		}
		iov[i].Base = &p[0]
		iov[i].SetLen(len(p))
		hdr[i].Hdr.Iov = &iov[i]
		hdr[i].Hdr.SetIovlen(1)
	}
	for {
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&hdr[0])), uintptr(len(pkts)), 0, 0, 0)
		runtime.KeepAlive(&iov)
		switch {
		case errno == unix.EINTR:
			continue
		case errno != 0:
			return os.NewSyscallError("sendmmsg", errno)
		case int(n) != len(pkts):
			return fmt.Errorf("sendmmsg: %d of %d datagrams sent", n, len(pkts))
		}
		for i, p := range pkts {
			if int(hdr[i].Len) != len(p) {
				return fmt.Errorf("sendmmsg: %d of %d bytes sent", hdr[i].Len, len(p))
			}
		}
		return nil
	}
}
