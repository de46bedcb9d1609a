package resolver

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dnstest"
	"github.com/miekg/dns"
)

// QueryBoth gives what two Query calls give, for every kind of answer.
func TestClientQueryBothMatchesQuery(t *testing.T) {
	s := startServer(t)
	s.Set("www.example.test", dnstest.Record{A: addrs("192.0.2.1", "192.0.2.2"), AAAA: addrs("2001:db8::1"), TTL: 300})
	s.Set("alias.example.test", dnstest.Record{CNAME: "www.example.test", TTL: 60})
	s.Set("v4only.example.test", dnstest.Record{A: addrs("192.0.2.3"), TTL: 60})
	s.Set("broken.example.test", dnstest.Record{Rcode: dns.RcodeServerFailure})
	s.Set("loop1.example.test", dnstest.Record{CNAME: "loop2.example.test", TTL: 60})
	s.Set("loop2.example.test", dnstest.Record{CNAME: "loop1.example.test", TTL: 60})
	s.Set("out.example.test", dnstest.Record{CNAME: "www.example.test", TTL: 300})
	s.SetMangle(func(m *dns.Msg) {
		if m.Question[0].Name == "out.example.test." {
			m.Answer = m.Answer[:1] // the chain leaves the answer
		}
	})
	c := &Client{Servers: []netip.AddrPort{s.Addr}, Timeout: time.Second}
	ctx := context.Background()
	for _, name := range []string{"WWW.example.test", "alias.example.test", "v4only.example.test", "nosuch.example.test",
		"broken.example.test", "loop1.example.test", "out.example.test"} {
		got := c.QueryBoth(ctx, name)
		for i, typ := range bothTypes {
			res, err := c.Query(ctx, name, typ)
			if !reflect.DeepEqual(got[i].Res, res) || (got[i].Err == nil) != (err == nil) {
				t.Errorf("%s %s: QueryBoth %+v, %v; Query %+v, %v", dns.TypeToString[typ], name, got[i].Res, got[i].Err, res, err)
			}
			if err != nil && got[i].Err.Error() != err.Error() {
				t.Errorf("%s %s: QueryBoth says %q, Query %q", dns.TypeToString[typ], name, got[i].Err, err)
			}
		}
	}
}

// rawServer answers each UDP query with what handle writes; it records
// every query's source port, ID and type.
type rawServer struct {
	pc   net.PacketConn
	addr netip.AddrPort
	mu   sync.Mutex
	seen []rawQuery
}

type rawQuery struct {
	port uint16
	id   uint16
	typ  uint16
}

func startRaw(t *testing.T, handle func(pc net.PacketConn, from net.Addr, q *dns.Msg)) *rawServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{pc: pc, addr: pc.LocalAddr().(*net.UDPAddr).AddrPort()}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil || len(q.Question) != 1 {
				continue
			}
			s.mu.Lock()
			s.seen = append(s.seen, rawQuery{uint16(from.(*net.UDPAddr).Port), q.Id, q.Question[0].Qtype})
			s.mu.Unlock()
			handle(pc, from, q)
		}
	}()
	return s
}

func (s *rawServer) queries() []rawQuery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]rawQuery(nil), s.seen...)
}

// reply is the answer to q: one address of q's type.
func reply(q *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(q)
	if q.Question[0].Qtype == dns.TypeA {
		m.Answer = append(m.Answer, rrA(q.Question[0].Name, "192.0.2.10", 60))
	} else {
		m.Answer = append(m.Answer, &dns.AAAA{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: 60},
			AAAA: netip.MustParseAddr("2001:db8::10").AsSlice()})
	}
	return m
}

func send(t *testing.T, pc net.PacketConn, to net.Addr, m *dns.Msg) {
	b, err := m.Pack()
	if err == nil {
		_, err = pc.WriteTo(b, to)
	}
	if err != nil {
		t.Error(err)
	}
}

// The two queries of a lookup share one socket, each with its own ID; each
// lookup has its own socket, so its source port is the kernel's fresh
// random pick, not one a forger saw before.
func TestQueryBothOneSocketPerLookup(t *testing.T) {
	s := startRaw(t, func(pc net.PacketConn, from net.Addr, q *dns.Msg) { send(t, pc, from, reply(q)) })
	c := &Client{Servers: []netip.AddrPort{s.addr}, Timeout: 2 * time.Second}
	const lookups = 20
	for range lookups {
		r := c.QueryBoth(context.Background(), "x.example.test")
		if r[0].Err != nil || r[1].Err != nil || len(r[0].Res.Addrs) != 1 || !r[1].Res.Addrs[0].Is6() {
			t.Fatalf("%+v", r)
		}
	}
	qs := s.queries()
	if len(qs) != 2*lookups {
		t.Fatalf("%d queries, want %d", len(qs), 2*lookups)
	}
	ports := map[uint16]bool{}
	for i := 0; i < len(qs); i += 2 {
		a, b := qs[i], qs[i+1]
		if a.port != b.port || a.id == b.id || a.typ == b.typ {
			t.Errorf("lookup %d: %+v and %+v: want one port, two IDs, both types", i/2, a, b)
		}
		ports[a.port] = true
	}
	// Random ephemeral ports collide now and then; a reused socket would
	// show one port.
	if len(ports) < lookups-3 {
		t.Errorf("%d lookups used %d source ports", lookups, len(ports))
	}
}

// The attack: an answer sent with the other query's ID (the forger saw or
// guessed one ID of the pair and answers the other question with it). A
// reply counts only for the query whose ID and question it carries: both
// crossed replies are refused; the control (straight replies) is taken.
func TestQueryBothRefusesCrossedReplies(t *testing.T) {
	var mu sync.Mutex
	var held *dns.Msg
	cross := true
	s := startRaw(t, func(pc net.PacketConn, from net.Addr, q *dns.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if !cross {
			send(t, pc, from, reply(q))
			return
		}
		if held == nil {
			held = q
			return
		}
		a, b := reply(held), reply(q)
		a.Id, b.Id = b.Id, a.Id
		send(t, pc, from, a)
		send(t, pc, from, b)
		held = nil
	})
	c := &Client{Servers: []netip.AddrPort{s.addr}, Timeout: time.Second}
	r := c.QueryBoth(context.Background(), "x.example.test")
	for i := range r {
		if r[i].Err == nil || len(r[i].Res.Addrs) > 0 {
			t.Errorf("%s took a reply to the other question: %+v, %v", dns.TypeToString[bothTypes[i]], r[i].Res, r[i].Err)
		}
	}
	mu.Lock()
	cross = false
	mu.Unlock()
	r = c.QueryBoth(context.Background(), "x.example.test")
	if r[0].Err != nil || r[1].Err != nil || !r[0].Res.Addrs[0].Is4() || !r[1].Res.Addrs[0].Is6() {
		t.Errorf("control: %+v", r)
	}
}

// A datagram with neither query's ID is ignored (a blind guess, or a late
// reply to an earlier socket), and the real replies are still taken.
func TestQueryBothIgnoresForeignIDs(t *testing.T) {
	s := startRaw(t, func(pc net.PacketConn, from net.Addr, q *dns.Msg) {
		forged := reply(q)
		forged.Id = q.Id ^ 0x5555
		forged.Answer = nil
		forged.Rcode = dns.RcodeNameError
		send(t, pc, from, forged)
		send(t, pc, from, reply(q))
	})
	c := &Client{Servers: []netip.AddrPort{s.addr}, Timeout: time.Second}
	r := c.QueryBoth(context.Background(), "x.example.test")
	if r[0].Err != nil || r[1].Err != nil || r[0].Res.Negative || r[1].Res.Negative {
		t.Fatalf("%+v", r)
	}
}

// What one resolver fails to answer for one type is asked of the next,
// for that type alone; what it answered is kept.
func TestQueryBothFailsOverPerType(t *testing.T) {
	bad := startRaw(t, func(pc net.PacketConn, from net.Addr, q *dns.Msg) {
		m := reply(q)
		if q.Question[0].Qtype == dns.TypeAAAA {
			m.Answer, m.Rcode = nil, dns.RcodeRefused
		}
		send(t, pc, from, m)
	})
	good := startRaw(t, func(pc net.PacketConn, from net.Addr, q *dns.Msg) { send(t, pc, from, reply(q)) })
	c := &Client{Servers: []netip.AddrPort{bad.addr, good.addr}, Timeout: time.Second}
	r := c.QueryBoth(context.Background(), "x.example.test")
	if r[0].Err != nil || r[1].Err != nil || len(r[1].Res.Addrs) != 1 {
		t.Fatalf("%+v", r)
	}
	if qs := good.queries(); len(qs) != 1 || qs[0].typ != dns.TypeAAAA {
		t.Errorf("the second resolver was asked %+v, want AAAA only", qs)
	}
	// Nothing answers: both fail, with each resolver's reason.
	dead := startRaw(t, func(net.PacketConn, net.Addr, *dns.Msg) {})
	c = &Client{Servers: []netip.AddrPort{dead.addr, bad.addr}, Timeout: 200 * time.Millisecond}
	r = c.QueryBoth(context.Background(), "x.example.test")
	var rc *RcodeError
	if r[0].Err != nil || r[1].Err == nil || !errors.As(r[1].Err, &rc) || !errors.Is(r[1].Err, os.ErrDeadlineExceeded) {
		t.Errorf("A from the second resolver, AAAA failing with both reasons: %+v", r)
	}
}

// Cancelling ends the wait for replies.
func TestQueryBothCancel(t *testing.T) {
	dead := startRaw(t, func(net.PacketConn, net.Addr, *dns.Msg) {})
	c := &Client{Servers: []netip.AddrPort{dead.addr}, Timeout: time.Minute}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for len(dead.queries()) < 2 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	r := c.QueryBoth(ctx, "x.example.test")
	for i := range r {
		if !errors.Is(r[i].Err, context.Canceled) {
			t.Errorf("%s: %v, want context.Canceled", dns.TypeToString[bothTypes[i]], r[i].Err)
		}
	}
}

// A name in the hosts file is answered from it for both types; others go
// to DNS together.
func TestHostsFirstQueryBoth(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(path, []byte("10.1.2.3 db.example\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := NewHosts(path)
	if err != nil {
		t.Fatal(err)
	}
	s := startRaw(t, func(pc net.PacketConn, from net.Addr, q *dns.Msg) { send(t, pc, from, reply(q)) })
	q := &HostsFirst{Hosts: h, Next: &Client{Servers: []netip.AddrPort{s.addr}, Timeout: time.Second}}
	r := q.QueryBoth(context.Background(), "db.example")
	if r[0].Err != nil || r[0].Res.Source != SourceHosts || !reflect.DeepEqual(r[0].Res.Addrs, addrs("10.1.2.3")) ||
		r[1].Err != nil || r[1].Res.Source != SourceHosts || !r[1].Res.Negative || len(s.queries()) != 0 {
		t.Errorf("hosts name: %+v (%d DNS queries)", r, len(s.queries()))
	}
	r = q.QueryBoth(context.Background(), "api.example")
	if r[0].Err != nil || r[0].Res.Source != SourceDNS || r[1].Res.Source != SourceDNS || len(s.queries()) != 2 {
		t.Errorf("other name: %+v (%d DNS queries)", r, len(s.queries()))
	}
}

// The replies that are in before a lookup waits are read without the
// poller, under the same rules: with the server's datagrams all queued
// before the first read (before each real reply, a forged NXDOMAIN with
// another ID), the forged ones are ignored and the real ones taken; the
// control takes straight replies the same way.
func TestQueryBothEarlyRepliesSameRules(t *testing.T) {
	sent := make(chan struct{}, 1)
	var mu sync.Mutex
	attack := true
	s := startRaw(t, func(pc net.PacketConn, from net.Addr, q *dns.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if attack {
			forged := reply(q)
			forged.Id ^= 0x5555
			forged.Answer, forged.Rcode = nil, dns.RcodeNameError
			send(t, pc, from, forged)
		}
		send(t, pc, from, reply(q))
		if q.Question[0].Qtype == dns.TypeAAAA {
			sent <- struct{}{}
		}
	})
	var early int
	afterSend = func() {
		select {
		case <-sent: // every datagram is in the socket's queue (loopback)
			early++
		case <-time.After(5 * time.Second):
		}
	}
	t.Cleanup(func() { afterSend = nil })
	c := &Client{Servers: []netip.AddrPort{s.addr}, Timeout: 2 * time.Second}
	for _, a := range []bool{true, false} {
		mu.Lock()
		attack = a
		mu.Unlock()
		r := c.QueryBoth(context.Background(), "x.example.test")
		if r[0].Err != nil || r[1].Err != nil || len(r[0].Res.Addrs) != 1 || !r[0].Res.Addrs[0].Is4() || len(r[1].Res.Addrs) != 1 || !r[1].Res.Addrs[0].Is6() {
			t.Fatalf("attack %v: %+v", a, r)
		}
	}
	if early != 2 {
		t.Fatalf("%d of 2 lookups had their replies queued before the first read", early)
	}
}
