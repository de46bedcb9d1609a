package dnsproxy

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/dnstest"
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
