package startgate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/ruleset"
)

type cgroupAnswer struct {
	cgs []ruleset.Cgroup
	err error
}

// unitKernel answers ReadCgroups from a script (one answer per call, the
// last repeated) and ReadUnits from a fixed map.
type unitKernel struct {
	answers  []cgroupAnswer
	calls    int
	units    map[string]string
	unitsErr error
}

func (k *unitKernel) ReadCgroups() ([]ruleset.Cgroup, error) {
	a := k.answers[min(k.calls, len(k.answers)-1)]
	k.calls++
	return a.cgs, a.err
}

func (k *unitKernel) ReadUnits() (map[string]string, error) { return k.units, k.unitsErr }

func TestUnitRestricted(t *testing.T) {
	units := map[string]string{"web": "web.service", "db": "db.service"}
	mapped := []ruleset.Cgroup{{ID: 7, Allowlist: "web"}, {ID: 9, Allowlist: "db"}}
	for _, c := range []struct {
		name     string
		answer   cgroupAnswer
		unitsErr error
		id       uint64
		want     bool
		err      bool
	}{
		{"no table yet", cgroupAnswer{err: ruleset.ErrNoTable}, nil, 7, false, false},
		{"mapped to the unit's allowlist", cgroupAnswer{cgs: mapped}, nil, 7, true, false},
		{"another cgroup", cgroupAnswer{cgs: mapped}, nil, 8, false, false},
		// The id is mapped, but to another unit's allowlist: not this unit's restriction.
		{"mapped to another unit", cgroupAnswer{cgs: mapped}, nil, 9, false, false},
		{"cgroup map unreadable", cgroupAnswer{err: errors.New("netlink: boom")}, nil, 7, false, true},
		{"units unreadable", cgroupAnswer{cgs: mapped}, errors.New("netlink: boom"), 7, false, true},
	} {
		k := &unitKernel{answers: []cgroupAnswer{c.answer}, units: units, unitsErr: c.unitsErr}
		got, err := UnitRestricted(k, "web.service", c.id)
		if got != c.want || (err != nil) != c.err {
			t.Errorf("%s: UnitRestricted = %v, %v; want %v, error %v", c.name, got, err, c.want, c.err)
		}
	}
}

func TestWaitUnitPassesOnceMapped(t *testing.T) {
	k := &unitKernel{answers: []cgroupAnswer{{err: ruleset.ErrNoTable}, {}, {cgs: []ruleset.Cgroup{{ID: 7, Allowlist: "web"}}}},
		units: map[string]string{"web": "web.service"}}
	if err := WaitUnit(context.Background(), k, "web.service", 7, nil, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if k.calls != 3 {
		t.Errorf("%d reads, want 3 (no table, not yet, mapped)", k.calls)
	}
}

// The deadline passes with the cgroup unmapped: ErrNotEnforced (the unit
// does not start), naming the last read error when there was one.
func TestWaitUnitFailsClosed(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	k := &unitKernel{answers: []cgroupAnswer{{cgs: []ruleset.Cgroup{{ID: 8, Allowlist: "web"}}}}, units: map[string]string{"web": "web.service"}}
	if err := WaitUnit(ctx, k, "web.service", 7, nil, time.Hour); !errors.Is(err, ErrNotEnforced) || strings.Contains(err.Error(), "last read") {
		t.Errorf("WaitUnit = %v, want ErrNotEnforced", err)
	}
	k = &unitKernel{answers: []cgroupAnswer{{err: errors.New("netlink: boom")}}}
	if err := WaitUnit(ctx, k, "web.service", 7, nil, time.Hour); !errors.Is(err, ErrNotEnforced) || !strings.Contains(err.Error(), "last read: netlink: boom") {
		t.Errorf("WaitUnit = %v, want ErrNotEnforced with the last read error", err)
	}
}

func TestWaitUnitGivesUpWithoutPrivilege(t *testing.T) {
	k := &unitKernel{answers: []cgroupAnswer{{err: fmt.Errorf("list map: %w", syscall.EPERM)}}}
	err := WaitUnit(context.Background(), k, "web.service", 7, nil, time.Hour) // would block for an hour if it retried
	if err == nil || errors.Is(err, ErrNotEnforced) || !errors.Is(err, syscall.EPERM) || !strings.Contains(err.Error(), "ExecStartPre=+") {
		t.Fatalf("WaitUnit = %v, want the permission error at once, with the fix", err)
	}
}
