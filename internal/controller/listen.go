package controller

import (
	"sort"

	"github.com/egressd/egressd/internal/bindguard"
	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/internal/policy"
	"go.uber.org/zap"
)

// ListenEnforcer keeps allowlists' listen: restriction in the kernel
// (internal/bindguard.Enforcer).
type ListenEnforcer interface {
	Apply(bindguard.Policy, bindguard.Cgroups) error
	// Repair puts back what another process undid (detached programs,
	// removed pins, changed map entries) and says what it found.
	Repair() ([]string, error)
	Remove() error
	// Pinned is where the restriction is pinned once loaded, else "".
	Pinned() string
}

// listenState is the listen restriction's part of the loop: what the kernel
// was last given and why it could not take it. The loop's goroutine owns it.
type listenState struct {
	err string // the failure last logged; "" while enforced
}

// syncListen gives the kernel p, the listen restriction of the configuration
// in force (policy.Build). A kernel that cannot take it is logged once per reason
// (listen_unenforced), published for check, and retried at every apply;
// egress enforcement does not wait for it.
//
// Unit allowlists' rules are keyed by their units' current cgroups (the
// unit follower's), so a restarted unit's new cgroup is restricted at the
// same apply that maps it in nftables; the start gate (egressd wait --unit)
// waits for both.
func (c *Controller) syncListen(d policy.Desired) {
	p, cg := d.Listen, d.ListenCgroups
	c.attr.setCgroups(c.cfg, d.Ruleset.Cgroups)
	var err error
	switch {
	case c.o.Listen != nil:
		err = c.o.Listen.Apply(p, cg)
	case len(p) > 0 || len(cg) > 0:
		err = errListenUnavailable
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg == c.listen.err {
		return
	}
	c.listen.err = msg
	c.pub.changed(false)
	if err != nil {
		c.o.Log.Error("listen: is not enforced: those services may listen on any port", event.Field(event.ListenUnenforced),
			zap.Strings("allowlists", c.listenAllowlists()), zap.Error(err))
	}
}

// verifyListen is the listen restriction's part of the periodic verify:
// what root (or a tool) detached, unpinned or changed is put back, as a
// drift_repaired event; a repair that fails is retried at the next verify
// and at every apply.
func (c *Controller) verifyListen() {
	if c.o.Listen == nil {
		return
	}
	found, err := c.o.Listen.Repair()
	if len(found) > 0 {
		c.o.Log.Warn("the listen restriction differed from egressd's; restoring it", event.Field(event.DriftRepaired),
			zap.Strings("found", found), zap.Int("findings", len(found)), zap.Bool("repaired", err == nil))
		c.o.Metrics.DriftRepaired()
	}
	if err != nil {
		c.o.Log.Error("cannot restore the listen restriction: listen: may not be enforced", event.Field(event.ListenUnenforced),
			zap.Strings("allowlists", c.listenAllowlists()), zap.Error(err))
		c.listen.err = err.Error()
		c.pub.changed(false)
	}
}

// listenAllowlists names the allowlists with a listen: key.
func (c *Controller) listenAllowlists() []string {
	var out []string
	for _, a := range c.cfg.Allowlists {
		if a.Listen != nil {
			out = append(out, a.Name)
		}
	}
	sort.Strings(out)
	return out
}

type listenUnavailable struct{}

func (listenUnavailable) Error() string {
	return "this egressd has no listen enforcement (not started by egressd run)"
}

var errListenUnavailable error = listenUnavailable{}

// listenDir is where the restriction is pinned, for check; "" when not loaded.
func (c *Controller) listenDir() string {
	if c.o.Listen == nil {
		return ""
	}
	return c.o.Listen.Pinned()
}
