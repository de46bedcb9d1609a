package policy

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/egressd/egressd/internal/dnstest"
	"github.com/egressd/egressd/resolver"
	"github.com/miekg/dns"
)

// BenchmarkQuery2000 is the DNS round of a cold apply of 1,000 names (A and
// AAAA each) against an in-process server, 64 in flight.
// Run: go test ./internal/policy -run XXX -bench Query2000 -benchmem
func BenchmarkQuery2000(b *testing.B) {
	s, err := dnstest.Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var keys []resolver.Key
	for i := 0; i < 1000; i++ {
		name := fmt.Sprintf("n%d.bench.test", i)
		s.Set(name, dnstest.Record{A: []netip.Addr{netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})}, AAAA: []netip.Addr{netip.MustParseAddr("2001:db8::1")}, TTL: 60})
		keys = append(keys, resolver.Key{Name: name, Type: dns.TypeA}, resolver.Key{Name: name, Type: dns.TypeAAAA})
	}
	c := &resolver.Client{Servers: []netip.AddrPort{s.Addr}}
	b.ReportAllocs()
	for b.Loop() {
		for i, o := range Query(context.Background(), c, keys, 0) {
			if o.Err != nil {
				b.Fatalf("%v: %v", keys[i], o.Err)
			}
		}
	}
}
