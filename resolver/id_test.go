package resolver

import (
	"testing"

	"github.com/miekg/dns"
)

// IDs are random: 1,000 of them repeat few values (about 8 pairs expected
// among 65,536), and both bytes vary.
func TestQueryIDRandom(t *testing.T) {
	seen := map[uint16]bool{}
	var hi, lo [256]bool
	for range 1000 {
		id := queryID()
		seen[id], hi[id>>8], lo[id&0xff] = true, true, true
	}
	n := func(b [256]bool) (k int) {
		for _, v := range b {
			if v {
				k++
			}
		}
		return k
	}
	if len(seen) < 950 || n(hi) < 200 || n(lo) < 200 {
		t.Fatalf("1,000 IDs: %d distinct, %d high bytes, %d low bytes", len(seen), n(hi), n(lo))
	}
}

// BenchmarkQueryID against miekg's dns.Id, which it replaces.
func BenchmarkQueryID(b *testing.B) {
	b.Run("queryID", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			queryID()
		}
	})
	b.Run("dns.Id", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			dns.Id()
		}
	})
}
