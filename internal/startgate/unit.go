package startgate

import (
	"context"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"strings"
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

// ListenMapped reports whether the listen restriction (internal/bindguard's
// pinned cgroup map) holds the cgroup id now. nil when the unit's allowlist
// has no listen: key.
type ListenMapped func(id uint64) (bool, error)

// WaitUnit is Wait for a unit's cgroup: mapped in nftables and, when the
// unit's allowlist has a listen: key (listen non-nil), in the listen
// restriction too. egressd maps a new cgroup in both at the same apply; a
// listen restriction that cannot be loaded keeps the gate shut (fail
// closed: the unit would otherwise listen on any port).
func WaitUnit(ctx context.Context, k UnitsReader, unit string, id uint64, listen ListenMapped, poll time.Duration) error {
	var inListen func() (bool, error)
	if listen != nil {
		inListen = func() (bool, error) { return listen(id) }
	}
	return wait(ctx, func() (bool, error) { return UnitRestricted(k, unit, id) }, inListen, fmt.Sprintf("unit %s (cgroup %d)", unit, id), poll)
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
