package ruleset

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/config"
)

// BenchmarkRenderOneChange10k: render and diff after one new address in one
// of 10,000 allowlists, with a Renderer (the daemon's path).
// Run: go test ./ruleset -run XXX -bench RenderOneChange
func BenchmarkRenderOneChange10k(b *testing.B) {
	p := sitePlan(10_000)
	var d Desired
	for _, ch := range p.Allowlists {
		d.Allowlists = append(d.Allowlists, Allowlist{Name: ch.Allowlist, Subject: UserSubject(ch.Subject.ID), DNS: ch.DNS,
			Elements: append(append([]Element{}, p.Sets[SetName4(ch.Allowlist)]...), p.Sets[SetName6(ch.Allowlist)]...)})
	}
	var r Renderer
	cur := r.Render(d)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		a := &d.Allowlists[5000]
		a.Elements = append(a.Elements[:len(a.Elements):len(a.Elements)], ElementFor(config.TCP, netip.PrefixFrom(netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)}), 32), 443, 443))
		next := r.Render(d)
		if !SameStructure(cur, next) {
			b.Fatal("structure changed")
		}
		if n := Diff(cur, next).Elements(); n != 1 {
			b.Fatal(fmt.Sprint("delta of ", n))
		}
		cur = next
	}
}

// sitePlan is a shared-hosting host: n allowlists (a user per site) of 1 to
// 10 entries each, mostly exact addresses (DNS answers), some CIDRs and
// port ranges, every third with dns: resolvers.
func sitePlan(n int) Plan {
	var als []Allowlist
	k := 0
	for i := 0; i < n; i++ {
		a := Allowlist{Name: fmt.Sprintf("site%05d", i), Subject: UserSubject(uint32(100000 + i)), DNS: i%3 == 0}
		for j := 0; j < 1+i%10; j++ {
			k++
			switch {
			case j == 9:
				a.Elements = append(a.Elements, ElementFor(config.TCP, netip.MustParsePrefix("198.51.100.0/24"), 8000, 8100))
			case j%4 == 3:
				a.Elements = append(a.Elements, ElementFor(config.TCP, netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 13: byte(k >> 16), 14: byte(k >> 8), 15: byte(k)}), 128), 443, 443))
			default:
				a.Elements = append(a.Elements, ElementFor(config.TCP, netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18 + byte(k>>16), byte(k >> 8), byte(k)}), 32), 443, 443))
			}
		}
		als = append(als, a)
	}
	return Render(Desired{Allowlists: als, Resolvers: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53")}, DenyLog: config.Defaults().DenyLog})
}

// oneNameChanged is p with one address of one allowlist replaced: the delta
// of a DNS change.
func oneNameChanged(p Plan, site int) Plan {
	q := Plan{Allowlists: p.Allowlists, DenyLog: p.DenyLog, Sets: map[string][]Element{}}
	for n, es := range p.Sets {
		q.Sets[n] = es
	}
	name := SetName4(fmt.Sprintf("site%05d", site))
	es := append([]Element(nil), q.Sets[name]...)
	es[0] = ElementFor(config.TCP, netip.MustParsePrefix("203.0.113.77/32"), 443, 443)
	q.Sets[name] = Normalize(es)
	return q
}

// BenchmarkRenewal10k: the Go side of one renewal of the steady state of
// 10,000 names (A and AAAA) in 100 allowlists: a sixth of the names'
// lifetimes extended (one renewal period, 10 s, of names at TTL 60 s), then
// render and diff with a Renderer, as the daemon does.
// Run: go test ./ruleset -run XXX -bench Renewal10k
func BenchmarkRenewal10k(b *testing.B) {
	t0 := time.Now()
	var d Desired
	for i := 0; i < 100; i++ {
		a := Allowlist{Name: fmt.Sprintf("a%03d", i), Subject: UserSubject(uint32(100000 + i))}
		for j := 0; j < 100; j++ {
			k := i*100 + j
			a.Elements = append(a.Elements,
				ElementFor(config.TCP, netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(k >> 8), byte(k)}), 32), 443, 443),
				ElementFor(config.TCP, netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(k >> 8), 15: byte(k)}), 128), 443, 443))
			a.Until = append(a.Until, t0.Add(time.Minute), t0.Add(time.Minute))
		}
		d.Allowlists = append(d.Allowlists, a)
	}
	var r Renderer
	cur := r.Render(d)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for ai := range d.Allowlists {
			a := &d.Allowlists[ai]
			u := append([]time.Time(nil), a.Until...)
			for j := (i % 6) * 2; j < len(u); j += 12 { // a sixth of the names, both families
				u[j], u[j+1] = u[j].Add(time.Minute), u[j+1].Add(time.Minute)
			}
			a.Until = u
		}
		next := r.Render(d)
		if n := Diff(cur, next).Elements(); n == 0 {
			b.Fatal("no renewal")
		}
		cur = next
	}
}
