package resolver

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"time"

	"github.com/miekg/dns"
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
	f, err := dialUDP(srv)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := f.SetDeadline(deadline); err != nil {
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
		if err := f.SetDeadline(wait); err != nil {
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
