//go:build linux

package bindguard

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/cgroup"
)

// in is the rig with its helpers started in the cgroup at path instead.
func (r *rig) in(path string) *rig {
	c := *r
	c.cg = path
	return &c
}

// mkCgroup makes a cgroup (removed at the test's end, once its helpers are
// gone) and returns its path and id.
func (r *rig) mkCgroup(parent, name string) (string, uint64) {
	r.t.Helper()
	p := filepath.Join(parent, name)
	if err := os.Mkdir(p, 0o755); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() {
		if err := os.Remove(p); err != nil {
			r.t.Errorf("remove test cgroup: %v", err)
		}
	})
	id, err := cgroup.ID(p)
	if err != nil {
		r.t.Fatal(err)
	}
	return p, id
}

func TestMaxLevel(t *testing.T) {
	if MaxLevel != cgroup.MaxLevel {
		t.Fatalf("bindguard.MaxLevel %d, cgroup.MaxLevel %d: the programs must look as deep as units are followed", MaxLevel, cgroup.MaxLevel)
	}
}

var unitPorts = Rule{Ports: []Port{{TCP, 8080}, {TCP, 8081}, {UDP, 5353}}}

// A unit allowlist's listen: the unit's processes (its cgroup, and a
// sub-cgroup a child moved to) may bind only the listed ports, whatever
// their uid; a process outside the unit is not restricted.
func TestUnitBindRestricted(t *testing.T) {
	r := newRig(t)
	unitPath, id := r.mkCgroup(r.cg, "svc.service")
	subPath, _ := r.mkCgroup(unitPath, "child")
	if err := r.guard.ApplyCgroups(Cgroups{id: unitPorts}); err != nil {
		t.Fatal(err)
	}
	unit, sub := r.in(unitPath), r.in(subPath)
	tests := []struct {
		name string
		r    *rig
		op   string
		uid  int
		want string
	}{
		{"control: listed tcp4", unit, "tcp4,127.0.0.1,8080", other, "ok 8080"},
		{"attack: unlisted tcp4", unit, "tcp4,127.0.0.1,9999", other, "EPERM"},
		{"attack: unlisted tcp4 as root", unit, "tcp4,0.0.0.0,9999", 0, "EPERM"},
		{"control: listed tcp6", unit, "tcp6,::1,8080", other, "ok 8080"},
		{"attack: unlisted tcp6", unit, "tcp6,::,9999", other, "EPERM"},
		{"attack: unlisted IPv4-mapped IPv6", unit, "tcp6,::ffff:127.0.0.1,9999", other, "EPERM"},
		{"control: listed udp4", unit, "udp4,127.0.0.1,5353", other, "ok 5353"},
		{"attack: unlisted udp4", unit, "udp4,127.0.0.1,9999", other, "EPERM"},
		{"attack: unlisted udp6", unit, "udp6,::,9999", other, "EPERM"},
		{"attack: udp port listed for tcp only", unit, "udp4,127.0.0.1,8080", other, "EPERM"},
		{"attack: child in a sub-cgroup, unlisted", sub, "tcp4,127.0.0.1,9999", other, "EPERM"},
		{"control: child in a sub-cgroup, listed", sub, "tcp4,127.0.0.1,8080", other, "ok 8080"},
		{"control: outside the unit", r, "tcp4,127.0.0.1,9999", other, "ok 9999"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.run(tt.uid, tt.op); got != tt.want {
				t.Fatalf("%s as uid %d: %q, want %q", tt.op, tt.uid, got, tt.want)
			}
		})
	}
	// Both rules apply: a uid-restricted process in the unit obeys each.
	r.apply(Policy{protected: {Ports: []Port{{TCP, 8081}}}})
	if got := unit.run(protected, "tcp4,127.0.0.1,8080"); got != "EPERM" {
		t.Fatalf("8080, listed by the unit but not by the uid: %q, want EPERM", got)
	}
	if got := unit.run(protected, "tcp4,127.0.0.1,8081"); got != "ok 8081" {
		t.Fatalf("control: 8081, listed by both: %q", got)
	}
}

// Listeners the bind hooks let through (port 0, listen() unbound) in the
// unit or its sub-cgroup get no connection; the listed port serves.
func TestUnitListenEphemeral(t *testing.T) {
	r := newRig(t)
	unitPath, id := r.mkCgroup(r.cg, "svc.service")
	subPath, _ := r.mkCgroup(unitPath, "child")
	if err := r.guard.ApplyCgroups(Cgroups{id: unitPorts}); err != nil {
		t.Fatal(err)
	}
	unit, sub := r.in(unitPath), r.in(subPath)
	t.Run("control: listed port serves", func(t *testing.T) { unit.serves(t, other, "tcp4,127.0.0.1,8080,listen", "8080") })
	for _, c := range []struct {
		name string
		r    *rig
		op   string
	}{
		{"autobound listener", unit, "tcp4,0,0,autolisten"},
		{"bind to port 0, then listen", unit, "tcp4,127.0.0.1,0,listen"},
		{"autobound IPv6 listener", unit, "tcp6,::,0,autolisten"},
		{"autobound listener in a sub-cgroup", sub, "tcp4,0,0,autolisten"},
	} {
		t.Run("attack: "+c.name, func(t *testing.T) { c.r.dropped(t, other, c.op, "") })
	}
	t.Run("control: autobound listener outside the unit serves", func(t *testing.T) { r.serves(t, other, "tcp4,0,0,autolisten", "") })
}

// A refusal by a unit's rule is reported with the unit's cgroup; audit mode
// reports and allows; lifting the rule (and the units marker) restores all.
func TestUnitEventsAndLift(t *testing.T) {
	r := newRig(t)
	unitPath, id := r.mkCgroup(r.cg, "svc.service")
	unit := r.in(unitPath)
	if err := r.guard.ApplyCgroups(Cgroups{id: unitPorts}); err != nil {
		t.Fatal(err)
	}
	rd, err := r.guard.Events()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	next := func() Event {
		t.Helper()
		rd.SetDeadline(time.Now().Add(5 * time.Second))
		rec, err := rd.Read()
		if err != nil {
			t.Fatal(err)
		}
		e, err := Decode(rec.RawSample)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	if got := unit.run(other, "tcp4,127.0.0.1,9999"); got != "EPERM" {
		t.Fatalf("unlisted: %q", got)
	}
	if e := next(); e.Cgroup != id || e.UID != other || e.Port != 9999 || e.Proto != TCP || e.Audit {
		t.Fatalf("event %+v, want cgroup %d", e, id)
	}
	loaded, err := r.guard.LoadedCgroups()
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded) != 1 || len(loaded[id].Ports) != 3 {
		t.Fatalf("loaded %+v", loaded)
	}
	if err := r.guard.ApplyCgroups(Cgroups{id: {Audit: true, Ports: unitPorts.Ports}}); err != nil {
		t.Fatal(err)
	}
	if got := unit.run(other, "tcp4,127.0.0.1,9998"); got != "ok 9998" {
		t.Fatalf("audit mode: %q", got)
	}
	if e := next(); e.Cgroup != id || e.Port != 9998 || !e.Audit {
		t.Fatalf("audit event %+v", e)
	}
	// A unit restarted: its new cgroup (a new id) is not restricted until
	// egressd maps it; that is what the start gate waits for.
	if err := r.guard.ApplyCgroups(Cgroups{}); err != nil {
		t.Fatal(err)
	}
	if got := unit.run(other, "tcp4,127.0.0.1,9999"); got != "ok 9999" {
		t.Fatalf("rule lifted: %q", got)
	}
	if left, _ := entries[cgroupKey](r.guard.cgroups); len(left) != 0 {
		t.Fatalf("cgroup map not empty after lifting: %v", left)
	}
	// Expected: a unit allowlist has listen:, none of its units runs; the
	// units marker stays for the start gate.
	if exp, err := UnitsExpected(r.pins); err != nil || exp {
		t.Fatalf("nothing expected: UnitsExpected = %v, %v", exp, err)
	}
	if err := r.guard.ApplyCgroups(Cgroups{Expected: {}}); err != nil {
		t.Fatal(err)
	}
	if exp, err := UnitsExpected(r.pins); err != nil || !exp {
		t.Fatalf("expected: UnitsExpected = %v, %v", exp, err)
	}
	if got := unit.run(other, "tcp4,127.0.0.1,9999"); got != "ok 9999" {
		t.Fatalf("control: expected, but no cgroup restricted: %q", got)
	}
	if err := r.guard.ApplyCgroups(Cgroups{}); err != nil {
		t.Fatal(err)
	}
	if exp, err := UnitsExpected(r.pins); err != nil || exp {
		t.Fatalf("lifted: UnitsExpected = %v, %v", exp, err)
	}
}
