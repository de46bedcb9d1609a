package check

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/ruleset"
)

// IsUnitName reports whether check --explain was asked about a unit
// (NAME.service, NAME.slice) rather than a user.
func IsUnitName(s string) bool {
	return (strings.HasSuffix(s, ".service") || strings.HasSuffix(s, ".slice")) && config.ValidUnit(s) == nil
}

// UnitKernel is implemented by kernels that read unit allowlists back
// (ruleset.Netlink, ruleset.Fake).
type UnitKernel interface {
	ReadUnits() (map[string]string, error)
	ReadCgroups() ([]ruleset.Cgroup, error)
}

// explainUnit answers for a unit: its allowlist in the kernel, whether its
// cgroup is mapped now (a unit that is not running has none: its next
// start is held by its gate until it is), then the target as for a user.
func explainUnit(ctx context.Context, o Options, cfg *config.Config, x *Explanation, e config.Entry, unit string) (*Explanation, error) {
	x.Unit, x.User = unit, ""
	uk, ok := o.Kernel.(UnitKernel)
	if !ok {
		return nil, errors.New("this kernel reader cannot read unit allowlists")
	}
	units, err := uk.ReadUnits()
	if errors.Is(err, ruleset.ErrNoTable) {
		x.Verdict, x.Reason = "unrestricted", "table inet egressd does not exist: nobody is restricted"
		return x, nil
	}
	if err != nil {
		return nil, err
	}
	for a, u := range units {
		if u == unit {
			x.Allowlist = a
		}
	}
	if x.Allowlist == "" {
		x.Verdict, x.Reason = "unrestricted", fmt.Sprintf("unit %s has no allowlist in the kernel: egressd does not restrict it", unit)
		for _, a := range cfg.Allowlists {
			if a.Unit == unit {
				x.Reason += fmt.Sprintf(" (but %s names this unit: run egressd check)", a.File)
			}
		}
		return x, nil
	}
	var al *config.Allowlist
	for _, a := range cfg.Allowlists {
		if a.Name == x.Allowlist {
			al = a
		}
	}
	sets, err := o.Kernel.ReadSets()
	if err != nil {
		return nil, err
	}
	cgs, err := uk.ReadCgroups()
	if err != nil {
		return nil, err
	}
	running := false
	for _, c := range cgs {
		running = running || c.Allowlist == x.Allowlist
	}
	x, err = judge(ctx, o, cfg, x, e, al, sets, al != nil && al.Mode == config.ModeAudit)
	if err == nil && !running {
		x.Reason += fmt.Sprintf("; %s is not running now (no cgroup of it is restricted): its start gate holds its next start until egressd restricts its new cgroup", unit)
	}
	return x, err
}
