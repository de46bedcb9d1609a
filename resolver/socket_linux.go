//go:build linux

package resolver

import (
	"net"
	"net/netip"
	"os"
	"syscall"
)

// dialUDP opens a fresh UDP socket connected to srv. connect binds it to a
// source port the kernel picks at random, as net.DialUDP does, but in fewer
// system calls (socket, connect, and the runtime poller's registration:
// no SO_BROADCAST, getsockname or getpeername, which a query does not need).
func dialUDP(srv netip.AddrPort) (udpConn, error) {
	addr := srv.Addr().Unmap()
	var sa syscall.Sockaddr
	family := syscall.AF_INET
	switch {
	case addr.Is4():
		sa = &syscall.SockaddrInet4{Port: int(srv.Port()), Addr: addr.As4()}
	case addr.Zone() != "":
		// A link-local resolver: the zone names an interface.
		return net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(srv))
	default:
		family = syscall.AF_INET6
		sa = &syscall.SockaddrInet6{Port: int(srv.Port()), Addr: addr.As16()}
	}
	fd, err := syscall.Socket(family, syscall.SOCK_DGRAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, syscall.IPPROTO_UDP)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := syscall.Connect(fd, sa); err != nil {
		syscall.Close(fd) //nolint:errcheck // the connect error is the one to report
		return nil, os.NewSyscallError("connect", err)
	}
	return os.NewFile(uintptr(fd), "udp "+srv.String()), nil
}
