package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/cgroup"
	"github.com/egressd/egressd/internal/controller"
	"github.com/egressd/egressd/internal/systest"
	"github.com/egressd/egressd/ruleset"
	"go.uber.org/zap/zaptest"
)

// With a unit allowlist whose unit runs, plan shows the kernel the daemon
// applied as in sync: the plan maps the unit's running cgroup, as the
// daemon does (issue 23: plan left the cgroups out and showed "1 cgroups
// missing" for a kernel that held exactly what run applies).
func TestPlanUnitCgroupNoFalseDifference(t *testing.T) {
	t.Run("tree", func(t *testing.T) {
		// A cgroup tree is a directory tree; ids are inode numbers.
		root := t.TempDir()
		if err := os.MkdirAll(filepath.Join(root, "system.slice", "shop.service"), 0o755); err != nil {
			t.Fatal(err)
		}
		planUnitInSync(t, "shop.service", root)
	})
	t.Run("host", func(t *testing.T) {
		// The host's cgroup2 hierarchy, found as plan finds it.
		systest.Require(t)
		root, err := cgroup.Root()
		if err != nil {
			t.Fatal(err)
		}
		tag := fmt.Sprintf("egressd-plantest-%d", os.Getpid())
		slice := filepath.Join(root, tag+".slice")
		unit := tag + ".service"
		if err := os.MkdirAll(filepath.Join(slice, unit), 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			os.Remove(filepath.Join(slice, unit)) //nolint:errcheck
			os.Remove(slice)                      //nolint:errcheck
		})
		planUnitInSync(t, unit, "")
	})
}

func planUnitInSync(t *testing.T, unit, cgroupRoot string) {
	t.Helper()
	o := planFixture(t)
	dir := filepath.Dir(o.ConfigPath)
	if err := os.WriteFile(filepath.Join(dir, "allow.d/shop.yaml"), []byte("unit: "+unit+"\nallow: [192.0.2.12:443]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	o.CgroupRoot = cgroupRoot
	k := o.Kernel.(*ruleset.Fake)
	// What egressd run applies: the daemon's own code, on the same kernel.
	c, err := controller.New(controller.Options{ConfigPath: o.ConfigPath, ConfigRequired: true, Kernel: k, Log: zaptest.NewLogger(t),
		Users: o.Users, Trust: o.Trust, CgroupRoot: cgroupRoot})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(k.Plan.Cgroups) != 1 {
		t.Fatalf("the daemon mapped %v, want the unit's one cgroup", k.Plan.Cgroups)
	}
	code, out, errs := runPlan(t, o)
	if code != 0 || !strings.Contains(out, "# none: the kernel holds this ruleset") {
		t.Fatalf("exit %d; plan shows a difference with the kernel run applied:\n%s%s", code, out[strings.Index(out, "# difference"):], errs)
	}
	// The control: a kernel that lost the unit's cgroup is a difference.
	if err := k.ApplyCgroups(k.Plan, nil, k.Plan.Cgroups); err != nil {
		t.Fatal(err)
	}
	_, out, _ = runPlan(t, o)
	if strings.Contains(out, "# none") || !strings.Contains(out, "1 cgroups missing") {
		t.Fatalf("a kernel without the running unit's cgroup shows no difference:\n%s", out)
	}
}
