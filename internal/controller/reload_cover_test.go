package controller

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Deleting the allow directory (rather than the allowlist files) does not
// lift the restrictions: the reload is rejected, saying how to lift them,
// and the configuration in force stays.
func TestReloadAllowDirRemoved(t *testing.T) {
	f := newFixture(t, map[string]string{"allow.d/billing.yaml": "user: billing\nallow: [192.0.2.1:443]\n"})
	if _, err := f.c.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(f.dir, "allow.d")); err != nil {
		t.Fatal(err)
	}
	f.c.doReload()
	if len(f.c.cfg.Allowlists) != 1 || f.c.cfg.Allowlists[0].Name != "billing" {
		t.Fatalf("in force after the directory went: %+v", f.c.cfg.Allowlists)
	}
	rej := f.events("config_rejected")
	if len(rej) != 1 || !strings.Contains(rej[0].ContextMap()["error"].(string), "delete the allowlist files, not the directory") {
		t.Fatalf("config_rejected events %v", rej)
	}
	if rej[0].Message != "configuration rejected; the last good configuration stays in force" {
		t.Errorf("message %q", rej[0].Message)
	}
}

// A cgroup tree that cannot be read keeps the cgroups mapped so far (a
// vanished cgroup takes its id with it) and says so.
func TestUnitScanFailureKeepsMapping(t *testing.T) {
	f := newFixture(t, map[string]string{"allow.d/shop.yaml": "unit: shop.service\nallow: [192.0.2.12:443]\n"})
	root := t.TempDir()
	now := time.Unix(1000, 0)
	f.c.o.CgroupRoot, f.c.o.Now = root, func() time.Time { return now }
	dir := filepath.Join(root, "system.slice", "shop.service")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(f.k.Plan.Cgroups) != 1 {
		t.Fatalf("cgroups %v", f.k.Plan.Cgroups)
	}
	if err := os.RemoveAll(root); err != nil { // the hierarchy itself is gone
		t.Fatal(err)
	}
	now = now.Add(unitScanEvery)
	if err := f.c.sync(); err != nil {
		t.Fatal(err)
	}
	if len(f.k.Plan.Cgroups) != 1 {
		t.Errorf("mapping after a failed scan: %v, want the one mapped before", f.k.Plan.Cgroups)
	}
	failed := 0
	for _, e := range f.events("unit_cgroup") {
		if e.Message == "scanning unit cgroups failed" {
			failed++
		}
	}
	if failed != 1 {
		t.Errorf("%d scan failures logged, want 1", failed)
	}
	if d := f.c.units.due(); !d.Equal(now.Add(unitScanEvery)) {
		t.Errorf("next scan due %v, want %v", d, now.Add(unitScanEvery))
	}
}
