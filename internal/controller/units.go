package controller

import (
	"reflect"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/cgroup"
	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/ruleset"
	"go.uber.org/zap"
)

// unitScanEvery is how often the cgroup tree is scanned while unit
// allowlists exist: a restarted unit's new cgroup is mapped within it (the
// start gate, `egressd wait --unit`, holds the unit until then).
const unitScanEvery = 100 * time.Millisecond

// unitFollower finds the current cgroups of restricted units (docs/units.md)
// and remembers them between scans. The loop's goroutine owns it.
type unitFollower struct {
	o       *Options
	root    string            // the cgroup2 mount; "" until found
	failed  bool              // the failure to find it was logged
	units   map[string]string // unit -> allowlist, of the configuration in force
	cgroups []ruleset.Cgroup
	paths   map[uint64]string // id -> path, for the log
	scanAt  time.Time
}

// current returns the restricted units' cgroups, scanning the tree when a
// scan is due or the units changed.
func (u *unitFollower) current(cfg *config.Config) []ruleset.Cgroup {
	units := map[string]string{}
	for _, a := range cfg.Allowlists {
		if a.IsUnit() {
			units[a.Unit] = a.Name
		}
	}
	if len(units) == 0 {
		u.units, u.cgroups = nil, nil
		return nil
	}
	now := u.o.Now()
	if reflect.DeepEqual(units, u.units) && now.Before(u.scanAt) {
		return u.cgroups
	}
	u.units, u.scanAt = units, now.Add(unitScanEvery)
	if u.root == "" {
		root := u.o.CgroupRoot
		var err error
		if root == "" {
			root, err = cgroup.Root()
		}
		if err != nil {
			if !u.failed {
				u.failed = true
				u.o.Log.Error("cannot follow unit cgroups: unit allowlists are not enforced", event.Field(event.UnitCgroup), zap.Error(err))
			}
			return nil
		}
		u.root = root
	}
	found, err := cgroup.Restricted(u.root, cfg)
	if err != nil {
		// Keep what is mapped: a cgroup that vanished takes its id with it,
		// and a stale id matches nothing.
		u.o.Log.Error("scanning unit cgroups failed", event.Field(event.UnitCgroup), zap.Error(err))
		return u.cgroups
	}
	cgs, paths := cgroups(found)
	add, del := ruleset.CgroupDelta(u.cgroups, cgs)
	for _, c := range del {
		u.o.Log.Info("a restricted unit's cgroup went", event.Field(event.UnitCgroup), zap.String("allowlist", c.Allowlist),
			zap.String("unit", unitOf(cfg, c.Allowlist)), zap.String("cgroup", u.paths[c.ID]), zap.Uint64("id", c.ID), zap.String("change", "removed"))
	}
	for _, c := range add {
		u.o.Log.Info("a restricted unit's cgroup appeared", event.Field(event.UnitCgroup), zap.String("allowlist", c.Allowlist),
			zap.String("unit", unitOf(cfg, c.Allowlist)), zap.String("cgroup", paths[c.ID]), zap.Uint64("id", c.ID), zap.String("change", "added"))
	}
	u.cgroups, u.paths = cgs, paths
	return cgs
}

// due is when the next scan is due; zero without unit allowlists.
func (u *unitFollower) due() time.Time {
	if len(u.units) == 0 {
		return time.Time{}
	}
	return u.scanAt
}

func unitOf(cfg *config.Config, allowlist string) string {
	for _, a := range cfg.Allowlists {
		if a.Name == allowlist {
			return a.Unit
		}
	}
	return ""
}

// CgroupWriter is implemented by kernels that change the cgroup map alone
// (ruleset.Netlink, ruleset.Fake). Without it, a cgroup change rebuilds.
type CgroupWriter interface {
	ApplyCgroups(p ruleset.Plan, add, del []ruleset.Cgroup) error
}

// cgroups converts found cgroups into the plan's, with their paths.
func cgroups(found []cgroup.Unit) ([]ruleset.Cgroup, map[uint64]string) {
	var cgs []ruleset.Cgroup
	paths := map[uint64]string{}
	for _, f := range found {
		cgs = append(cgs, ruleset.Cgroup{ID: f.ID, Allowlist: f.Allowlist})
		paths[f.ID] = f.Path
	}
	return cgs, paths
}
