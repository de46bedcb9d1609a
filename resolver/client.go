// Package resolver owns egressd's DNS: a client that queries the configured
// resolvers with github.com/miekg/dns, and a cache that turns answers, TTLs,
// failures and time into the set of addresses each name currently allows.
package resolver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Result is the outcome of one successful lookup of one name and type.
type Result struct {
	Addrs    []netip.Addr  // in answer order, deduplicated
	TTL      time.Duration // minimum over the answer chain, CNAMEs included
	Negative bool          // NXDOMAIN or NODATA: the name has no such addresses
	NXDomain bool
	Chain    []string // CNAME targets followed, in order
	// Source is where the answer came from: SourceHosts or SourceDNS ("" from
	// a bare Client). Hosts answers are the administrator's own words and,
	// like literal entries, are not filtered for internal ranges.
	Source string

	seen map[netip.Addr]bool // dedup while building, past dedupScan addresses
}

// dedupScan is how many addresses add deduplicates by looking through
// them, before it builds a map: most answers carry one or two, and a map
// per lookup was a fifth of a cold apply's allocated bytes.
const dedupScan = 16

func (r *Result) add(a netip.Addr) {
	if r.seen == nil {
		if slices.Contains(r.Addrs, a) {
			return
		}
		if len(r.Addrs) < dedupScan {
			r.Addrs = append(r.Addrs, a)
			return
		}
		r.seen = make(map[netip.Addr]bool, 2*dedupScan)
		for _, x := range r.Addrs {
			r.seen[x] = true
		}
	}
	if !r.seen[a] {
		r.seen[a] = true
		r.Addrs = append(r.Addrs, a)
	}
}

// Querier looks up one name and type. Implementations are safe for concurrent use.
type Querier interface {
	Query(ctx context.Context, name string, qtype uint16) (Result, error)
}

// Client queries a list of recursive resolvers, in order, failing over to the
// next on timeout, SERVFAIL, REFUSED or a malformed reply.
type Client struct {
	Servers  []netip.AddrPort
	Timeout  time.Duration // per attempt; default 2s
	MaxChain int           // longest CNAME chain followed; default DefaultMaxChain
	UDPSize  uint16        // EDNS0 buffer size advertised; default 1232
}

// Errors a caller may branch on.
var (
	ErrChainTooLong = errors.New("CNAME chain too long or looping")
)

// RcodeError is a reply code that is neither NOERROR nor NXDOMAIN.
type RcodeError struct {
	Server netip.AddrPort
	Rcode  int
}

func (e *RcodeError) Error() string {
	return fmt.Sprintf("%s answered %s", e.Server, dns.RcodeToString[e.Rcode])
}

func (c *Client) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return 2 * time.Second
}

// Query resolves name (A or AAAA), following CNAME chains: first within the
// answer, then by asking again for a target the answer did not resolve.
func (c *Client) Query(ctx context.Context, name string, qtype uint16) (Result, error) {
	return c.query(ctx, name, qtype, nil)
}

// query is Query whose first reply, for name itself, may already be in
// hand (first; nil: it is asked for).
func (c *Client) query(ctx context.Context, name string, qtype uint16, first *dns.Msg) (Result, error) {
	maxChain := c.MaxChain
	if maxChain <= 0 {
		maxChain = DefaultMaxChain
	}
	var res Result
	res.TTL = -1
	var seen []string // the names asked (a chain is at most maxChain long)
	cur := dns.Fqdn(strings.ToLower(name))
	for {
		if slices.Contains(seen, cur) {
			return Result{}, fmt.Errorf("%s: %w (loop at %s)", name, ErrChainTooLong, cur)
		}
		seen = append(seen, cur)
		msg := first
		first = nil
		if msg == nil {
			var err error
			if msg, err = c.exchange(ctx, cur, qtype); err != nil {
				return Result{}, fmt.Errorf("%s %s: %w", dns.TypeToString[qtype], name, err)
			}
		}
		target, err := walk(msg, cur, qtype, &res, maxChain)
		if err != nil {
			return Result{}, fmt.Errorf("%s: %w", name, err)
		}
		if target == "" {
			break
		}
		cur = target // the chain leaves the answer: ask for the rest
	}
	if res.TTL < 0 {
		res.TTL = 0
	}
	res.seen = nil
	return res, nil
}

// exchange asks each server in turn until one gives a usable reply.
func (c *Client) exchange(ctx context.Context, qname string, qtype uint16) (*dns.Msg, error) {
	if len(c.Servers) == 0 {
		return nil, errors.New("no resolvers configured")
	}
	q := c.question(qname, qtype)
	var errs []error
	for _, srv := range c.Servers {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r, err := c.exchangeOne(ctx, q, srv)
		if err == nil {
			return r, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// question is the query for qname and qtype, ID not yet set.
func (c *Client) question(qname string, qtype uint16) *dns.Msg {
	q := new(dns.Msg)
	// What SetQuestion does, with queryID for its dns.Id (each exchange
	// sets a fresh one anyway).
	q.Id = queryID()
	q.RecursionDesired = true
	q.Question = []dns.Question{{Name: qname, Qtype: qtype, Qclass: dns.ClassINET}}
	q.SetEdns0(c.udpSize(), false)
	return q
}

func (c *Client) udpSize() uint16 {
	if c.UDPSize == 0 {
		return 1232
	}
	return c.UDPSize
}

func (c *Client) exchangeOne(ctx context.Context, q *dns.Msg, srv netip.AddrPort) (*dns.Msg, error) {
	// A fresh ID per attempt: miekg's client ignores replies whose ID differs,
	// which is what makes a blind spoofing attempt miss.
	q = q.Copy()
	q.Id = queryID()
	size := dns.MinMsgSize
	if opt := q.IsEdns0(); opt != nil {
		size = int(opt.UDPSize())
	}
	r, err := exchangeUDP(ctx, q, srv, c.timeout(), size)
	return c.settle(ctx, q, srv, r, err)
}

// settle checks a UDP reply r to q (or the error that came instead):
// truncated, it is asked again over TCP; it must answer q's question and
// carry NOERROR or NXDOMAIN.
func (c *Client) settle(ctx context.Context, q *dns.Msg, srv netip.AddrPort, r *dns.Msg, err error) (*dns.Msg, error) {
	if err == nil && r.Truncated {
		// miekg does not retry over TCP by itself; truncated answers are never used.
		tcp := &dns.Client{Net: "tcp", Timeout: c.timeout()}
		r, _, err = tcp.ExchangeContext(ctx, q, srv.String())
		// A TCP answer marked truncated is as complete as 64 KiB allows; its
		// records are real answers and the per-name cap keeps far fewer.
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", srv, err)
	}
	if !Answers(r, q.Question[0]) {
		return nil, fmt.Errorf("%s: reply does not match the question (ignored as a possible spoof)", srv)
	}
	if r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError {
		return nil, &RcodeError{Server: srv, Rcode: r.Rcode}
	}
	return r, nil
}
