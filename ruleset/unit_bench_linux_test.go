//go:build linux

package ruleset

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/egressd/egressd/config"
)

// unitsPlan is a host with n unit allowlists of three entries each (two
// exact addresses, one CIDR with a port range), every other one with dns:
// resolvers, each unit with one current cgroup.
func unitsPlan(n int) Plan {
	var names []string
	for i := 0; i < n; i++ {
		names = append(names, fmt.Sprintf("svc%05d", i))
	}
	keys := UnitKeys(names)
	d := Desired{Resolvers: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53")}, DenyLog: config.Defaults().DenyLog}
	for i, name := range names {
		d.Allowlists = append(d.Allowlists, Allowlist{Name: name, Subject: UnitSubject(name+".service", keys[name]), DNS: i%2 == 0, Elements: []Element{
			ElementFor(config.TCP, netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 32), 443, 443),
			ElementFor(config.UDP, netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}), 32), 53, 53),
			ElementFor(config.TCP, netip.MustParsePrefix("203.0.113.0/24"), 8000, 8100),
		}})
		d.Cgroups = append(d.Cgroups, Cgroup{ID: uint64(1_000_000 + i), Allowlist: name})
	}
	return Render(d)
}

// BenchmarkApplyFullUnits2k: a full apply of 2,000 unit allowlists (two
// chains of their own each), 2,000 cgroups.
// Run: sudo go test ./ruleset -run XXX -bench 'Units2k' -benchtime 3x
func BenchmarkApplyFullUnits2k(b *testing.B) { benchApplyFull(b, unitsPlan(2000)) }

// BenchmarkApplyCgroupsUnits2k: a unit's restart (one cgroup out, one in)
// with 2,000 unit allowlists in the table.
func BenchmarkApplyCgroupsUnits2k(b *testing.B) {
	p := unitsPlan(2000)
	k := benchKernel(b)
	if err := k.ApplyFull(p); err != nil {
		b.Fatal(err)
	}
	cur := p.Cgroups
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		next := append([]Cgroup(nil), cur...)
		next[0].ID = uint64(2_000_000 + i)
		add, del := CgroupDelta(cur, next)
		if err := k.ApplyCgroups(p, add, del); err != nil {
			b.Fatal(err)
		}
		cur = next
	}
}

// BenchmarkVerifyUnits2k: reading back and comparing 2,000 unit allowlists.
func BenchmarkVerifyUnits2k(b *testing.B) {
	p := unitsPlan(2000)
	k := benchKernel(b)
	if err := k.ApplyFull(p); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if fs, err := k.Verify(p); err != nil || len(fs) != 0 {
			b.Fatal(fs, err)
		}
	}
}
