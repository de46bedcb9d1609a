package resolver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Lookup is the outcome of one lookup of one name and type.
type Lookup struct {
	Res Result
	Err error
}

// BothQuerier is a Querier that can look up both address types of a name
// at once.
type BothQuerier interface {
	Querier
	// QueryBoth looks up name's A and AAAA records: [0] is A, [1] AAAA.
	QueryBoth(ctx context.Context, name string) [2]Lookup
}

// bothTypes are the types QueryBoth asks, in the order of its result.
var bothTypes = [2]uint16{dns.TypeA, dns.TypeAAAA}

// QueryBoth implements BothQuerier. The two questions go out together on
// one fresh socket, each with its own random ID, as glibc's resolver asks
// them: a name's refresh costs one socket instead of two, and each query
// is as hard to forge blind as one asked alone (a source port the kernel
// picks at random for this socket, and a 16-bit random ID; a reply is read
// only for the query whose ID and question it carries). What the first replies
// leave open (a chain that leaves the answer, a retry on the next resolver
// for one type) is asked one query at a time, as Query does.
func (c *Client) QueryBoth(ctx context.Context, name string) [2]Lookup {
	var out [2]Lookup
	qname := dns.Fqdn(strings.ToLower(name))
	msgs, errs := c.exchangeBoth(ctx, qname)
	for i, t := range bothTypes {
		if errs[i] != nil {
			out[i].Err = fmt.Errorf("%s %s: %w", dns.TypeToString[t], name, errs[i])
			continue
		}
		out[i].Res, out[i].Err = c.query(ctx, name, t, msgs[i])
	}
	return out
}

// exchangeBoth is exchange for A and AAAA of qname together: each server
// in turn is asked what no earlier one answered usably.
func (c *Client) exchangeBoth(ctx context.Context, qname string) (msgs [2]*dns.Msg, errs [2]error) {
	if len(c.Servers) == 0 {
		err := errors.New("no resolvers configured")
		return msgs, [2]error{err, err}
	}
	qs := [2]*dns.Msg{c.question(qname, bothTypes[0]), c.question(qname, bothTypes[1])}
	var failed [2][]error
	for _, srv := range c.Servers {
		if err := ctx.Err(); err != nil {
			for i := range msgs {
				if msgs[i] == nil {
					failed[i] = []error{err}
				}
			}
			break
		}
		switch {
		case msgs[0] == nil && msgs[1] == nil:
			r, err := c.exchangePair(ctx, qs, srv)
			for i := range r {
				if msgs[i] = r[i]; err[i] != nil {
					failed[i] = append(failed[i], err[i])
				}
			}
		case msgs[0] == nil || msgs[1] == nil:
			i := 0
			if msgs[0] != nil {
				i = 1
			}
			var err error
			if msgs[i], err = c.exchangeOne(ctx, qs[i], srv); err != nil {
				failed[i] = append(failed[i], err)
			}
		}
	}
	for i := range msgs {
		if msgs[i] == nil {
			errs[i] = errors.Join(failed[i]...)
		}
	}
	return msgs, errs
}

// exchangePair sends both queries to srv on one fresh socket and reads
// their replies until both came or the time is up. A datagram whose ID is
// neither query's is ignored (a late reply, or a guess), as miekg's client
// does.
func (c *Client) exchangePair(ctx context.Context, qs [2]*dns.Msg, srv netip.AddrPort) (out [2]*dns.Msg, errs [2]error) {
	both := func(err error) ([2]*dns.Msg, [2]error) {
		err = fmt.Errorf("%s: %w", srv, err)
		return out, [2]error{err, err}
	}
	conn, err := dialUDP(srv)
	if err != nil {
		return both(err)
	}
	defer conn.Close()
	deadline := time.Now().Add(c.timeout())
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return both(err)
	}
	var sent [2]*dns.Msg
	for i, q := range qs {
		q = q.Copy()
		q.Id = dns.Id()
		for i == 1 && q.Id == sent[0].Id {
			q.Id = dns.Id() // distinct IDs: a reply belongs to one query only
		}
		b, err := q.Pack()
		if err != nil {
			return both(err)
		}
		if _, err := conn.Write(b); err != nil {
			return both(err)
		}
		sent[i] = q
	}
	bp := replyBufs.Get().(*[]byte)
	defer replyBufs.Put(bp)
	buf := *bp
	if n := max(int(c.udpSize()), dns.MinMsgSize); n <= len(buf) {
		buf = buf[:n] // as miekg reads: the size advertised
	} else {
		buf = make([]byte, n)
	}
	for left := 2; left > 0; {
		// A cancelled ctx (a stop) ends the wait within pairCancelCheck:
		// the wait is cut in slices (the replies normally come within the
		// first), cheaper than a hook on ctx for every lookup.
		wait := time.Now().Add(pairCancelCheck)
		if deadline.Before(wait) {
			wait = deadline
		}
		if err := conn.SetDeadline(wait); err != nil {
			return both(err)
		}
		n, err := conn.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() == nil && time.Now().Before(deadline) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			for i := range out {
				if out[i] == nil && errs[i] == nil {
					errs[i] = fmt.Errorf("%s: %w", srv, err)
				}
			}
			return out, errs
		}
		if n < 2 {
			continue
		}
		id, i := binary.BigEndian.Uint16(buf), -1
		for j, q := range sent {
			if q.Id == id && out[j] == nil && errs[j] == nil {
				i = j
			}
		}
		if i < 0 {
			continue
		}
		left--
		r := new(dns.Msg)
		if err := r.Unpack(buf[:n]); err != nil {
			errs[i] = fmt.Errorf("%s: %w", srv, err)
			continue
		}
		out[i], errs[i] = c.settle(ctx, sent[i], srv, r, nil)
	}
	return out, errs
}

// pairCancelCheck is how often a lookup waiting for its replies sees
// whether its context was cancelled.
const pairCancelCheck = 100 * time.Millisecond

// replyBufs hold replies being read (a Client.UDPSize above 4096 gets
// its own buffer).
var replyBufs = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

// udpConn is the socket of one pair of queries.
type udpConn interface {
	io.ReadWriteCloser
	SetDeadline(time.Time) error
}
