package dnsproxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/dnstest"
	"github.com/egressd/egressd/ruleset"
)

// BenchmarkProxyUDP is the proxy's own cost per answered query (a fake
// identifier and kernel; the upstream a dnstest server on loopback):
//
//	go test ./internal/dnsproxy -run '^$' -bench ProxyUDP -benchmem -cpuprofile /tmp/proxy.prof
func BenchmarkProxyUDP(b *testing.B) {
	t := &testing.T{}
	r := newRig(t, ident{uid: uidWeb, ok: true}, webAllowlist(t, "api.example.com:443"))
	defer r.cancel()
	r.up.Set("api.example.com", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, TTL: 3600})
	var failed atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
		q := new(dns.Msg)
		q.SetQuestion("api.example.com.", dns.TypeA)
		for pb.Next() {
			if m, _, err := c.Exchange(q, r.addr); err != nil || m.Rcode != dns.RcodeSuccess {
				failed.Add(1)
			}
		}
	})
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d queries failed", n)
	}
}

// BenchmarkSetPolicy is what a configuration change costs the proxy: every
// answer it holds judged by the new policy (65,536 answers of 8,192 names
// under 200 entries; one wildcard of 8 removed, so 1 element in 25 goes):
//
//	go test ./internal/dnsproxy -run '^$' -bench SetPolicy -benchmem
func BenchmarkSetPolicy(b *testing.B) {
	var raw []string
	for i := 0; i < 200; i++ {
		raw = append(raw, fmt.Sprintf("*.s%d.example.com:443", i))
	}
	entries := func(rs []string) []config.Entry {
		var out []config.Entry
		for _, r := range rs {
			e, err := config.ParseEntry(r)
			if err != nil {
				b.Fatal(err)
			}
			out = append(out, e)
		}
		return out
	}
	full := &Policy{ByUID: map[uint32]*Allowlist{uidWeb: {Name: "web", UID: uidWeb, Entries: entries(raw)}}, MaxAnswers: 1 << 20}
	narrow := &Policy{ByUID: map[uint32]*Allowlist{uidWeb: {Name: "web", UID: uidWeb, Entries: entries(raw[8:])}}, MaxAnswers: 1 << 20}
	fake := &ruleset.Fake{Plan: ruleset.Plan{Allowlists: []ruleset.AllowlistPlan{{Allowlist: "web", Subject: ruleset.UserSubject(uidWeb), Proxy: true}}}}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		w := newWriter(fake, time.Now, 1<<20)
		w.SetPolicy(full) //nolint:errcheck
		for n := 0; n < 8192; n++ {
			name := fmt.Sprintf("h%d.s%d.example.com", n, n%200)
			for j := 0; j < 8; j++ {
				a := netip.AddrFrom4([4]byte{10, byte(n >> 8), byte(n), byte(j)})
				w.set(elemKey{uidWeb, ruleset.ElementFor(config.TCP, netip.PrefixFrom(a, 32), 443, 443)}, time.Now().Add(time.Hour), name)
			}
		}
		b.StartTimer()
		if _, err := w.SetPolicy(narrow); err != nil {
			b.Fatal(err)
		}
	}
}

// benchAnswer is the proxy's answer path alone (no sockets of the client's:
// answer called directly; a fake identifier and kernel), the upstream a
// dnstest server on loopback, asked only on a miss.
func benchAnswer(b *testing.B, opt func(*Options)) {
	t := &testing.T{}
	r := newRigWith(t, ident{uid: uidWeb, ok: true}, func(o *Options) {
		o.Observe = nil // the rig's records every answer: not the proxy's cost
		if opt != nil {
			opt(o)
		}
	}, []*Allowlist{webAllowlist(t, "api.example.com:443")})
	defer r.cancel()
	r.up.Set("api.example.com", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, TTL: 3600})
	q := new(dns.Msg)
	q.SetQuestion("api.example.com.", dns.TypeA)
	raw, err := q.Pack()
	if err != nil {
		b.Fatal(err)
	}
	client, local := netip.MustParseAddrPort("127.0.0.1:40000"), netip.MustParseAddrPort("127.0.0.1:153")
	ctx := context.Background()
	if out := r.p.answer(ctx, 17, raw, client, local); out == nil {
		b.Fatal("no answer")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if out := r.p.answer(ctx, 17, raw, client, local); out == nil {
			b.Fatal("no answer")
		}
	}
}

// BenchmarkAnswerCacheHit is a repeated name answered from the cache (its
// element held already: no kernel write):
//
//	go test ./internal/dnsproxy -run '^$' -bench 'Answer' -benchmem
func BenchmarkAnswerCacheHit(b *testing.B) { benchAnswer(b, nil) }

// BenchmarkAnswerCacheOff is the same with the cache off: every answer asks
// the upstream (one UDP exchange on loopback).
func BenchmarkAnswerCacheOff(b *testing.B) {
	benchAnswer(b, func(o *Options) { o.CacheEntries = -1 })
}

// BenchmarkProxyUDPBatch is one client that sends 16 queries back to back,
// then reads the 16 answers: the proxy reads them in batches (recvmmsg).
func BenchmarkProxyUDPBatch(b *testing.B) {
	t := &testing.T{}
	r := newRig(t, ident{uid: uidWeb, ok: true}, webAllowlist(t, "api.example.com:443"))
	defer r.cancel()
	r.up.Set("api.example.com", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, TTL: 3600})
	c, err := net.Dial("udp", r.addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	q := new(dns.Msg)
	q.SetQuestion("api.example.com.", dns.TypeA)
	raw, err := q.Pack()
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1500)
	const burst = 16
	b.ResetTimer()
	for i := 0; i < b.N; i += burst {
		for j := 0; j < burst; j++ {
			if _, err := c.Write(raw); err != nil {
				b.Fatal(err)
			}
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second)) //nolint:errcheck
		for j := 0; j < burst; j++ {
			if _, err := c.Read(buf); err != nil {
				b.Fatal(err)
			}
		}
	}
}
