package dnsproxy

import (
	"bytes"
	"context"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// A hit answered from the form read at store (hit.go) is byte for byte
// what the unpacking path sends for the same query at the same time: the
// client's ID and question, TTLs counted down (every record's: the
// authority's and the additional's too), chain TTLs capped to what the
// kernel keeps, the OPT left alone; and the same for a reply the form does
// not cover (an address the asker's rules refuse, a record enforce removes,
// a reply larger than the client's buffer).
func TestCacheHitFormSendsWhatUnpackingSends(t *testing.T) {
	web := webAllowlist(t, "*.example.com:443")
	other := otherAllowlist(t)
	other.Answer = true // dns_unlisted: answer
	r, who, clk, _ := cacheRig(t, web, other, nil)
	client, local := netip.MustParseAddrPort("127.0.0.1:40000"), netip.MustParseAddrPort("127.0.0.1:153")
	big := []string{}
	for i := 1; i <= 40; i++ {
		big = append(big, "big.example.com. 300 IN A 198.51.100."+strconv.Itoa(i))
	}
	for _, c := range []struct {
		name     string
		uid      uint32
		ask      string // as the client writes it
		qtype    uint16
		edns     uint16 // client's UDP size, 0: no EDNS
		proto    uint8
		answer   []string
		ns, ex   []string
		replyOPT bool
		age      time.Duration
		form     bool // the entry has a hit form
	}{
		{name: "A, mixed case, counted down", uid: uidWeb, ask: "Api.EXAMPLE.com.", qtype: dns.TypeA, proto: 17,
			answer: []string{"api.example.com. 300 IN A 192.0.2.10", "api.example.com. 300 IN A 192.0.2.11"},
			ns:     []string{"example.com. 3600 IN NS ns1.example.com."}, age: 7 * time.Second, form: true},
		{name: "CNAME chain past max_ttl, EDNS", uid: uidWeb, ask: "www.example.com.", qtype: dns.TypeA, edns: 1232, proto: 17,
			answer: []string{"www.example.com. 3000 IN CNAME cdn.example.net.", "cdn.example.net. 2000 IN A 192.0.2.20"},
			ns:     []string{"example.net. 900 IN NS ns.example.net."}, replyOPT: true, age: 61 * time.Second, form: true},
		{name: "AAAA over TCP", uid: uidWeb, ask: "v6.example.com.", qtype: dns.TypeAAAA, proto: 6,
			answer: []string{"v6.example.com. 120 IN AAAA 2001:db8::20"}, age: 100 * time.Second, form: true},
		{name: "unlisted, answered", uid: uidOther, ask: "Elsewhere.Example.ORG.", qtype: dns.TypeA, proto: 17,
			answer: []string{"elsewhere.example.org. 300 IN A 192.0.2.30"},
			ex:     []string{"ns.example.org. 300 IN A 192.0.2.53"}, age: 3 * time.Second},
		{name: "unlisted, answered, from the form", uid: uidOther, ask: "Other.Example.ORG.", qtype: dns.TypeA, proto: 17,
			answer: []string{"other.example.org. 300 IN A 192.0.2.31"},
			ns:     []string{"example.org. 900 IN NS ns.example.org."}, age: 4 * time.Second, form: true},
		{name: "a listed name, no address", uid: uidWeb, ask: "alias.example.com.", qtype: dns.TypeA, proto: 17,
			answer: []string{"alias.example.com. 300 IN CNAME gone.example.net."}, age: 5 * time.Second, form: true},
		{name: "an address the rules refuse", uid: uidWeb, ask: "mixed.example.com.", qtype: dns.TypeA, proto: 17,
			answer: []string{"mixed.example.com. 300 IN A 192.0.2.40", "mixed.example.com. 300 IN A 10.0.0.1"}, age: 2 * time.Second, form: true},
		{name: "an address record enforce removes", uid: uidWeb, ask: "glue.example.com.", qtype: dns.TypeA, proto: 17,
			answer: []string{"glue.example.com. 300 IN A 192.0.2.50"},
			ex:     []string{"ns.example.com. 300 IN A 192.0.2.53"}, age: 2 * time.Second},
		{name: "larger than the client's buffer", uid: uidWeb, ask: "big.example.com.", qtype: dns.TypeA, proto: 17,
			answer: big, age: 1 * time.Second, form: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			who.uid.Store(c.uid)
			q := new(dns.Msg)
			q.SetQuestion(c.ask, c.qtype)
			q.Id = 4242
			if c.edns > 0 {
				q.SetEdns0(c.edns, false)
			}
			raw, err := q.Pack()
			if err != nil {
				t.Fatal(err)
			}
			fq := upstreamQuery(q)
			m := new(dns.Msg)
			m.SetReply(fq)
			m.RecursionAvailable = true
			m.Answer, m.Ns, m.Extra = rrs(t, c.answer...), rrs(t, c.ns...), rrs(t, c.ex...)
			if c.replyOPT {
				m.SetEdns0(1232, false)
			}
			key := keyOf(fq)
			if key != keyOf(q) {
				t.Fatal("the key of the query is not the key of its upstream question")
			}
			r.p.cache.put(r.p.cache.generation(), key, m, time.Hour, clk.Now())
			clk.Add(c.age)
			e, _, ok := r.p.cache.get(key, clk.Now())
			if !ok {
				t.Fatal("not cached")
			}
			if (e.hit != nil) != c.form {
				t.Fatalf("the entry has a hit form: %v, want %v", e.hit != nil, c.form)
			}
			ctx := context.Background()
			fast := r.p.answer(ctx, c.proto, raw, client, local)
			hf := e.hit
			e.hit = nil // the unpacking path, the same instant, the kernel as the first answer left it
			slow := r.p.answer(ctx, c.proto, raw, client, local)
			e.hit = hf
			if fast == nil || slow == nil {
				t.Fatalf("no reply: %v %v", fast, slow)
			}
			if !bytes.Equal(fast, slow) {
				fm, sm := new(dns.Msg), new(dns.Msg)
				fm.Unpack(fast) //nolint:errcheck
				sm.Unpack(slow) //nolint:errcheck
				t.Fatalf("from the form:\n%v\nunpacked:\n%v", fm, sm)
			}
			rm := new(dns.Msg)
			if err := rm.Unpack(fast); err != nil || rm.Id != 4242 || rm.Question[0].Name != c.ask {
				t.Fatalf("reply %v (%v): want ID 4242 and the question as asked", rm, err)
			}
		})
	}
}
