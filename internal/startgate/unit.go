package startgate

import (
	"context"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/egressd/egressd/internal/cgroup"
	"github.com/egressd/egressd/ruleset"
)

// The start gate of a unit allowlist (docs/units.md): ExecStartPre=+egressd
// wait --unit NAME runs inside the unit's new cgroup and returns once the
// kernel maps that cgroup to the unit's allowlist. Nothing else of the unit
// runs before it (harden lists it first), so the unit's first packet is
// already judged by its allowlist.

// UnitsReader reads the kernel's cgroup map and its unit allowlists
// (ruleset.Netlink satisfies it).
type UnitsReader interface {
	ReadCgroups() ([]ruleset.Cgroup, error)
	ReadUnits() (map[string]string, error)
}

// UnitRestricted reports whether the cgroup id is mapped, in the kernel now,
// to an allowlist of unit.
func UnitRestricted(k UnitsReader, unit string, id uint64) (bool, error) {
	cgs, err := k.ReadCgroups()
	if errors.Is(err, ruleset.ErrNoTable) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	units, err := k.ReadUnits()
	if err != nil {
		return false, err
	}
	for _, c := range cgs {
		if c.ID == id && units[c.Allowlist] == unit {
			return true, nil
		}
	}
	return false, nil
}

// WaitUnit is Wait for a unit's cgroup.
func WaitUnit(ctx context.Context, k UnitsReader, unit string, id uint64, poll time.Duration) error {
	t := time.NewTicker(poll)
	defer t.Stop()
	var last error
	for {
		ok, err := UnitRestricted(k, unit, id)
		if ok {
			return nil
		}
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
			return fmt.Errorf("read the nftables cgroup map: %w (needs CAP_NET_ADMIN: run the gate as ExecStartPre=+)", err)
		}
		last = err
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("unit %s (cgroup %d): %w (last read: %v)", unit, id, ErrNotEnforced, last)
			}
			return fmt.Errorf("unit %s (cgroup %d): %w", unit, id, ErrNotEnforced)
		case <-t.C:
		}
	}
}

// UnitCgroup finds the cgroup of unit that self (the caller's cgroup,
// relative to the hierarchy's root, as /proc/self/cgroup says) is in: self
// or its nearest ancestor named unit (a Delegate=yes unit runs its control
// processes in a sub-cgroup). An error when the caller is not in the unit:
// the gate must run as the unit's own ExecStartPre=.
func UnitCgroup(root, self, unit string) (string, uint64, error) {
	for p := strings.Trim(self, "/"); p != "" && p != "."; p = path.Dir(p) {
		if path.Base(p) == unit {
			full := filepath.Join(root, p)
			id, err := cgroup.ID(full)
			if err != nil {
				return "", 0, err
			}
			return p, id, nil
		}
	}
	return "", 0, fmt.Errorf("this process (cgroup /%s) does not run in unit %s: the gate must be that unit's ExecStartPre=", self, unit)
}
