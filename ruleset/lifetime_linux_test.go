//go:build linux

package ruleset

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/config"
)

// Elements from DNS end in the kernel by themselves at the end of their
// lifetime, with no daemon to remove them; a renewal extends one (by adding
// it again where the kernel renews on add, else by deleting and adding it:
// both paths); deleting one the kernel already ran out is not an error;
// literal entries never end.
func TestKernelElementLifetimes(t *testing.T) {
	e := newEnv(t)
	for _, a := range []string{"192.0.2.10:443", "192.0.2.20:443", "198.51.100.7:8050", "192.0.2.10:444"} {
		e.serveTCP(t, a)
	}
	lit := ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.10/32"), 443, 443)
	renewed := ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.20/32"), 443, 443)
	ranged := ElementFor(config.TCP, netip.MustParsePrefix("198.51.100.7/32"), 8000, 8100) // an interval set's element
	short := ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.10/32"), 444, 444)
	plan := func(until map[Element]time.Time, es ...Element) Plan {
		al := Allowlist{Name: "a", Subject: UserSubject(uidA), Elements: es, Until: make([]time.Time, len(es))}
		for i, x := range es {
			al.Until[i] = until[x]
		}
		return Render(Desired{Allowlists: []Allowlist{al}, DenyLog: config.Defaults().DenyLog})
	}
	for _, addRenews := range []int{0, 2} { // probed (this kernel renews on add), then the delete-and-add path
		e.k.addRenews = addRenews
		now := time.Now()
		first := map[Element]time.Time{renewed: now.Add(1500 * time.Millisecond), ranged: now.Add(1500 * time.Millisecond), short: now.Add(1500 * time.Millisecond)}
		p1 := plan(first, lit, renewed, ranged, short)
		if err := e.k.ApplyFull(p1); err != nil {
			t.Fatal(err)
		}
		for _, a := range []string{"192.0.2.10:443", "192.0.2.20:443", "198.51.100.7:8050", "192.0.2.10:444"} {
			mustAllow(t, "before the lifetimes end: "+a, e.tcp(uidA, a))
		}
		left, err := e.k.ReadLifetimes()
		if err != nil {
			t.Fatal(err)
		}
		if l := left[SetName4("a")]; len(l) != 3 || l[renewed] <= 0 || l[renewed] > 1500*time.Millisecond || l[lit] != 0 {
			t.Fatalf("lifetimes read back: %v", l)
		}
		// Renew one: a delta of renewals only.
		later := map[Element]time.Time{renewed: now.Add(time.Hour), ranged: first[ranged], short: first[short]}
		p2 := plan(later, lit, renewed, ranged, short)
		d := Diff(p1, p2)
		if sd := d[SetName4("a")]; len(sd.Renew) != 1 || len(sd.Add)+len(sd.Del) != 0 {
			t.Fatalf("delta %+v, want one renewal", sd)
		}
		if err := e.k.ApplyDelta(p2, d); err != nil {
			t.Fatalf("addRenews %d: renew: %v", addRenews, err)
		}
		time.Sleep(time.Until(now.Add(2 * time.Second)))
		mustAllow(t, "literal, forever", e.tcp(uidA, "192.0.2.10:443"))
		mustAllow(t, "renewed", e.tcp(uidA, "192.0.2.20:443"))
		mustRefuse(t, "lifetime ended (hash set)", e.tcp(uidA, "192.0.2.10:444"))
		mustRefuse(t, "lifetime ended (interval set)", e.tcp(uidA, "198.51.100.7:8050"))
		// The daemon drops them after the kernel did: no ENOENT.
		p3 := plan(later, lit, renewed)
		if err := e.k.ApplyDelta(p3, Diff(p2, p3)); err != nil {
			t.Fatalf("addRenews %d: deleting elements the kernel ran out: %v", addRenews, err)
		}
		if fs, err := e.k.Verify(p3); err != nil || len(fs) != 0 {
			t.Fatalf("addRenews %d: verify: %v %v", addRenews, fs, err)
		}
		mustAllow(t, "renewed, after the deletions", e.tcp(uidA, "192.0.2.20:443"))
		if addRenews == 0 && e.k.addRenews != 1 {
			t.Errorf("the probe says this kernel does not renew on add: %d", e.k.addRenews)
		}
	}
}

// BenchmarkRenewKernel: the kernel side of one renewal of the steady state
// of 10,000 names (20,000 elements in 100 allowlists): a sixth of them
// renewed in one transaction, on this kernel's path (add renews: 6.10+) and
// on the delete-and-add path of older kernels.
// Run: sudo go test ./ruleset -run XXX -bench RenewKernel -benchtime 20x
func BenchmarkRenewKernel(b *testing.B) {
	for _, path := range []struct {
		name      string
		addRenews int
	}{{"add", 1}, {"delete+add", 2}} {
		b.Run(path.name, func(b *testing.B) {
			k, _ := newKernel(b)
			t0 := time.Now()
			var d Desired
			for i := 0; i < 100; i++ {
				a := Allowlist{Name: fmt.Sprintf("a%03d", i), Subject: UserSubject(uint32(100000 + i))}
				for j := 0; j < 100; j++ {
					n := i*100 + j
					a.Elements = append(a.Elements,
						ElementFor(config.TCP, netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(n >> 8), byte(n)}), 32), 443, 443),
						ElementFor(config.TCP, netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(n >> 8), 15: byte(n)}), 128), 443, 443))
					a.Until = append(a.Until, t0.Add(time.Hour), t0.Add(time.Hour))
				}
				d.Allowlists = append(d.Allowlists, a)
			}
			d.DenyLog = config.Defaults().DenyLog
			var r Renderer
			cur := r.Render(d)
			if err := k.ApplyFull(cur); err != nil {
				b.Fatal(err)
			}
			k.addRenews = path.addRenews
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				for ai := range d.Allowlists {
					a := &d.Allowlists[ai]
					u := append([]time.Time(nil), a.Until...)
					for j := (i % 6) * 2; j < len(u); j += 12 {
						u[j], u[j+1] = u[j].Add(time.Minute), u[j+1].Add(time.Minute)
					}
					a.Until = u
				}
				next := r.Render(d)
				delta := Diff(cur, next)
				b.StartTimer()
				if err := k.ApplyDelta(next, delta); err != nil {
					b.Fatal(err)
				}
				cur = next
			}
		})
	}
}
