package resolver

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dnstest"
	"github.com/miekg/dns"
)

// BenchmarkQuery measures one lookup against an in-process server on loopback.
// Run: go test ./resolver -run XXX -bench Query
func BenchmarkQuery(b *testing.B) {
	s, err := dnstest.Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	s.Set("x.bench.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, TTL: 60})
	c := &Client{Servers: []netip.AddrPort{s.Addr}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Query(context.Background(), "x.bench.test", dns.TypeA); err != nil {
				b.Error(err)
			}
		}
	})
}

// BenchmarkQueryFanOut is what a cold apply does 20,000 times at 10,000
// names: lookups 64 at a time, each under its own timeout (policy.Query).
// Run: go test ./resolver -run XXX -bench QueryFanOut -benchmem
func BenchmarkQueryFanOut(b *testing.B) {
	s, err := dnstest.Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	s.Set("x.bench.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, TTL: 60})
	c := &Client{Servers: []netip.AddrPort{s.Addr}}
	round, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ReportAllocs()
	b.SetParallelism(32) // 64 in flight on 2 CPUs
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ctx, cancel := context.WithTimeout(round, 10*time.Second)
			if _, err := c.Query(ctx, "x.bench.test", dns.TypeA); err != nil {
				b.Error(err)
			}
			cancel()
		}
	})
}

// BenchmarkCacheObserve10k measures the cache's bookkeeping for 10,000 names.
func BenchmarkCacheObserve10k(b *testing.B) {
	now := time.Now()
	c := NewCache(Policy{MinTTL: time.Second, MaxTTL: time.Hour, Linger: time.Minute, StaleGrace: time.Hour, MaxAddrs: 256}, func() time.Time { return now })
	names := map[string]bool{}
	for i := 0; i < 10000; i++ {
		names[fmt.Sprintf("n%d.test", i)] = false
	}
	c.Sync(names)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for n := range names {
			c.Observe(Key{n, dns.TypeA}, Result{Addrs: []netip.Addr{netip.AddrFrom4([4]byte{203, 0, 113, byte(i)})}, TTL: 60 * time.Second}, nil)
		}
		c.NextEvent()
	}
}

// BenchmarkReadReplyAdmit is what reading one answer costs (the DNS proxy
// does it for every answered query): a CNAME and 8 A records, read and
// admitted under the policy.
// Run: go test ./resolver -run XXX -bench ReadReplyAdmit -benchmem
func BenchmarkReadReplyAdmit(b *testing.B) {
	m := new(dns.Msg)
	m.SetQuestion("www.example.test.", dns.TypeA)
	m.Answer = append(m.Answer, rrCNAME("www.example.test.", "edge.example.net.", 300))
	for i := 1; i <= 8; i++ {
		m.Answer = append(m.Answer, rrA("edge.example.net.", fmt.Sprintf("198.51.100.%d", i), 60))
	}
	p := Policy{MinTTL: 5 * time.Second, MaxTTL: 10 * time.Minute, MaxAddrs: 256}
	b.ReportAllocs()
	for b.Loop() {
		res, _, err := ReadReply(m, "www.example.test.", dns.TypeA, 0)
		if err != nil {
			b.Fatal(err)
		}
		if addrs, _, _ := p.Admit(res, false); len(addrs) != 8 {
			b.Fatal(addrs)
		}
	}
}

// BenchmarkReadReplyLargest is the most an attacker who controls a name's
// answers can make one reply cost to read: a TCP reply of 64 KiB, a chain
// of 8 CNAMEs, each name also owning a CNAME to a second branch, and 3,000
// A records at the end of the chain, of which the cap keeps 256.
// Run: go test ./resolver -run XXX -bench ReadReplyLargest -benchmem
func BenchmarkReadReplyLargest(b *testing.B) {
	m := new(dns.Msg)
	m.SetQuestion("www.example.test.", dns.TypeA)
	prev := "www.example.test."
	for i := 1; i <= DefaultMaxChain; i++ {
		next := fmt.Sprintf("c%d.example.net.", i)
		m.Answer = append(m.Answer, rrCNAME(prev, next, 300), rrCNAME(prev, "branch."+next, 300))
		prev = next
	}
	for i := 0; i < 3000; i++ {
		m.Answer = append(m.Answer, rrA(prev, fmt.Sprintf("198.51.%d.%d", 100+i/256, i%256), 60))
	}
	m.Compress = true // as a resolver sends it
	if out, err := m.Pack(); err != nil || len(out) > dns.MaxMsgSize {
		b.Fatalf("%d bytes, %v", len(out), err)
	}
	p := Policy{MinTTL: 5 * time.Second, MaxTTL: 10 * time.Minute, MaxAddrs: 256}
	b.ReportAllocs()
	for b.Loop() {
		res, _, err := ReadReply(m, "www.example.test.", dns.TypeA, 0)
		if err != nil {
			b.Fatal(err)
		}
		if addrs, _, _ := p.Admit(res, false); len(addrs) != 256 {
			b.Fatal(len(addrs))
		}
	}
}

// BenchmarkRefreshName is one name's refresh, A and AAAA, as the daemon
// asks them, against an in-process server on loopback: "separate" is two
// Query calls (a socket each, through miekg's client), "both" is QueryBoth
// (one fresh socket for the two queries). ns/op includes the server's work.
// Run: go test ./resolver -run XXX -bench RefreshName -benchmem
func BenchmarkRefreshName(b *testing.B) {
	s, err := dnstest.Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	s.Set("x.bench.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, AAAA: []netip.Addr{netip.MustParseAddr("2001:db8::1")}, TTL: 60})
	c := &Client{Servers: []netip.AddrPort{s.Addr}}
	ctx := context.Background()
	b.Run("separate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, t := range bothTypes {
				if r, err := c.Query(ctx, "x.bench.test", t); err != nil || len(r.Addrs) != 1 {
					b.Fatal(r, err)
				}
			}
		}
	})
	b.Run("both", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r := c.QueryBoth(ctx, "x.bench.test")
			if r[0].Err != nil || r[1].Err != nil || len(r[1].Res.Addrs) != 1 {
				b.Fatal(r)
			}
		}
	})
}

// BenchmarkLifetimes10k is what each reconcile asks of the cache: the
// lifetimes of 10,000 dual-stack names, one buffer for all.
// Run: go test ./resolver -run XXX -bench Lifetimes10k -benchmem
func BenchmarkLifetimes10k(b *testing.B) {
	now := time.Now()
	c := NewCache(Policy{MinTTL: time.Second, MaxTTL: time.Hour, Linger: time.Minute, StaleGrace: time.Hour, MaxAddrs: 256}, func() time.Time { return now })
	names := map[string]bool{}
	for i := 0; i < 10000; i++ {
		names[fmt.Sprintf("n%d.test", i)] = true
	}
	c.Sync(names)
	for n := range names {
		c.Observe(Key{n, dns.TypeA}, Result{Addrs: []netip.Addr{netip.AddrFrom4([4]byte{203, 0, 113, 1})}, TTL: 60 * time.Second}, nil)
		c.Observe(Key{n, dns.TypeAAAA}, Result{Addrs: []netip.Addr{netip.MustParseAddr("2001:db8::1")}, TTL: 60 * time.Second}, nil)
	}
	var buf []Lifetime
	b.ReportAllocs()
	for b.Loop() {
		for n := range names {
			buf = c.AppendLifetimes(buf[:0], n)
		}
	}
}

// BenchmarkQueryBothFanOut is BenchmarkQueryFanOut for a name's A and AAAA
// together (QueryBoth: one fresh socket for the two), as a cold apply asks
// them.
func BenchmarkQueryBothFanOut(b *testing.B) {
	s, err := dnstest.Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	s.Set("x.bench.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, AAAA: []netip.Addr{netip.MustParseAddr("2001:db8::1")}, TTL: 60})
	c := &Client{Servers: []netip.AddrPort{s.Addr}}
	round, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ReportAllocs()
	b.SetParallelism(32) // 64 in flight on 2 CPUs
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ctx, cancel := context.WithTimeout(round, 10*time.Second)
			r := c.QueryBoth(ctx, "x.bench.test")
			if r[0].Err != nil || r[1].Err != nil {
				b.Error(r[0].Err, r[1].Err)
			}
			cancel()
		}
	})
}

// BenchmarkCacheSync10k is a start's Sync: 10,000 names into an empty cache.
func BenchmarkCacheSync10k(b *testing.B) {
	names := map[string]bool{}
	for i := 0; i < 10000; i++ {
		names[fmt.Sprintf("n%d.test", i)] = false
	}
	b.ReportAllocs()
	for b.Loop() {
		NewCache(Policy{}, nil).Sync(names)
	}
}
