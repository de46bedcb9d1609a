package controller

import (
	"fmt"
	"time"

	"github.com/egressd/egressd/internal/backoff"
	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/internal/phase"
	"github.com/egressd/egressd/ruleset"
	"go.uber.org/zap"
)

// applyBackoff spaces the retries of a failed apply.
var applyBackoff = backoff.Exp{Base: time.Second, Max: 30 * time.Second}

// applier brings the kernel to a desired state and keeps it there: it
// renders (remembering unchanged allowlists' sets), applies in full or as an
// element delta, backs off after failures, verifies and repairs drift
// (drift.go) and carries the deny counters over full rebuilds. The loop's
// goroutine owns it.
type applier struct {
	o        *Options
	deny     *denyCounters
	renderer ruleset.Renderer

	applied    *ruleset.Plan // what the kernel holds; nil forces a full apply
	generation uint64
	retry      backoff.Retry // after apply failures
	lastApply  time.Time
	verifyAt   time.Time  // next verification of the kernel state
	drift      driftState // the drift repair's memory (drift.go)
	ownership  bool       // the table's ownership was logged
	// renewedOnly: the last apply only renewed element lifetimes, which
	// the state file does not hold (publisher.renewed).
	renewedOnly bool
}

func newApplier(o *Options, deny *denyCounters) *applier {
	return &applier{o: o, deny: deny, retry: backoff.Retry{Exp: applyBackoff, Now: func() time.Time { return o.Now() }}}
}

// sync renders d and applies it: a full rebuild when nothing is known to be
// applied or the structure changed, else an element delta. applied says
// whether the kernel changed.
func (a *applier) sync(d ruleset.Desired) (applied bool, err error) {
	endRender := phase.Start("render")
	plan := a.renderer.Render(d)
	endRender()
	start := time.Now()
	kind := "delta"
	var changed int
	a.renewedOnly = false
	if a.applied == nil || !ruleset.SameStructure(*a.applied, plan) {
		kind, changed = "full", plan.Elements()
		err = a.applyFull(plan)
	} else {
		endDiff := phase.Start("diff")
		d := ruleset.Diff(*a.applied, plan)
		endDiff()
		add, del := ruleset.CgroupDelta(a.applied.Cgroups, plan.Cgroups)
		if len(d) == 0 && len(add)+len(del) == 0 {
			return false, nil
		}
		changed = d.Elements() + len(add) + len(del)
		a.renewedOnly = len(add)+len(del) == 0 && renewsOnly(d)
		if len(d) > 0 {
			err = a.o.Kernel.ApplyDelta(plan, d)
		}
		if err == nil && len(add)+len(del) > 0 {
			err = a.applyCgroups(plan, add, del)
		}
	}
	if kind == "full" {
		a.drift.fullTook = time.Since(start) // spaces restores of a removed table
	}
	a.o.Metrics.Applied(kind, err, float64(time.Now().UnixNano())/1e9)
	if err != nil {
		a.applied = nil // unknown kernel state: the next attempt rebuilds
		wait := a.retry.Fail()
		a.o.Log.Error("applying the ruleset failed; the kernel keeps its previous state", event.Field(event.ApplyFailed),
			zap.String("kind", kind), zap.Error(err), zap.Int("failures", a.retry.Failures()), zap.Duration("retry_in", wait))
		return false, err
	}
	a.retry.Reset()
	a.applied = &plan
	a.lastApply = a.o.Now()
	if a.o.Metrics != nil {
		sizes := map[[2]string]int{}
		for _, al := range plan.Allowlists {
			id4, id6 := ruleset.SetIDs(al.Allowlist, al.Subject.Kind)
			sizes[[2]string{al.Allowlist, "ipv4"}] = len(plan.Sets[id4.Name()])
			sizes[[2]string{al.Allowlist, "ipv6"}] = len(plan.Sets[id6.Name()])
		}
		a.o.Metrics.SetElements(sizes)
	}
	a.generation++
	a.o.Log.Info("ruleset applied", event.Field(event.RulesetApplied), zap.Uint64("generation", a.generation), zap.String("kind", kind),
		zap.Int("elements", plan.Elements()), zap.Int("changed", changed), zap.Int("allowlists", len(plan.Allowlists)),
		zap.Duration("duration", time.Since(start)))
	return true, nil
}

// renewsOnly reports whether d only renews lifetimes: no element added or
// deleted.
func renewsOnly(d ruleset.Delta) bool {
	for _, sd := range d {
		if len(sd.Add)+len(sd.Del) > 0 {
			return false
		}
	}
	return true
}

// applyCgroups changes the cgroup map (a unit started, stopped or
// restarted); a kernel that cannot change it alone is rebuilt.
func (a *applier) applyCgroups(plan ruleset.Plan, add, del []ruleset.Cgroup) error {
	if w, ok := a.o.Kernel.(CgroupWriter); ok {
		return w.ApplyCgroups(plan, add, del)
	}
	return a.applyFull(plan)
}

// status is systemd's STATUS= for the plan in force.
func (a *applier) status() string {
	return fmt.Sprintf("STATUS=enforcing %d allowlists, %d elements (generation %d)", len(a.applied.Allowlists), a.applied.Elements(), a.generation)
}

// applyFull replaces the kernel's table with the plan: by Restore when the
// table was found removed (falling back to ApplyFull if that fails),
// otherwise by ApplyFull, carrying the deny counters over.
func (a *applier) applyFull(plan ruleset.Plan) error {
	if a.drift.restoring {
		a.drift.restoring = false
		if r, ok := a.o.Kernel.(Restorer); ok {
			err := r.Restore(plan)
			if err == nil {
				// The counters went with the removed table; the DNS
				// proxy's answers are written again.
				if a.o.DNSProxy != nil {
					if err := a.o.DNSProxy.Refill(); err != nil {
						a.o.Log.Error("the DNS proxy's answers could not be restored; they are written again as queries come", event.Field(event.DNSProxyFailed), zap.Error(err))
					}
				}
				return nil
			}
			a.o.Log.Debug("fast restore failed; applying in full", event.Field(event.DriftRepaired), zap.Error(err))
		}
	}
	a.deny.carry(a.o.Kernel)
	return a.o.Kernel.ApplyFull(plan)
}
