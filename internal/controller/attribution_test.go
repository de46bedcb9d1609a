package controller

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/egressd/egressd/config"
)

// BenchmarkBuildNameIndex: the deny-attribution index is rebuilt after each
// apply; this is its cost at 100 allowlists × 100 names × 2 addresses.
func BenchmarkBuildNameIndex(b *testing.B) {
	cfg := &config.Config{}
	addrs := map[string][]netip.Addr{}
	for i := range 100 {
		a := &config.Allowlist{Name: fmt.Sprintf("a%d", i)}
		for j := range 100 {
			n := fmt.Sprintf("n%d-%d.example.test", i, j)
			a.Entries = append(a.Entries, config.Entry{Host: n})
			addrs[n] = []netip.Addr{netip.AddrFrom4([4]byte{198, 51, byte(i), byte(j)}), netip.AddrFrom4([4]byte{203, 0, byte(i), byte(j)})}
		}
		cfg.Allowlists = append(cfg.Allowlists, a)
	}
	b.ReportAllocs()
	for b.Loop() {
		buildNameIndex(cfg, func(n string) []netip.Addr { return addrs[n] })
	}
}

// BenchmarkUpdateNameIndex: after DNS churn of one name, only the
// allowlists using it are rebuilt.
func BenchmarkUpdateNameIndex(b *testing.B) {
	cfg := &config.Config{}
	addrs := map[string][]netip.Addr{}
	for i := range 100 {
		a := &config.Allowlist{Name: fmt.Sprintf("a%d", i)}
		for j := range 100 {
			n := fmt.Sprintf("n%d-%d.example.test", i, j)
			a.Entries = append(a.Entries, config.Entry{Host: n})
			addrs[n] = []netip.Addr{netip.AddrFrom4([4]byte{198, 51, byte(i), byte(j)}), netip.AddrFrom4([4]byte{203, 0, byte(i), byte(j)})}
		}
		cfg.Allowlists = append(cfg.Allowlists, a)
	}
	get := func(n string) []netip.Addr { return addrs[n] }
	prev := buildNameIndex(cfg, get)
	changed := map[string]bool{"n7-7.example.test": true}
	b.ReportAllocs()
	for b.Loop() {
		updateNameIndex(prev, cfg, changed, get)
	}
}
