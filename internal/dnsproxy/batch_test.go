package dnsproxy

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/dnstest"
	"github.com/egressd/egressd/ruleset"
)

// Queries read in one batch (recvmmsg) are each answered, to its own
// client, under its own ID; a datagram larger than any query is dropped
// and the next query is answered.
func TestBatchedReads(t *testing.T) {
	r := newRig(t, ident{uid: uidWeb, ok: true}, webAllowlist(t, "*.example.com:443"))
	r.up.Set("*.example.com", dnstest.Record{A: addrs("192.0.2.10"), TTL: 300})
	const n = 64
	var wg sync.WaitGroup
	errs := make(chan string, n)
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			q := new(dns.Msg)
			q.SetQuestion(dns.Fqdn(strings.Repeat("x", i%10+1)+".example.com"), dns.TypeA)
			q.Id = uint16(1000 + i)
			<-start
			m, _, err := (&dns.Client{Net: "udp", Timeout: 3 * time.Second}).Exchange(q, r.addr)
			if err != nil || m.Id != q.Id || m.Question[0].Name != q.Question[0].Name || strings.Join(addrsOf(m), ",") != "192.0.2.10" {
				errs <- "query " + q.Question[0].Name + ": " + m.String()
			}
		}(i)
	}
	close(start)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	c, err := net.Dial("udp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(make([]byte, maxQuery+1)); err != nil {
		t.Fatal(err)
	}
	q := new(dns.Msg)
	q.SetQuestion("after.example.com.", dns.TypeA)
	m, _, err := (&dns.Client{Net: "udp", Timeout: 3 * time.Second}).ExchangeWithConn(q, &dns.Conn{Conn: c})
	if err != nil || strings.Join(addrsOf(m), ",") != "192.0.2.10" {
		t.Fatalf("the query after an oversized datagram: %v %v", m, err)
	}
}

// portIdent is a BatchIdentifier that knows each client by its port, and
// counts the queries it was asked for in batches of more than one.
type portIdent struct {
	mu      sync.Mutex
	uids    map[uint16]uint32
	batched int
}

// dialAs opens a client socket to pc whose queries p says uid sent.
func (p *portIdent) dialAs(t *testing.T, pc *net.UDPConn, uid uint32) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	p.mu.Lock()
	p.uids[uint16(c.LocalAddr().(*net.UDPAddr).Port)] = uid
	p.mu.Unlock()
	return c
}

// serveUDP runs px on pc until the returned stop is called (it waits for
// ServeUDP to return).
func serveUDP(px *Proxy, pc *net.UDPConn) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); px.ServeUDP(ctx, pc) }() //nolint:errcheck
	return func() { cancel(); <-done }
}

func (p *portIdent) Opener(_ uint8, client, _ netip.AddrPort) (uint32, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	uid, ok := p.uids[client.Port()]
	return uid, ok, nil
}

func (p *portIdent) Openers(local netip.AddrPort, clients []netip.AddrPort, out []Identity) {
	for i, c := range clients {
		uid, ok, err := p.Opener(17, c, local)
		out[i] = Identity{UID: uid, OK: ok, Err: err}
	}
	p.mu.Lock()
	p.batched += len(clients)
	p.mu.Unlock()
}

// Attack: queries of two uids read in one batch, their openers told in one
// round trip (BatchIdentifier). Each query is answered as its own uid's:
// the listed uid's with the address (in the kernel for it), the other's
// REFUSED; an identity given to the wrong query of the batch would answer
// the stranger, or refuse the listed uid.
func TestBatchIdentitiesStayWithTheirQueries(t *testing.T) {
	for _, ip := range []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback} { // the reader's replies leave by sendmmsg on each family's socket
		t.Run(ip.String(), func(t *testing.T) { batchIdentities(t, ip) })
	}
}

func batchIdentities(t *testing.T, ip net.IP) {
	up, err := dnstest.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	up.Set("api.example.com", dnstest.Record{A: addrs("192.0.2.10"), TTL: 300})
	web := webAllowlist(t, "api.example.com:443")
	k := &ruleset.Fake{Plan: ruleset.Plan{Allowlists: []ruleset.AllowlistPlan{{Allowlist: "web", Subject: ruleset.UserSubject(uidWeb), Proxy: true}}}}
	id := &portIdent{uids: map[uint16]uint32{}}
	p := New(Options{Kernel: k, Identify: id, Timeout: time.Second})
	p.SetPolicy(&Policy{ByUID: map[uint32]*Allowlist{uidWeb: web}, Upstreams: []netip.AddrPort{up.Addr},
		MinTTL: 5 * time.Second, MaxTTL: 10 * time.Minute, Linger: 5 * time.Minute, MaxAddrs: 256})
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
	if err != nil {
		if ip.To4() == nil {
			t.Skipf("no IPv6 loopback: %v", err)
		}
		t.Fatal(err)
	}
	// The clients' queries wait in the socket before the proxy reads:
	// its first read takes them in one batch.
	const n = 12
	var clients []*net.UDPConn
	for i := 0; i < n; i++ {
		c, err := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		uid := uint32(uidWeb)
		if i%2 == 1 {
			uid = 4999 // in no allowlist
		}
		id.uids[uint16(c.LocalAddr().(*net.UDPAddr).Port)] = uid
		clients = append(clients, c)
	}
	for round := 0; round < 2; round++ { // the second from the cache
		for i, c := range clients {
			q := new(dns.Msg)
			q.SetQuestion("api.example.com.", dns.TypeA)
			q.Id = uint16(100*round + i)
			raw, _ := q.Pack()
			if _, err := c.Write(raw); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); p.ServeUDP(ctx, pc) }() //nolint:errcheck
		for i, c := range clients {
			c.SetReadDeadline(time.Now().Add(3 * time.Second)) //nolint:errcheck
			buf := make([]byte, 1500)
			m := new(dns.Msg)
			nr, err := c.Read(buf)
			if err != nil || m.Unpack(buf[:nr]) != nil {
				t.Fatalf("round %d, client %d: no reply: %v", round, i, err)
			}
			want, wantAddrs := dns.RcodeSuccess, "192.0.2.10"
			if i%2 == 1 {
				want, wantAddrs = dns.RcodeRefused, ""
			}
			if m.Id != uint16(100*round+i) || m.Rcode != want || strings.Join(addrsOf(m), ",") != wantAddrs {
				t.Errorf("round %d, client %d (uid %d): %s, addresses %v; want %s %q", round, i, id.uids[uint16(c.LocalAddr().(*net.UDPAddr).Port)],
					dns.RcodeToString[m.Rcode], addrsOf(m), dns.RcodeToString[want], wantAddrs)
			}
		}
		// ServeUDP closes pc when it stops: a new socket on the same port.
		addr := pc.LocalAddr().(*net.UDPAddr)
		cancel()
		<-done
		if pc, err = net.ListenUDP("udp", addr); err != nil {
			t.Fatal(err)
		}
	}
	pc.Close()
	id.mu.Lock()
	defer id.mu.Unlock()
	if id.batched < n {
		t.Fatalf("%d queries identified in batches, want at least %d: the test did not exercise the batch", id.batched, n)
	}
}

// Attack, on the reader's own answers (answerQuery inline): uid A's query
// fills the cache and A's element is written; then uid B, whose allowlist
// lists the same name, asks in a batch with A. A's hit is answered by the
// reader (its element is held); B's hit must not be: the kernel does not
// hold B's element, and B's answer leaves only once it does.
func TestBatchInlineHitWritesAnotherUIDsElementFirst(t *testing.T) {
	up, err := dnstest.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	up.Set("api.example.com", dnstest.Record{A: addrs("192.0.2.10"), TTL: 300})
	web, other := webAllowlist(t, "api.example.com:443"), otherAllowlist(t, "api.example.com:443")
	k := &ruleset.Fake{Plan: ruleset.Plan{Allowlists: []ruleset.AllowlistPlan{
		{Allowlist: "web", Subject: ruleset.UserSubject(uidWeb), Proxy: true},
		{Allowlist: "other", Subject: ruleset.UserSubject(uidOther), Proxy: true}}}}
	id := &portIdent{uids: map[uint16]uint32{}}
	clk := newTestClock()
	p := New(Options{Kernel: k, Identify: id, Timeout: time.Second, Now: clk.Now})
	// The element lives as long as the TTL (linger 0): a hit near its end
	// must renew it.
	p.SetPolicy(&Policy{ByUID: map[uint32]*Allowlist{uidWeb: web, uidOther: other}, Upstreams: []netip.AddrPort{up.Addr},
		MinTTL: time.Second, MaxTTL: 10 * time.Minute, MaxAddrs: 256})
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer serveUDP(p, pc)()
	dial := func(uid uint32) *net.UDPConn { return id.dialAs(t, pc, uid) }
	ask := func(c *net.UDPConn) *dns.Msg {
		q := new(dns.Msg)
		q.SetQuestion("api.example.com.", dns.TypeA)
		raw, _ := q.Pack()
		if _, err := c.Write(raw); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(3 * time.Second)) //nolint:errcheck
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		m := new(dns.Msg)
		if err != nil || m.Unpack(buf[:n]) != nil {
			t.Fatalf("no reply: %v", err)
		}
		return m
	}
	holds := func(uid uint32) bool {
		es, err := k.ReadProxy()
		if err != nil {
			t.Fatal(err)
		}
		for _, pe := range es {
			if pe.UID == uid && pe.Element.AddrFrom == netip.MustParseAddr("192.0.2.10") {
				return true
			}
		}
		return false
	}
	a := dial(uidWeb)
	if m := ask(a); strings.Join(addrsOf(m), ",") != "192.0.2.10" {
		t.Fatalf("uid A: %v", m)
	}
	for i := 0; i < 20; i++ {
		if m := ask(a); strings.Join(addrsOf(m), ",") != "192.0.2.10" { // hits the reader answers
			t.Fatalf("uid A, again: %v", m)
		}
	}
	writes := k.Calls(ruleset.FakeAddProxy)
	b := dial(uidOther)
	if holds(uidOther) {
		t.Fatal("the kernel holds B's element before B asked")
	}
	m := ask(b)
	if strings.Join(addrsOf(m), ",") != "192.0.2.10" {
		t.Fatalf("uid B: %v", m)
	}
	if !holds(uidOther) {
		t.Fatal("uid B was answered 192.0.2.10 from the cache; the kernel does not hold it for B")
	}
	if n := k.Calls(ruleset.FakeAddProxy); n != writes+1 {
		t.Errorf("%d kernel writes for B's answer, want 1", n-writes)
	}
	if n := up.QueriesFor("api.example.com"); n != 1 {
		t.Errorf("the upstream was asked %d times, want 1", n)
	}
	// A's element about to lapse (written for 300 s, 299.5 s ago; the
	// answer hands 1 s): the hit writes it again before it answers.
	clk.Add(299*time.Second + 500*time.Millisecond)
	writes = k.Calls(ruleset.FakeAddProxy)
	if m := ask(a); strings.Join(addrsOf(m), ",") != "192.0.2.10" {
		t.Fatalf("uid A, near the end: %v", m)
	}
	if n := k.Calls(ruleset.FakeAddProxy); n != writes+1 {
		t.Errorf("%d kernel writes for A's hit on a lapsing element, want 1", n-writes)
	}
	if n := up.QueriesFor("api.example.com"); n != 1 {
		t.Errorf("the upstream was asked %d times, want 1 (the hit from the cache)", n)
	}
	id.mu.Lock()
	defer id.mu.Unlock()
	if id.batched < 23 {
		t.Errorf("%d queries identified by the batch identifier, want 23: the reader's path was not taken", id.batched)
	}
}
