package controller

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/cgroup"
	"github.com/egressd/egressd/ruleset"
)

// The follower maps a unit's cgroup (found in a cgroup tree: here a plain
// directory tree), follows it across a restart with an element-only change
// of the cgroup map, and drops it when the unit stops.
func TestUnitLevels(t *testing.T) {
	if cgroup.MaxLevel != ruleset.UnitLevels {
		t.Fatalf("cgroup.MaxLevel %d, ruleset.UnitLevels %d", cgroup.MaxLevel, ruleset.UnitLevels)
	}
}

func TestUnitFollower(t *testing.T) {
	f := newFixture(t, map[string]string{
		"allow.d/shop.yaml":    "unit: shop.service\nallow: [192.0.2.12:443]\n",
		"allow.d/billing.yaml": "user: billing\nallow: [198.51.100.0/24:443]\n",
	})
	root := t.TempDir()
	now := time.Unix(1000, 0)
	f.c.o.CgroupRoot, f.c.o.Now = root, func() time.Time { return now }
	dir := filepath.Join(root, "system.slice", "shop.service")
	if err := os.MkdirAll(filepath.Join(root, "system.slice", "other.service", "shop.service"), 0o755); err != nil { // not a unit: not followed
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	id1, _ := cgroup.ID(dir)
	if _, err := f.c.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	p := f.k.Plan
	if units := p.Of(ruleset.SubjectUnit); len(units) != 1 || units[0].Subject.Unit != "shop.service" || len(p.Of(ruleset.SubjectUser)) != 1 {
		t.Fatalf("plan allowlists %v", p.Allowlists)
	}
	if len(p.Cgroups) != 1 || p.Cgroups[0] != (ruleset.Cgroup{ID: id1, Allowlist: "shop"}) {
		t.Fatalf("cgroups %v, want %d", p.Cgroups, id1)
	}
	if len(p.Sets[ruleset.SetID{Allowlist: "shop", Kind: ruleset.SubjectUnit}.Name()]) != 1 {
		t.Fatalf("sets %v", p.Sets)
	}

	// Restart: a new directory (a new inode, a new id). Before the scan is
	// due nothing changes; then the map follows without a rebuild.
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	keep, _ := os.MkdirTemp(root, "x") // keep the freed inode from being reused at once
	defer os.Remove(keep)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	id2, _ := cgroup.ID(dir)
	fulls := f.k.Fulls
	if err := f.c.sync(); err != nil || f.k.Plan.Cgroups[0].ID != id1 {
		t.Fatalf("rescanned before due: %v %v", f.k.Plan.Cgroups, err)
	}
	now = now.Add(unitScanEvery)
	if err := f.c.sync(); err != nil {
		t.Fatal(err)
	}
	if got := f.k.Plan.Cgroups; len(got) != 1 || got[0].ID != id2 || f.k.Fulls != fulls || f.k.Calls(ruleset.FakeApplyCgroups) != 1 {
		t.Fatalf("after the restart: cgroups %v (want %d), fulls %d→%d, cgroup applies %d", got, id2, fulls, f.k.Fulls, f.k.Calls(ruleset.FakeApplyCgroups))
	}
	if n := len(f.events("unit_cgroup")); n != 3 { // added, removed, added
		t.Fatalf("%d unit_cgroup events", n)
	}
	// Stop: the cgroup goes, its id leaves the map.
	os.Remove(dir) //nolint:errcheck
	now = now.Add(unitScanEvery)
	if err := f.c.sync(); err != nil || len(f.k.Plan.Cgroups) != 0 {
		t.Fatalf("after the stop: %v %v", f.k.Plan.Cgroups, err)
	}
	if fs, _ := f.k.Verify(*f.c.apply.applied); len(fs) != 0 {
		t.Fatalf("findings %v", fs)
	}
}
