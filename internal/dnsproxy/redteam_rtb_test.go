package dnsproxy

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/dnstest"
	"github.com/egressd/egressd/ruleset"
)

// Red team rtb (issue 24): the openers of one batched read's queries are
// told in one round trip (BatchIdentifier), and a cache hit patches the
// stored reply (hitForm). The attackers: a stranger (a uid in no
// allowlist) and a second dns: proxy uid whose queries are read in the
// same batch as the victim's.

const uidRTBStranger = 4999 // in no allowlist

// rtbProxy is a proxy with two dns: proxy uids (web and other) that both
// list api.example.com, whose clients are told by their port (portIdent,
// a BatchIdentifier), and a UDP socket the test fills before the proxy
// reads it: serve then answers what waits there, from one batched read.
type rtbProxy struct {
	t  *testing.T
	p  *Proxy
	k  *ruleset.Fake
	id *portIdent
	pc *net.UDPConn
}

func newRTBProxy(t *testing.T) *rtbProxy {
	return newRTBProxyWith(t, false, "192.0.2.10", "198.51.100.10")
}

// newRTBProxyWith is newRTBProxy whose web allowlist may open internal
// addresses (webPrivate) and whose name answers as.
func newRTBProxyWith(t *testing.T, webPrivate bool, as ...string) *rtbProxy {
	up, err := dnstest.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	up.Set("api.example.com", dnstest.Record{A: addrs(as...), TTL: 300})
	web, other := webAllowlist(t, "api.example.com:443"), otherAllowlist(t, "api.example.com:443")
	web.PrivateOK = webPrivate
	k := &ruleset.Fake{Plan: ruleset.Plan{Allowlists: []ruleset.AllowlistPlan{
		{Allowlist: "web", Subject: ruleset.UserSubject(uidWeb), Proxy: true},
		{Allowlist: "other", Subject: ruleset.UserSubject(uidOther), Proxy: true}}}}
	id := &portIdent{uids: map[uint16]uint32{}}
	p := New(Options{Kernel: k, Identify: id, Timeout: time.Second})
	p.SetPolicy(&Policy{ByUID: map[uint32]*Allowlist{uidWeb: web, uidOther: other}, Upstreams: []netip.AddrPort{up.Addr},
		MinTTL: 5 * time.Second, MaxTTL: 10 * time.Minute, Linger: 5 * time.Minute, MaxAddrs: 256})
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &rtbProxy{t: t, p: p, k: k, id: id, pc: pc}
	t.Cleanup(func() { r.pc.Close() })
	return r
}

// client opens a client socket of uid.
func (r *rtbProxy) client(uid uint32) *net.UDPConn {
	c, err := net.DialUDP("udp", nil, r.pc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close() })
	r.id.mu.Lock()
	r.id.uids[uint16(c.LocalAddr().(*net.UDPAddr).Port)] = uid
	r.id.mu.Unlock()
	return c
}

// serve answers what waits in the socket, then read reads each client's
// replies; done stops the proxy and opens the socket again (ServeUDP
// closes it when it stops).
func (r *rtbProxy) serve() (done func()) {
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); r.p.ServeUDP(ctx, r.pc) }() //nolint:errcheck
	return func() {
		addr := r.pc.LocalAddr().(*net.UDPAddr)
		cancel()
		<-stopped
		var err error
		if r.pc, err = net.ListenUDP("udp", addr); err != nil {
			r.t.Fatal(err)
		}
	}
}

func rtbSend(t *testing.T, c *net.UDPConn, b []byte) {
	t.Helper()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}

func rtbReadReply(t *testing.T, c *net.UDPConn) (*dns.Msg, []byte) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(3 * time.Second)) //nolint:errcheck
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	m := new(dns.Msg)
	if err != nil || m.Unpack(buf[:n]) != nil {
		t.Fatalf("no reply from the proxy: %v", err)
	}
	return m, buf[:n]
}

// rtbMixedCase writes name's letters in a case that depends on seed (DNS 0x20).
func rtbMixedCase(name string, seed int) string {
	b := []byte(name)
	for i := range b {
		if 'a' <= b[i] && b[i] <= 'z' && (i+seed)%3 == 0 {
			b[i] -= 'a' - 'A'
		}
	}
	return string(b)
}

// Attack: the attacker's datagrams that the proxy drops or answers with
// nothing (larger than any query, so cut by the read; a DNS response; bytes
// that are no DNS message) sit between the queries of three uids in one
// batched read, and every query of the second round is a cache hit
// (patched stored reply) asked with its own ID and its own case of the
// name. A dropped datagram that shifted the batch's identities by one
// would answer the stranger or refuse a listed uid; a hit that skipped the
// kernel write would hand other's client addresses its uid does not hold;
// a hit that leaked the stored reply's ID or question (the first asker's)
// would be visible in the reply's bytes. Control: the listed uids' queries
// are answered, each with both addresses, in the kernel for that uid.
func TestRedteamRTBBatchJunkAndHits(t *testing.T) {
	r := newRTBProxy(t)
	// Round 0: one web query fills the cache.
	warm := r.client(uidWeb)
	q := new(dns.Msg)
	q.SetQuestion("api.example.com.", dns.TypeA)
	q.Id = 7
	raw, _ := q.Pack()
	rtbSend(t, warm, raw)
	done := r.serve()
	if m, _ := rtbReadReply(t, warm); m.Rcode != dns.RcodeSuccess || len(addrsOf(m)) != 2 {
		t.Fatalf("warm query (control): %v", m)
	}
	done()
	if e, _, ok := r.p.cache.get(keyOf(q), time.Now()); !ok || e.hit == nil {
		t.Fatal("the warm answer is not in the cache with a hitForm: the hits below would not take the patched path")
	}
	if n := len(r.k.Proxy); n != 2 {
		t.Fatalf("after the warm query the kernel holds %d elements, want web's two", n)
	}
	// Round 1: eight clients, each junk then its query, in one read (16).
	uids := []uint32{uidRTBStranger, uidOther, uidWeb, uidOther, uidRTBStranger, uidWeb, uidOther, uidWeb}
	var cs []*net.UDPConn
	var qs []*dns.Msg
	for i, uid := range uids {
		c := r.client(uid)
		switch i % 3 {
		case 0:
			rtbSend(t, c, make([]byte, maxQuery+1)) // cut by the read: never in the batch
		case 1:
			resp := new(dns.Msg)
			resp.SetQuestion("api.example.com.", dns.TypeA)
			resp.Response, resp.Id = true, uint16(500+i)
			b, _ := resp.Pack()
			rtbSend(t, c, b) // in the batch, answered with nothing
		case 2:
			rtbSend(t, c, []byte{0xde, 0xad, 0xbe}) // in the batch, not a message
		}
		q := new(dns.Msg)
		q.SetQuestion(rtbMixedCase("api.example.com.", i), dns.TypeA)
		q.Id = uint16(1000 + i)
		raw, _ := q.Pack()
		rtbSend(t, c, raw)
		cs, qs = append(cs, c), append(qs, q)
	}
	done = r.serve()
	for i, c := range cs {
		m, wire := rtbReadReply(t, c)
		want, wantAddrs := dns.RcodeSuccess, "192.0.2.10,198.51.100.10"
		if uids[i] == uidRTBStranger {
			want, wantAddrs = dns.RcodeRefused, ""
		}
		if m.Rcode != want || strings.Join(addrsOf(m), ",") != wantAddrs {
			t.Errorf("client %d (uid %d): %s %v; want %s %q", i, uids[i], dns.RcodeToString[m.Rcode], addrsOf(m), dns.RcodeToString[want], wantAddrs)
		}
		qraw, _ := qs[i].Pack()
		if m.Id != qs[i].Id || len(wire) < len(qraw) || string(wire[12:len(qraw)]) != string(qraw[12:]) {
			t.Errorf("client %d (uid %d): reply ID %d, question %v; want ID %d and the question's bytes as asked (%s)",
				i, uids[i], m.Id, m.Question, qs[i].Id, qs[i].Question[0].Name)
		}
	}
	done()
	holds := map[uint32]map[string]bool{}
	for _, e := range r.k.Proxy {
		if holds[e.UID] == nil {
			holds[e.UID] = map[string]bool{}
		}
		holds[e.UID][e.Element.String()] = true
	}
	// other asked nothing before round 1: its two elements are its hits'.
	for _, uid := range []uint32{uidWeb, uidOther} {
		if len(holds[uid]) != 2 {
			t.Errorf("uid %d: the kernel holds %v for it, want both addresses", uid, holds[uid])
		}
	}
	if len(holds[uidRTBStranger]) != 0 {
		t.Errorf("the stranger's queries: the kernel holds %v for it", holds[uidRTBStranger])
	}
	r.id.mu.Lock()
	defer r.id.mu.Unlock()
	if r.id.batched < len(uids) {
		t.Fatalf("%d datagrams identified in batches, want at least %d: the test did not exercise the batch", r.id.batched, len(uids))
	}
}

// Attack: web may open internal addresses (private_ok) and fills the cache
// with an answer that holds one (10.0.0.5) next to a public one; other may
// not, and its hit is read in the same batch as web's. The stored reply
// has a hitForm (every address listed), but other's rules refuse one of
// its addresses: other must get the public address only, and the kernel
// must hold only that for other; web (control) gets both, in the kernel
// for web.
func TestRedteamRTBHitPrivateAcrossUIDs(t *testing.T) {
	r := newRTBProxyWith(t, true, "10.0.0.5", "192.0.2.10")
	warm := r.client(uidWeb)
	q := new(dns.Msg)
	q.SetQuestion("api.example.com.", dns.TypeA)
	raw, _ := q.Pack()
	rtbSend(t, warm, raw)
	done := r.serve()
	if m, _ := rtbReadReply(t, warm); strings.Join(addrsOf(m), ",") != "10.0.0.5,192.0.2.10" {
		t.Fatalf("warm query (control): %v", m)
	}
	done()
	if e, _, ok := r.p.cache.get(keyOf(q), time.Now()); !ok || e.hit == nil {
		t.Fatal("the warm answer is not in the cache with a hitForm")
	}
	uids := []uint32{uidOther, uidWeb, uidOther, uidWeb}
	var cs []*net.UDPConn
	for i, uid := range uids {
		c := r.client(uid)
		q := new(dns.Msg)
		q.SetQuestion(rtbMixedCase("api.example.com.", i), dns.TypeA)
		q.Id = uint16(2000 + i)
		raw, _ := q.Pack()
		rtbSend(t, c, raw)
		cs = append(cs, c)
	}
	done = r.serve()
	for i, c := range cs {
		m, _ := rtbReadReply(t, c)
		want := "10.0.0.5,192.0.2.10"
		if uids[i] == uidOther {
			want = "192.0.2.10"
		}
		if got := strings.Join(handedAddrs(m), ","); m.Id != uint16(2000+i) || got != want {
			t.Errorf("client %d (uid %d): ID %d, addresses %q; want %d, %q", i, uids[i], m.Id, got, 2000+i, want)
		}
	}
	done()
	for _, e := range r.k.Proxy {
		if e.UID == uidOther && strings.Contains(e.Element.String(), "10.0.0.5") {
			t.Errorf("the kernel holds %s for other, whose rules refuse it", e.Element)
		}
	}
	held := 0
	for _, e := range r.k.Proxy {
		if e.UID == uidOther {
			held++
		}
	}
	if held != 1 {
		t.Errorf("the kernel holds %d elements for other, want 1 (192.0.2.10)", held)
	}
}
