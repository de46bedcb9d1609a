package resolver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dnstest"
	"github.com/miekg/dns"
)

func startServer(t *testing.T) *dnstest.Server {
	t.Helper()
	s, err := dnstest.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestClientQuery(t *testing.T) {
	s := startServer(t)
	s.Set("www.example.test", dnstest.Record{A: addrs("192.0.2.1", "192.0.2.2"), AAAA: addrs("2001:db8::1"), TTL: 300})
	s.Set("alias.example.test", dnstest.Record{CNAME: "www.example.test", TTL: 60})
	s.Set("alias2.example.test", dnstest.Record{CNAME: "alias.example.test", TTL: 600})
	s.Set("loop1.example.test", dnstest.Record{CNAME: "loop2.example.test", TTL: 60})
	s.Set("loop2.example.test", dnstest.Record{CNAME: "loop1.example.test", TTL: 60})
	for i := 0; i < 12; i++ {
		s.Set(fmt.Sprintf("c%d.example.test", i), dnstest.Record{CNAME: fmt.Sprintf("c%d.example.test", i+1), TTL: 60})
	}
	s.Set("c12.example.test", dnstest.Record{A: addrs("192.0.2.9"), TTL: 60})
	s.Set("v4only.example.test", dnstest.Record{A: addrs("192.0.2.3"), TTL: 60})
	s.Set("broken.example.test", dnstest.Record{Rcode: dns.RcodeServerFailure})

	c := &Client{Servers: []netip.AddrPort{s.Addr}, Timeout: time.Second}
	ctx := context.Background()

	r, err := c.Query(ctx, "WWW.example.test", dns.TypeA)
	if err != nil || len(r.Addrs) != 2 || r.TTL != 300*time.Second || r.Negative {
		t.Fatalf("A www: %+v, %v", r, err)
	}
	r, err = c.Query(ctx, "www.example.test", dns.TypeAAAA)
	if err != nil || len(r.Addrs) != 1 || r.Addrs[0] != netip.MustParseAddr("2001:db8::1") {
		t.Fatalf("AAAA www: %+v, %v", r, err)
	}
	// The TTL of a chain is its minimum, CNAMEs included.
	r, err = c.Query(ctx, "alias2.example.test", dns.TypeA)
	if err != nil || len(r.Addrs) != 2 || r.TTL != 60*time.Second || len(r.Chain) != 2 {
		t.Fatalf("A alias2: %+v, %v", r, err)
	}
	if _, err = c.Query(ctx, "loop1.example.test", dns.TypeA); !errors.Is(err, ErrChainTooLong) {
		t.Fatalf("CNAME loop: err = %v", err)
	}
	if _, err = c.Query(ctx, "c0.example.test", dns.TypeA); !errors.Is(err, ErrChainTooLong) {
		t.Fatalf("12-hop chain: err = %v", err)
	}
	r, err = c.Query(ctx, "c5.example.test", dns.TypeA)
	if err != nil || len(r.Addrs) != 1 {
		t.Fatalf("7-hop chain: %+v, %v", r, err)
	}
	r, err = c.Query(ctx, "nosuch.example.test", dns.TypeA)
	if err != nil || !r.Negative || !r.NXDomain || r.TTL != 10*time.Second {
		t.Fatalf("NXDOMAIN: %+v, %v", r, err)
	}
	r, err = c.Query(ctx, "v4only.example.test", dns.TypeAAAA)
	if err != nil || !r.Negative || r.NXDomain {
		t.Fatalf("NODATA: %+v, %v", r, err)
	}
	var rc *RcodeError
	if _, err = c.Query(ctx, "broken.example.test", dns.TypeA); !errors.As(err, &rc) || rc.Rcode != dns.RcodeServerFailure {
		t.Fatalf("SERVFAIL: err = %v", err)
	}
}

// A chain that leaves the answer (the resolver did not follow the alias) is
// completed by asking for the target.
func TestClientFollowsChainOutsideAnswer(t *testing.T) {
	s := startServer(t)
	s.Set("target.example.test", dnstest.Record{A: addrs("192.0.2.7"), TTL: 30})
	s.Set("alias.example.test", dnstest.Record{CNAME: "target.example.test", TTL: 300})
	s.SetMangle(func(m *dns.Msg) {
		if strings.HasPrefix(m.Question[0].Name, "alias") {
			m.Answer = m.Answer[:1] // only the CNAME
		}
	})
	c := &Client{Servers: []netip.AddrPort{s.Addr}}
	r, err := c.Query(context.Background(), "alias.example.test", dns.TypeA)
	if err != nil || len(r.Addrs) != 1 || r.TTL != 30*time.Second {
		t.Fatalf("%+v, %v", r, err)
	}
	if got := s.QueriesFor("target.example.test"); got != 1 {
		t.Fatalf("target queried %d times, want 1", got)
	}
}

func TestClientTruncationRetriesOverTCP(t *testing.T) {
	s := startServer(t)
	var many []netip.Addr
	for i := 0; i < 5000; i++ {
		many = append(many, netip.AddrFrom4([4]byte{198, 51, byte(100 + i/256), byte(i)}))
	}
	s.Set("many.example.test", dnstest.Record{A: many, TTL: 60})
	c := &Client{Servers: []netip.AddrPort{s.Addr}}
	r, err := c.Query(context.Background(), "many.example.test", dns.TypeA)
	// 5,000 A records do not fit in 64 KiB: TCP carries as many as fit.
	if err != nil || len(r.Addrs) < 3000 || len(r.Addrs) >= 5000 {
		t.Fatalf("got %d addresses, %v; want the ~4,000 that fit over TCP", len(r.Addrs), err)
	}
	if s.Queries() != 2 {
		t.Fatalf("server saw %d queries, want 2 (UDP, then TCP)", s.Queries())
	}
}

func TestClientFailover(t *testing.T) {
	bad := startServer(t)
	bad.Set("x.example.test", dnstest.Record{Rcode: dns.RcodeRefused})
	good := startServer(t)
	good.Set("x.example.test", dnstest.Record{A: addrs("192.0.2.5"), TTL: 60})
	dead := netip.MustParseAddrPort("127.0.0.1:9") // nothing listens: ICMP port unreachable
	c := &Client{Servers: []netip.AddrPort{dead, bad.Addr, good.Addr}, Timeout: 500 * time.Millisecond}
	r, err := c.Query(context.Background(), "x.example.test", dns.TypeA)
	if err != nil || len(r.Addrs) != 1 {
		t.Fatalf("%+v, %v", r, err)
	}
	c = &Client{Servers: []netip.AddrPort{dead, bad.Addr}, Timeout: 500 * time.Millisecond}
	if _, err := c.Query(context.Background(), "x.example.test", dns.TypeA); err == nil {
		t.Fatal("all servers failed but the query succeeded")
	}
}

func TestClientRejectsMismatchedReplies(t *testing.T) {
	s := startServer(t)
	s.Set("x.example.test", dnstest.Record{A: addrs("192.0.2.5"), TTL: 60})
	s.SetMangle(func(m *dns.Msg) { m.Question[0].Name = "evil.example.test." })
	c := &Client{Servers: []netip.AddrPort{s.Addr}, Timeout: 300 * time.Millisecond}
	if _, err := c.Query(context.Background(), "x.example.test", dns.TypeA); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("wrong question: err = %v", err)
	}
	s.SetMangle(func(m *dns.Msg) { m.Id ^= 0x5555 })
	if _, err := c.Query(context.Background(), "x.example.test", dns.TypeA); err == nil {
		t.Fatal("a reply with the wrong ID was accepted")
	}
}

func TestClientSendsEDNS0(t *testing.T) {
	s := startServer(t)
	var sawEDNS atomic.Bool
	s.Set("x.example.test", dnstest.Record{A: addrs("192.0.2.5"), TTL: 60})
	s.SetMangle(func(m *dns.Msg) { sawEDNS.Store(m.IsEdns0() != nil) }) // the server echoes OPT only when asked with it
	c := &Client{Servers: []netip.AddrPort{s.Addr}}
	if _, err := c.Query(context.Background(), "x.example.test", dns.TypeA); err != nil || !sawEDNS.Load() {
		t.Fatalf("EDNS0 not sent (err %v)", err)
	}
}
