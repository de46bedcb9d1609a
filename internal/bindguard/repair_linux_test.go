//go:build linux

package bindguard

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf/link"
)

// Root (or a cleanup tool) detaches egressd's programs or removes their
// pins: Repair finds it and puts them back; Attached (check) reports it
// until then.
func TestRepairDetachedAndUnpinned(t *testing.T) {
	r := newRig(t)
	r.apply(policy)
	if found, err := r.guard.Repair(); err != nil || len(found) != 0 {
		t.Fatalf("nothing undone: Repair = %v, %v", found, err)
	}
	// Detach bind4 (bpftool link detach does BPF_LINK_DETACH).
	l, err := link.LoadPinnedLink(filepath.Join(r.pins, "bind4"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Detach(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if got := r.run(protected, "tcp4,127.0.0.1,9999"); got != "ok 9999" {
		t.Fatalf("detached bind4 still refuses: %q (the attack setup failed)", got)
	}
	if got := fmt.Sprint(Attached(r.pins)); !strings.Contains(got, "bind4 program detached") {
		t.Fatalf("Attached = %s, want bind4 detached", got)
	}
	// Unpin the ingress link and the policy map.
	if err := os.Remove(filepath.Join(r.pins, "ingress")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(r.pins, "policy")); err != nil {
		t.Fatal(err)
	}
	found, err := r.guard.Repair()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(found, "; "); got != "listen bind4 program detached from its cgroup; listen ingress link unpinned; listen policy map unpinned" {
		t.Fatalf("Repair found %q", got)
	}
	if got := r.run(protected, "tcp4,127.0.0.1,9999"); got != "EPERM" {
		t.Fatalf("after the repair: %q, want EPERM", got)
	}
	if got := r.run(protected, "tcp4,127.0.0.1,8080"); got != "ok 8080" {
		t.Fatalf("control: the listed port after the repair: %q", got)
	}
	if left := Attached(r.pins); len(left) != 0 {
		t.Fatalf("after the repair, Attached = %v", left)
	}
	if p, err := ReadPinned(r.pins); err != nil || len(p[protected].Ports) != 3 {
		t.Fatalf("policy map re-pinned: %v, %v", p, err)
	}
	// The pins hold across a restart again: egressd gone, still refused.
	r.guard.Close()
	if got := r.run(protected, "tcp4,127.0.0.1,9999"); got != "EPERM" {
		t.Fatalf("with egressd gone after the repair: %q, want EPERM", got)
	}
	r.open()
}

// Entries another process deleted from the maps are written again.
func TestEnforcerRepairsMapEntries(t *testing.T) {
	r := newRig(t)
	r.guard.Close()
	e := &Enforcer{Dir: r.pins, Cgroup: r.cg}
	defer func() { e.guard.Close() }()
	unitPath, id := r.mkCgroup(r.cg, "svc.service")
	if err := e.Apply(policy, Cgroups{id: unitPorts}); err != nil {
		t.Fatal(err)
	}
	if found, err := e.Repair(); err != nil || len(found) != 0 {
		t.Fatalf("nothing undone: Repair = %v, %v", found, err)
	}
	for _, k := range []any{key{UID: protected}, cgroupKey{ID: id}} {
		m := e.guard.policy
		if _, ok := k.(cgroupKey); ok {
			m = e.guard.cgroups
		}
		if err := m.Delete(k); err != nil {
			t.Fatal(err)
		}
	}
	if got := r.run(protected, "tcp4,127.0.0.1,9999"); got != "ok 9999" {
		t.Fatalf("marker deleted, still refused: %q (the attack setup failed)", got)
	}
	found, err := e.Repair()
	if err != nil || fmt.Sprint(found) != "[listen policy maps changed]" {
		t.Fatalf("Repair = %v, %v", found, err)
	}
	if got := r.run(protected, "tcp4,127.0.0.1,9999"); got != "EPERM" {
		t.Fatalf("after the repair: %q, want EPERM", got)
	}
	if got := r.in(unitPath).run(other, "tcp4,127.0.0.1,9999"); got != "EPERM" {
		t.Fatalf("unit after the repair: %q, want EPERM", got)
	}
	r.guard = e.guard // the rig's cleanup closes it
}
