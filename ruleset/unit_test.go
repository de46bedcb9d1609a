package ruleset

import (
	"net/netip"
	"testing"

	"github.com/egressd/egressd/config"
)

func TestUnitKeys(t *testing.T) {
	k := UnitKeys([]string{"web", "shop", "api"})
	seen := map[uint32]bool{}
	for n, v := range k {
		if v == 0 || seen[v] {
			t.Fatalf("key of %s: %d (taken or zero) in %v", n, v, k)
		}
		seen[v] = true
	}
	if k2 := UnitKeys([]string{"web", "new"}); k2["web"] != k["web"] {
		t.Fatal("a unit's key changed when another allowlist came")
	}
}

func TestRenderUnits(t *testing.T) {
	e := ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.1/32"), 443, 443)
	d := Desired{Allowlists: []Allowlist{
		{Name: "u", Subject: UserSubject(1000), Elements: []Element{e}},
		{Name: "web", Subject: UnitSubject("web.service", 77), DNS: true, Elements: []Element{e}},
	}, Cgroups: []Cgroup{{ID: 9, Allowlist: "web"}, {ID: 3, Allowlist: "web"}}}
	var r Renderer
	p := r.Render(d)
	if us := p.Of(SubjectUser); len(us) != 1 || us[0].Allowlist != "u" {
		t.Fatalf("users %v: a unit allowlist is not a uid's", us)
	}
	if us := p.Of(SubjectUnit); len(us) != 1 || us[0] != (AllowlistPlan{Allowlist: "web", Subject: UnitSubject("web.service", 77), DNS: true}) {
		t.Fatalf("units %v", us)
	}
	if len(p.Sets["uallow4_web"]) != 1 || p.Sets["allow4_web"] != nil {
		t.Fatalf("sets %v", p.Sets)
	}
	if p.Cgroups[0].ID != 3 {
		t.Fatalf("cgroups not sorted: %v", p.Cgroups)
	}
	// The same allowlist turned from a unit to a user: its sets move.
	d.Allowlists[1].Subject = UserSubject(d.Allowlists[1].Subject.ID)
	p2 := r.Render(d)
	if len(p2.Sets["allow4_web"]) != 1 || p2.Sets["uallow4_web"] != nil || SameStructure(p, p2) {
		t.Fatalf("after the change: %v", p2.Sets)
	}
	if id, ok := ParseSetName("uallow6_web"); !ok || id != (SetID{Allowlist: "web", V6: true, Kind: SubjectUnit}) {
		t.Fatalf("ParseSetName = %v %v", id, ok)
	}
}

func TestCgroupDelta(t *testing.T) {
	add, del := CgroupDelta([]Cgroup{{1, "a"}, {2, "b"}}, []Cgroup{{2, "c"}, {3, "a"}})
	if len(add) != 2 || add[0] != (Cgroup{2, "c"}) || add[1] != (Cgroup{3, "a"}) {
		t.Fatalf("add %v", add)
	}
	if len(del) != 2 || del[0] != (Cgroup{1, "a"}) || del[1] != (Cgroup{2, "b"}) {
		t.Fatalf("del %v", del)
	}
}

func TestFakeCgroups(t *testing.T) {
	p := Render(Desired{Allowlists: []Allowlist{{Name: "web", Subject: UnitSubject("web.service", 5)}}, Cgroups: []Cgroup{{1, "web"}}})
	var f Fake
	if err := f.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	p2 := Render(Desired{Allowlists: []Allowlist{{Name: "web", Subject: UnitSubject("web.service", 5)}}, Cgroups: []Cgroup{{2, "web"}}})
	if fs, _ := f.Verify(p2); len(fs) != 1 || fs[0].Object != "unitchains" {
		t.Fatalf("findings %v", fs)
	}
	if err := f.ApplyCgroups(p2, []Cgroup{{2, "web"}}, []Cgroup{{7, "web"}}); err == nil {
		t.Fatal("deleting an unmapped cgroup succeeded")
	}
	add, del := CgroupDelta(p.Cgroups, p2.Cgroups)
	if err := f.ApplyCgroups(p2, add, del); err != nil {
		t.Fatal(err)
	}
	if fs, _ := f.Verify(p2); len(fs) != 0 {
		t.Fatalf("findings %v", fs)
	}
	if cgs, _ := f.ReadCgroups(); len(cgs) != 1 || cgs[0].ID != 2 {
		t.Fatalf("ReadCgroups %v", cgs)
	}
}
