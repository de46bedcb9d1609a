package resolver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"runtime"
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
	var sent [2]*dns.Msg
	var pkts [2][]byte
	for i, q := range qs {
		// qs are this lookup's own (exchangeBoth): a fresh ID in place, no
		// copy; exchangeOne copies what it asks again.
		q.Id = queryID()
		for i == 1 && q.Id == sent[0].Id {
			q.Id = queryID() // distinct IDs: a reply belongs to one query only
		}
		b, err := q.Pack()
		if err != nil {
			return both(err)
		}
		sent[i], pkts[i] = q, b
	}
	deadline := time.Now().Add(c.timeout())
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	s, err := dialSend(srv, pkts[:])
	if err != nil {
		return both(err)
	}
	defer s.Close()
	bp := replyBufs.Get().(*[]byte)
	defer replyBufs.Put(bp)
	var bufs [2][]byte
	if n := max(int(c.udpSize()), dns.MinMsgSize); 2*n <= len(*bp) {
		// as miekg reads: the size advertised
		bufs = [2][]byte{(*bp)[:n:n], (*bp)[n : 2*n]}
	} else {
		bufs = [2][]byte{make([]byte, n), make([]byte, n)}
	}
	left := 2
	take := func(b []byte) {
		if len(b) < 2 {
			return
		}
		id, i := binary.BigEndian.Uint16(b), -1
		for j, q := range sent {
			if q.Id == id && out[j] == nil && errs[j] == nil {
				i = j
			}
		}
		if i < 0 {
			return
		}
		left--
		r := new(dns.Msg)
		if err := r.Unpack(b); err != nil {
			errs[i] = fmt.Errorf("%s: %w", srv, err)
			return
		}
		out[i], errs[i] = c.settle(ctx, sent[i], srv, r, nil)
	}
	// Let the other lookups send theirs first: by then the replies are
	// often in, and are read without the poller (no registration, no
	// wait). A nearby server's replies come within microseconds; at 64
	// lookups in flight a worker's turn comes back later than that.
	runtime.Gosched()
	if afterSend != nil {
		afterSend()
	}
	for left > 0 {
		asked := left
		lens := s.tryRead(bufs[:asked])
		for i, n := range lens {
			take(bufs[i][:n])
		}
		if len(lens) < asked {
			break // nothing more yet
		}
	}
	if left == 0 {
		return out, errs
	}
	conn, err := s.conn()
	if err != nil {
		return both(err)
	}
	buf := bufs[0]
	for left > 0 {
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
		take(buf[:n])
	}
	return out, errs
}

// afterSend, when set (tests), runs between sending a pair's queries and
// reading what already came.
var afterSend func()

// pairCancelCheck is how often a lookup waiting for its replies sees
// whether its context was cancelled.
const pairCancelCheck = 100 * time.Millisecond

// replyBufs hold the two replies being read (a Client.UDPSize above 4096
// gets buffers of its own).
var replyBufs = sync.Pool{New: func() any { b := make([]byte, 8192); return &b }}

// udpConn is the socket of one pair of queries.
type udpConn interface {
	io.ReadWriteCloser
	SetDeadline(time.Time) error
}

// fresh is a fresh socket of one lookup, its queries sent (dialSend).
type fresh interface {
	// tryRead reads the replies already received into bufs, without
	// waiting: lens[i] is the length of the one in bufs[i].
	tryRead(bufs [][]byte) (lens []int)
	// conn is the socket to wait for replies on.
	conn() (udpConn, error)
	Close() error
}

// dialWrite is dialUDP, then a write of each of pkts.
func dialWrite(srv netip.AddrPort, pkts [][]byte) (fresh, error) {
	conn, err := dialUDP(srv)
	if err != nil {
		return nil, err
	}
	for _, p := range pkts {
		if _, err := conn.Write(p); err != nil {
			conn.Close() //nolint:errcheck // the write error is the one to report
			return nil, err
		}
	}
	return polled{conn}, nil
}

// polled is a fresh socket registered with the poller from the start.
type polled struct{ udpConn }

func (polled) tryRead([][]byte) []int   { return nil }
func (p polled) conn() (udpConn, error) { return p.udpConn, nil }
