package controller

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/event"

	"github.com/egressd/egressd/internal/bindguard"
	"github.com/egressd/egressd/internal/cgroup"
)

type fakeListen struct {
	applied []bindguard.Policy
	cgroups []bindguard.Cgroups
	err     error
	removed bool
	undone  []string // what Repair finds next
}

func (f *fakeListen) Apply(p bindguard.Policy, c bindguard.Cgroups) error {
	f.applied = append(f.applied, p)
	f.cgroups = append(f.cgroups, c)
	return f.err
}
func (f *fakeListen) Remove() error { f.removed = true; return nil }
func (f *fakeListen) Repair() ([]string, error) {
	found := f.undone
	f.undone = nil
	return found, nil
}
func (f *fakeListen) Pinned() string { return "" }

func TestListenApplied(t *testing.T) {
	f := newFixture(t, map[string]string{"allow.d/billing.yaml": "user: billing\nallow: []\nlisten: [tcp:8080]\n"})
	fl := &fakeListen{err: errors.New("no BPF here")}
	f.c.o.Listen = fl
	for i := 0; i < 2; i++ {
		if _, err := f.c.Once(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if len(fl.applied) != 2 || fmt.Sprint(fl.applied[0]) != "map[1001:{false [{6 8080}]}]" {
		t.Fatalf("applied %v", fl.applied)
	}
	if ev := f.events("listen_unenforced"); len(ev) != 1 || ev[0].ContextMap()["error"] != "no BPF here" {
		t.Fatalf("listen_unenforced events: %v (want one: the same failure is logged once)", ev)
	}
	if f.c.listen.err != "no BPF here" {
		t.Fatalf("published error %q", f.c.listen.err)
	}
	fl.err = nil
	if _, err := f.c.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f.c.listen.err != "" {
		t.Fatal("a recovered restriction still reported as unenforced")
	}
}

// Without an enforcer (a daemon that cannot load BPF), listen: is reported,
// never silently ignored.
func TestListenWithoutEnforcer(t *testing.T) {
	f := newFixture(t, map[string]string{"allow.d/billing.yaml": "user: billing\nallow: []\nlisten: []\n"})
	if _, err := f.c.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ev := f.events("listen_unenforced"); len(ev) != 1 {
		t.Fatalf("listen_unenforced events: %v", ev)
	}
}

// on_exit: remove lifts the listen restriction with the table.
func TestListenRemovedOnExit(t *testing.T) {
	f := newFixture(t, map[string]string{"allow.d/billing.yaml": "user: billing\nallow: []\nlisten: [tcp:8080]\n"})
	fl := &fakeListen{}
	f.c.o.Listen = fl
	f.write(t, "egressd.yaml", fmt.Sprintf("resolvers: [%q]\non_exit: remove\n", f.dns.Addr.String()))
	f.c.doReload()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.c.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for len(f.events(event.Started)) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !f.k.Removed || !fl.removed {
		t.Fatalf("on_exit: remove: table removed %v, listen restriction removed %v", f.k.Removed, fl.removed)
	}
}

// A unit allowlist's listen: follows the unit's cgroup: restricted at the
// apply that maps it, moved to the new cgroup when the unit restarts; a
// refusal from it is attributed to the unit.
func TestListenUnit(t *testing.T) {
	f := newFixture(t, map[string]string{"allow.d/shop.yaml": "unit: shop.service\nallow: []\nlisten: [tcp:8080]\n"})
	fl := &fakeListen{}
	f.c.o.Listen = fl
	root := t.TempDir()
	now := time.Unix(1000, 0)
	f.c.o.CgroupRoot, f.c.o.Now = root, func() time.Time { return now }
	dir := filepath.Join(root, "system.slice", "shop.service")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	id1, _ := cgroup.ID(dir)
	if _, err := f.c.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	last := func() bindguard.Cgroups { return fl.cgroups[len(fl.cgroups)-1] }
	if got := fmt.Sprint(last()); got != fmt.Sprintf("map[0:{false []} %d:{false [{6 8080}]}]", id1) {
		t.Fatalf("cgroups applied %s", got)
	}
	if a, u, ok := f.c.CgroupOf(id1); !ok || a != "shop" || u != "shop.service" {
		t.Fatalf("CgroupOf = %q %q %v", a, u, ok)
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	keep, _ := os.MkdirTemp(root, "x")
	defer os.Remove(keep)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	id2, _ := cgroup.ID(dir)
	now = now.Add(unitScanEvery)
	if err := f.c.sync(); err != nil {
		t.Fatal(err)
	}
	if _, ok := last()[id1]; ok || len(last()) != 2 || len(last()[id2].Ports) != 1 {
		t.Fatalf("after the restart: %v, want only %d", last(), id2)
	}
}

// The periodic verify puts back what another process undid of the listen
// restriction, as a drift_repaired event.
func TestListenDriftRepaired(t *testing.T) {
	f := newFixture(t, map[string]string{"allow.d/billing.yaml": "user: billing\nallow: []\nlisten: [tcp:8080]\n"})
	fl := &fakeListen{}
	f.c.o.Listen = fl
	if _, err := f.c.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.c.verifyListen()
	if ev := f.events("drift_repaired"); len(ev) != 0 {
		t.Fatalf("nothing undone, yet %d drift_repaired events", len(ev))
	}
	fl.undone = []string{"listen bind4 program detached from its cgroup"}
	f.c.verifyListen()
	ev := f.events("drift_repaired")
	if len(ev) != 1 || fmt.Sprint(ev[0].ContextMap()["found"]) != "[listen bind4 program detached from its cgroup]" {
		t.Fatalf("drift_repaired events: %v", ev)
	}
}
