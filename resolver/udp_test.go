package resolver

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// replyServer answers each query on a UDP socket of its own with reply
// (nil: no answer); the source port of each query goes to ports.
func replyServer(t *testing.T, network, addr string, reply func(q *dns.Msg) []*dns.Msg) (netip.AddrPort, <-chan int) {
	t.Helper()
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Skipf("%s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { pc.Close() })
	ports := make(chan int, 64)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			select {
			case ports <- from.(*net.UDPAddr).Port:
			default:
			}
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil {
				continue
			}
			for _, r := range reply(q) {
				b, _ := r.Pack()
				pc.WriteTo(b, from) //nolint:errcheck
			}
		}
	}()
	return netip.MustParseAddrPort(pc.LocalAddr().String()), ports
}

func answerA(q *dns.Msg, id uint16, a string) *dns.Msg {
	r := new(dns.Msg)
	r.SetReply(q)
	r.Id = id
	rr, _ := dns.NewRR(q.Question[0].Name + " 60 IN A " + a)
	r.Answer = append(r.Answer, rr)
	return r
}

// A reply with another ID before the real one (a blind spoofing attempt
// that guessed the port) is ignored, and the real one is still taken.
func TestClientIgnoresOtherIDThenTakesReal(t *testing.T) {
	srv, _ := replyServer(t, "udp4", "127.0.0.1:0", func(q *dns.Msg) []*dns.Msg {
		return []*dns.Msg{answerA(q, q.Id^0x5555, "203.0.113.66"), answerA(q, q.Id, "192.0.2.5")}
	})
	c := &Client{Servers: []netip.AddrPort{srv}}
	r, err := c.Query(context.Background(), "x.example.test", dns.TypeA)
	if err != nil || len(r.Addrs) != 1 || r.Addrs[0] != netip.MustParseAddr("192.0.2.5") {
		t.Fatalf("got %v, %v; want only 192.0.2.5", r.Addrs, err)
	}
}

// Each query comes from a socket of its own: its source port is the
// kernel's new random choice (docs/security.md).
func TestClientFreshSourcePortPerQuery(t *testing.T) {
	srv, ports := replyServer(t, "udp4", "127.0.0.1:0", func(q *dns.Msg) []*dns.Msg { return []*dns.Msg{answerA(q, q.Id, "192.0.2.5")} })
	c := &Client{Servers: []netip.AddrPort{srv}}
	seen := map[int]bool{}
	for i := 0; i < 4; i++ {
		if _, err := c.Query(context.Background(), "x.example.test", dns.TypeA); err != nil {
			t.Fatal(err)
		}
		seen[<-ports] = true
	}
	if len(seen) < 2 {
		t.Fatalf("4 queries came from source ports %v: a socket was reused", seen)
	}
}

// A stop (ctx cancelled) ends a query waiting for a silent server at once,
// not at its timeout.
func TestClientCancelEndsWait(t *testing.T) {
	srv, ports := replyServer(t, "udp4", "127.0.0.1:0", func(*dns.Msg) []*dns.Msg { return nil })
	c := &Client{Servers: []netip.AddrPort{srv}, Timeout: 1 << 40} // ~18 minutes: the test times out first
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-ports; cancel() }()
	if _, err := c.Query(ctx, "x.example.test", dns.TypeA); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestClientIPv6Server(t *testing.T) {
	srv, _ := replyServer(t, "udp6", "[::1]:0", func(q *dns.Msg) []*dns.Msg { return []*dns.Msg{answerA(q, q.Id, "192.0.2.5")} })
	c := &Client{Servers: []netip.AddrPort{srv}}
	if r, err := c.Query(context.Background(), "x.example.test", dns.TypeA); err != nil || len(r.Addrs) != 1 {
		t.Fatalf("%v, %v", r.Addrs, err)
	}
}
