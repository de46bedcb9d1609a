package dnsproxy

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/dnstest"
)

// rtb2Inline is the reader's own answer to raw (answerQuery inline, the
// opener told for the batch): the reply, or deferred.
func rtb2Inline(r *rig, uid uint32, raw []byte, client netip.AddrPort) ([]byte, bool) {
	id := Identity{UID: uid, OK: true}
	local := netip.MustParseAddrPort("127.0.0.1:153")
	if client.Addr().Is6() {
		local = netip.MustParseAddrPort("[::1]:153")
	}
	// The reader's buffer holds the previous batch's reply: dirty it.
	dst := bytes.Repeat([]byte{0xEE}, 700)[:0]
	out, seen, deferred := r.p.answerQuery(context.Background(), 17, raw, client, local, &id, dst, true)
	if !deferred {
		r.p.observe(seen)
	}
	return out, deferred
}

// Attack, on the reader's own answer of a cache hit (f7df337 on 217795b's
// form): it must be byte for byte what the worker's unpacking path sends
// for the same query at the same instant: the asker's ID and question (in
// its letters' case), the flags and OPT of the stored reply for this very
// key (RD, CD, EDNS, DO), every TTL counted down (to 1, not 0, not
// wrapped), chain TTLs capped to what the kernel keeps. Queries of the
// variants ask the stored form of another key: never served from it.
func TestRedteamRTB2InlineHitIsTheSlowReply(t *testing.T) {
	web := webAllowlist(t, "*.example.com:443")
	other := otherAllowlist(t)
	other.Answer = true // dns_unlisted: answer
	r, who, clk, tk := cacheRig(t, web, other, nil)
	v4, v6 := netip.MustParseAddrPort("127.0.0.1:40000"), netip.MustParseAddrPort("[::1]:40000")
	for _, c := range []struct {
		name        string
		uid         uint32
		ask         string
		qtype       uint16
		client      netip.AddrPort
		rd, cd, ad  bool
		edns        uint16
		do          bool
		answer, ns  []string
		replyOPT    bool
		ttl         time.Duration // the entry's life
		age         time.Duration
		variant     func(q *dns.Msg) // a query of another key, asked after
		wantSameKey bool
	}{
		{name: "0x20 case, ID", uid: uidWeb, ask: "ApI.eXaMpLe.CoM.", qtype: dns.TypeA, client: v4, rd: true,
			answer: []string{"api.example.com. 300 IN A 192.0.2.10", "api.example.com. 300 IN A 192.0.2.11"},
			ns:     []string{"example.com. 3600 IN NS ns1.example.com."}, ttl: 300 * time.Second, age: 7 * time.Second,
			variant: func(q *dns.Msg) { q.RecursionDesired = false }},
		{name: "EDNS DO CD", uid: uidWeb, ask: "dnssec.example.com.", qtype: dns.TypeA, client: v4, rd: true, cd: true, edns: 1232, do: true,
			answer: []string{"dnssec.example.com. 120 IN A 192.0.2.12"}, replyOPT: true, ttl: 120 * time.Second, age: 3 * time.Second,
			variant: func(q *dns.Msg) { q.Extra = nil }},
		{name: "AD without EDNS", uid: uidWeb, ask: "ad.example.com.", qtype: dns.TypeA, client: v4, rd: true, ad: true,
			answer: []string{"ad.example.com. 120 IN A 192.0.2.13"}, ttl: 120 * time.Second, age: 3 * time.Second,
			variant: func(q *dns.Msg) { q.AuthenticatedData = false; q.SetEdns0(4096, true) }},
		{name: "CNAME chain past max_ttl, one second left", uid: uidWeb, ask: "WWW.example.com.", qtype: dns.TypeA, client: v4, rd: true,
			answer: []string{"www.example.com. 3000 IN CNAME cdn.example.net.", "cdn.example.net. 20 IN A 192.0.2.20"},
			ttl:    20 * time.Second, age: 19 * time.Second,
			variant: func(q *dns.Msg) { q.CheckingDisabled = true }},
		{name: "AAAA to an IPv6 asker", uid: uidWeb, ask: "v6.Example.com.", qtype: dns.TypeAAAA, client: v6, rd: true,
			answer: []string{"v6.example.com. 120 IN AAAA 2001:db8::20"}, ttl: 120 * time.Second, age: 100 * time.Second,
			variant: func(q *dns.Msg) { q.Question[0].Qtype = dns.TypeA }},
		{name: "unlisted, answered", uid: uidOther, ask: "Other.Example.ORG.", qtype: dns.TypeA, client: v4, rd: true,
			answer: []string{"other.example.org. 300 IN A 192.0.2.31"}, ttl: 300 * time.Second, age: 4 * time.Second,
			variant: func(q *dns.Msg) { q.Question[0].Qclass = dns.ClassCHAOS }},
	} {
		t.Run(c.name, func(t *testing.T) {
			who.uid.Store(c.uid)
			mk := func() *dns.Msg {
				q := new(dns.Msg)
				q.SetQuestion(c.ask, c.qtype)
				q.Id = 0xBEEF
				q.RecursionDesired, q.CheckingDisabled, q.AuthenticatedData = c.rd, c.cd, c.ad
				if c.edns > 0 {
					q.SetEdns0(c.edns, c.do)
				}
				return q
			}
			q := mk()
			raw, err := q.Pack()
			if err != nil {
				t.Fatal(err)
			}
			fq := upstreamQuery(q)
			m := new(dns.Msg)
			m.SetReply(fq)
			m.RecursionAvailable = true
			m.AuthenticatedData = c.ad
			m.Answer, m.Ns = rrs(t, c.answer...), rrs(t, c.ns...)
			if c.replyOPT {
				m.SetEdns0(1232, c.do)
			}
			key := keyOf(q)
			r.p.cache.put(r.p.cache.generation(), key, m, c.ttl, clk.Now())
			// The first answer (a worker's) writes the elements.
			if first := r.p.answer(context.Background(), 17, raw, c.client, netip.MustParseAddrPort("127.0.0.1:153")); first == nil {
				t.Fatal("no first reply")
			}
			clk.Add(c.age)
			e, _, ok := r.p.cache.get(key, clk.Now())
			if !ok || e.hit == nil {
				t.Fatalf("no entry with a hit form (%v)", ok)
			}
			inline, deferred := rtb2Inline(r, c.uid, raw, c.client)
			if deferred {
				t.Fatal("control: the reader deferred a hit whose elements the kernel holds")
			}
			hf := e.hit
			e.hit = nil
			slow := r.p.answer(context.Background(), 17, raw, c.client, netip.MustParseAddrPort("127.0.0.1:153"))
			e.hit = hf
			if !bytes.Equal(inline, slow) {
				im, sm := new(dns.Msg), new(dns.Msg)
				im.Unpack(inline) //nolint:errcheck
				sm.Unpack(slow)   //nolint:errcheck
				t.Fatalf("the reader's answer:\n%v\nthe worker's unpacking path:\n%v", im, sm)
			}
			rm := new(dns.Msg)
			if err := rm.Unpack(inline); err != nil || rm.Id != 0xBEEF || rm.Question[0] != q.Question[0] {
				t.Fatalf("reply %v (%v): want ID 0xBEEF and the question as asked", rm, err)
			}
			for _, rr := range rm.Answer {
				if rr.Header().Ttl == 0 || rr.Header().Ttl > 1<<31 {
					t.Errorf("TTL %d handed", rr.Header().Ttl)
				}
				if a, ok := rrAddr(rr); ok && c.uid == uidWeb && !tk.holds(uidWeb, a.String(), clk.Now().Add(time.Duration(rr.Header().Ttl)*time.Second)) {
					if a.Is4() {
						t.Errorf("%s handed for %ds; the kernel does not hold it that long", a, rr.Header().Ttl)
					}
				}
			}
			// A variant of the query: another key. The reader must not
			// answer it from this entry.
			vq := mk()
			c.variant(vq)
			vraw, err := vq.Pack()
			if err != nil {
				t.Fatal(err)
			}
			if keyOf(vq) == key {
				t.Fatal("the variant has the same key")
			}
			if out, deferred := rtb2Inline(r, c.uid, vraw, c.client); !deferred {
				vm := new(dns.Msg)
				vm.Unpack(out) //nolint:errcheck
				if vm.Rcode == dns.RcodeSuccess && len(vm.Answer) > 0 {
					t.Errorf("the reader answered a query of another key from this entry:\n%v", vm)
				}
			}
		})
	}
}

// Attack: the asker lost the name (a reload), and another uid that still
// lists it fills the cache again; or the asker left dns: proxy. The
// reader must refuse, never answer from the entry. The element it had
// lapses (linger 0): its hit must go to a worker (the kernel written
// first), not be answered by the reader.
func TestRedteamRTB2InlineHitUnderTheAskersPolicyNow(t *testing.T) {
	web := webAllowlist(t, "api.example.com:443")
	other := otherAllowlist(t, "api.example.com:443")
	r, who, clk, _ := cacheRig(t, web, other, nil)
	r.up.Set("api.example.com", dnstest.Record{A: addrs("192.0.2.10"), TTL: 30})
	client := netip.MustParseAddrPort("127.0.0.1:40001")
	q := new(dns.Msg)
	q.SetQuestion("api.example.com.", dns.TypeA)
	raw, _ := q.Pack()
	ask := func(uid uint32) *dns.Msg {
		t.Helper()
		who.uid.Store(uid)
		out := r.p.answer(context.Background(), 17, raw, client, netip.MustParseAddrPort("127.0.0.1:153"))
		m := new(dns.Msg)
		if out == nil || m.Unpack(out) != nil {
			t.Fatal("no reply")
		}
		return m
	}
	inline := func(uid uint32) (*dns.Msg, bool) {
		t.Helper()
		out, deferred := rtb2Inline(r, uid, raw, client)
		if deferred {
			return nil, true
		}
		m := new(dns.Msg)
		if out == nil || m.Unpack(out) != nil {
			t.Fatal("no reply")
		}
		return m, false
	}
	if m := ask(uidWeb); m.Rcode != dns.RcodeSuccess {
		t.Fatalf("control: %v", m)
	}
	if m, deferred := inline(uidWeb); deferred || strings.Join(addrsOf(m), ",") != "192.0.2.10" {
		t.Fatalf("control: the reader's hit: %v (deferred %v)", m, deferred)
	}
	// The name leaves web's allowlist; other fills the cache again.
	r.p.SetPolicy(r.policyWith(webAllowlist(t, "else.example.com:443"), other))
	if m := ask(uidOther); m.Rcode != dns.RcodeSuccess {
		t.Fatalf("other: %v", m)
	}
	if m, deferred := inline(uidWeb); deferred || m.Rcode != dns.RcodeRefused || len(m.Answer) > 0 {
		t.Errorf("the reader answered web, whose allowlist lost the name: %v (deferred %v)", m, deferred)
	}
	// web leaves dns: proxy.
	r.p.SetPolicy(r.policyWith(other))
	ask(uidOther)
	if m, deferred := inline(uidWeb); deferred || m.Rcode != dns.RcodeRefused || len(m.Answer) > 0 {
		t.Errorf("the reader answered web, no longer a dns: proxy user: %v (deferred %v)", m, deferred)
	}
	// linger 0: the element lives as long as the TTL; near its end the
	// entry is alive (a second left), the element not long enough.
	pol := r.policyWith(web, other)
	pol.MinTTL, pol.Linger = time.Second, 0
	r.p.SetPolicy(pol)
	ask(uidWeb)
	clk.Add(29*time.Second + 600*time.Millisecond)
	if m, deferred := inline(uidWeb); !deferred {
		t.Errorf("the reader answered a hit whose element lapses in 0.4 s, TTL handed %v: %v", addrsOf(m), m)
	}
	if m := ask(uidWeb); m.Rcode != dns.RcodeSuccess {
		t.Fatalf("control: the worker's answer: %v", m)
	}
	if m, deferred := inline(uidWeb); deferred || m.Rcode != dns.RcodeSuccess {
		t.Errorf("control: after the worker renewed the element, the reader's hit: %v (deferred %v)", m, deferred)
	}
}
