package resolver

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// exchangeUDP asks q of srv from a UDP socket of its own: a fresh source
// port chosen by the kernel, connected to srv so that only srv's address
// and port are received, closed after the answer. It does what miekg's
// client does over UDP (a reply with another ID is ignored, a malformed one
// is an error) with half the system calls: miekg dials through the net
// package, which also sets SO_BROADCAST and asks the kernel both addresses
// back, and parses the server's address each time (docs/performance.md,
// cold apply: the DNS exchange is most of a cold run's CPU).
func exchangeUDP(ctx context.Context, q *dns.Msg, srv netip.AddrPort, timeout time.Duration, size int) (*dns.Msg, error) {
	pkt, err := q.Pack()
	if err != nil {
		return nil, err
	}
	var sa unix.Sockaddr
	family := unix.AF_INET
	if a := srv.Addr().Unmap(); a.Is4() {
		sa = &unix.SockaddrInet4{Port: int(srv.Port()), Addr: a.As4()}
	} else {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(srv.Port()), Addr: a.As16(), ZoneId: zoneID(a.Zone())}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if err := unix.Connect(fd, sa); err != nil {
		unix.Close(fd) //nolint:errcheck
		return nil, os.NewSyscallError("connect", err)
	}
	f := os.NewFile(uintptr(fd), "udp") // errors read "read udp: ..."; non-blocking: the runtime's poller waits for it
	defer f.Close()
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := f.SetWriteDeadline(deadline); err != nil {
		return nil, err
	}
	if _, err := f.Write(pkt); err != nil {
		return nil, ioError(ctx, err)
	}
	buf := make([]byte, max(size, dns.MinMsgSize))
	for {
		// A cancelled ctx (a stop) ends the wait within cancelCheck, not
		// at the deadline: the wait is cut in slices (an answer normally
		// comes within the first), cheaper than a hook on ctx per query.
		wait := time.Now().Add(cancelCheck)
		if deadline.Before(wait) {
			wait = deadline
		}
		if err := f.SetReadDeadline(wait); err != nil {
			return nil, err
		}
		n, err := f.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil && time.Now().Before(deadline) {
			continue
		}
		if err != nil {
			return nil, ioError(ctx, err)
		}
		r := new(dns.Msg)
		if err := r.Unpack(buf[:n]); err != nil {
			return nil, err
		}
		if r.Id == q.Id {
			return r, nil
		}
		// Another ID: a late reply to an earlier query, or a spoofing
		// attempt; keep waiting for ours.
	}
}

// cancelCheck is how often a query waiting for its answer sees whether its
// context was cancelled.
const cancelCheck = 100 * time.Millisecond

// ioError is ctx's error when ctx ended the exchange.
func ioError(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		return cerr
	}
	return err
}

// zoneID is the interface index of an IPv6 zone (a link-local resolver,
// fe80::1%eth0): a name or a number; 0 when unknown (connect then fails).
func zoneID(zone string) uint32 {
	if zone == "" {
		return 0
	}
	if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
		return uint32(n)
	}
	ifi, err := net.InterfaceByName(zone)
	if err != nil {
		return 0
	}
	return uint32(ifi.Index)
}
