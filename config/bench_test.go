package config

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkParseAllowlist100 is one of the 100 files of the cold-apply
// benchmark (tools/bench: 100 entries each at 10,000 names).
// Run: go test ./config -run XXX -bench ParseAllowlist -benchmem
func BenchmarkParseAllowlist100(b *testing.B) {
	var s strings.Builder
	s.WriteString("user: 70000\nallow_private_answers: true\nallow:\n")
	for i := 0; i < 100; i++ {
		fmt.Fprintf(&s, "  - n%d.bench.test:443\n", i)
	}
	data := []byte(s.String())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseAllowlist("l000.yaml", "l000", data); err != nil {
			b.Fatal(err)
		}
	}
}
