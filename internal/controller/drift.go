package controller

import (
	"fmt"
	"github.com/egressd/egressd/internal/backoff"
	"github.com/egressd/egressd/internal/event"
	"time"

	"github.com/egressd/egressd/ruleset"
	"go.uber.org/zap"
)

// Drift repair: another tool (nft flush ruleset, a firewalld reload, a
// restart of nftables.service, a hand-typed nft command) may change the
// table. The loop verifies the kernel against the last applied plan soon
// after any foreign nftables transaction and every VerifyEvery, and rebuilds
// the table when they differ.
//
// With an owned table (ruleset.Netlink on Linux >= 6.9: NFT_TABLE_F_OWNER |
// NFT_TABLE_F_PERSIST) the kernel refuses every other process's change and
// `nft flush ruleset` skips the table, so nothing drifts while the daemon
// runs; this loop stays as a backstop, and is what keeps the table on older
// kernels (table_unowned).
//
// Two kinds of drift are told apart:
//
//   - The table is gone (nft flush ruleset, a firewall reload that starts
//     from an empty ruleset, a tool deleting it in a loop). Protected users
//     are unrestricted until it is back, so it is restored every time, at
//     once: on each foreign transaction a cheap presence check (one netlink
//     request) runs before the settle delay. Restores are only spaced
//     enough to keep the host responsive (restoreGap), and logged one by one up to
//     restoreLogBurst per restoreLogWindow, then as one drift_repeating
//     summary per window: a flusher cannot flood the log, and the alert
//     never stops while it goes on.
//   - Objects inside the table changed (elements, rules, a chain): another
//     controller may be fighting over them, and repairing each change would
//     loop. More than fightRepairs such repairs within fightWindow hold them
//     back, doubling the hold each time up to maxHold, with drift_repeating.
//     A missing table is restored during a hold too.
const (
	fightRepairs = 5
	fightWindow  = time.Minute
	firstHold    = 10 * time.Second
	maxHold      = 5 * time.Minute
	verifyDelay  = 100 * time.Millisecond // lets a burst of foreign changes settle

	restoreMinGap    = 20 * time.Millisecond
	restoreMaxGap    = 200 * time.Millisecond // well inside the 0.5 s after which a flusher must have no effect
	restoreLogBurst  = 5
	restoreLogWindow = 10 * time.Second
)

// fullVerifyEvery is the backstop period of the full read-back when the
// kernel's change monitor vouches that nothing else changed nftables
// (MonitorCaughtUp): at most this long between two full verifications.
const fullVerifyEvery = 10 * time.Minute

// MonitorCaughtUp is implemented by kernels whose change monitor can tell
// that it has read every nftables transaction committed up to now
// (ruleset.Netlink: the generation now is the last one it read). Each of
// them was the daemon's own or reached KernelEvents; with none reported
// since the last full verification, the periodic one reads only the
// generation (docs/security.md, "Verification").
type MonitorCaughtUp interface {
	CaughtUp() (bool, error)
}

// Restorer is implemented by kernels that can recreate a removed table
// faster than a full apply (ruleset.Netlink: no delete, so no wait for the
// kernel's grace periods). It fails, changing nothing, if the table exists.
type Restorer interface {
	Restore(p ruleset.Plan) error
}

// TablePresence is implemented by kernels that can tell cheaply whether the
// table exists (ruleset.Netlink). Without it, a missing table is found by
// the full verification, after the settle delay.
type TablePresence interface {
	TablePresent() (bool, error)
}

// TableDormancy is implemented by kernels that can tell cheaply whether the
// table is dormant (ruleset.Netlink): a dormant table enforces nothing, and
// is restored at once as a removed one is, during a hold too.
type TableDormancy interface {
	TableDormant() (bool, error)
}

// TableOwner is implemented by kernels whose table can be owned by the
// daemon's netlink socket (ruleset.Netlink on Linux >= 6.9): another process
// then cannot change or remove it, `nft flush ruleset` included.
type TableOwner interface {
	Ownership() (owned bool, why string, err error)
}

// logOwnership says once, after the first apply, when the table is not
// owned: a removed table is then restored, but protected users are
// unrestricted until the restore takes effect.
func (a *applier) logOwnership() {
	o, ok := a.o.Kernel.(TableOwner)
	if !ok || a.ownership {
		return
	}
	owned, why, err := o.Ownership()
	if err != nil {
		return // asked again after the next apply
	}
	a.ownership = true
	if !owned {
		a.o.Log.Warn("the table is not owned by egressd: any process with CAP_NET_ADMIN can remove it "+
			"(nft flush ruleset); egressd restores it at once, but protected users are unrestricted until then",
			event.Field(event.TableUnowned), zap.String("reason", why))
	}
}

// driftState is what the drift repair remembers; the applier owns it.
type driftState struct {
	holdUntil time.Time   // object repairs are held back until then (another controller fights us)
	repairs   []time.Time // recent object repairs, for the fight detector

	urgent      bool          // a missing table is to be restored at verifyAt
	restoring   bool          // the next full apply restores a missing table
	lastRestore time.Time     // last restore of a missing table
	fullTook    time.Duration // duration of the last full apply, to space restores
	logFrom     time.Time     // start of the current restore log window
	logged      int           // restores logged one by one in the window
	unlogged    int           // restores counted into the window's summary
	restores    int           // restores in the window

	foreign bool      // another process's transaction (or lost notices) since the last full verification
	fullAt  time.Time // the next full verification at the latest (fullVerifyEvery)
}

// holdBackoff spaces object repairs while another process fights over them.
var holdBackoff = backoff.Exp{Base: firstHold, Max: maxHold}

var (
	tableMissing = ruleset.Finding{Kind: "table_missing", Object: "inet " + ruleset.TableName, Detail: "the table does not exist"}
	tableDormant = ruleset.Finding{Kind: "table_dormant", Object: "inet " + ruleset.TableName, Detail: "the table is dormant: none of its chains sees a packet"}
)

// disarmed reports whether the findings say that egressd's table is gone
// or dormant (enforcing nothing), not that objects in it were changed.
func disarmed(findings []ruleset.Finding) bool {
	for _, f := range findings {
		if f.Kind == tableMissing.Kind || f.Kind == tableDormant.Kind {
			return true
		}
	}
	return false
}

// tableDisarmed asks the kernel, cheaply, whether the table is missing or
// dormant: the finding, or nil when it is armed or the kernel cannot tell.
func (a *applier) tableDisarmed() []ruleset.Finding {
	if a.tableGone() {
		return []ruleset.Finding{tableMissing}
	}
	if d, ok := a.o.Kernel.(TableDormancy); ok {
		if dormant, err := d.TableDormant(); err == nil && dormant {
			return []ruleset.Finding{tableDormant}
		}
	}
	return nil
}

// tableGone asks the kernel, cheaply, whether the table is missing. False
// when the kernel cannot tell.
func (a *applier) tableGone() bool {
	p, ok := a.o.Kernel.(TablePresence)
	if !ok {
		return false
	}
	present, err := p.TablePresent()
	return err == nil && !present
}

// restoreGap is the least time between two restores of a missing table:
// as long as the last full apply took (so that a table removed in a loop
// costs the host at most about half a core), within [restoreMinGap,
// restoreMaxGap]. The duration includes waiting for another process's
// transaction to end, so it is an upper bound of the work.
func (a *applier) restoreGap() time.Duration {
	return max(restoreMinGap, min(a.drift.fullTook, restoreMaxGap))
}

// kernelChanged is called when another process committed an nftables transaction.
func (a *applier) kernelChanged() {
	now := a.o.Now()
	a.drift.foreign = true
	if a.applied != nil {
		if fs := a.tableDisarmed(); fs != nil {
			// Restore now (the loop's sync follows), or as soon as the
			// spacing allows: the loop then wakes at verifyAt without
			// coalescing.
			a.restore(now, fs)
			return
		}
	}
	at := now.Add(verifyDelay)
	if a.verifyAt.IsZero() || at.Before(a.verifyAt) {
		a.verifyAt = at
	}
}

// verify compares the kernel with the applied plan; on drift it logs what
// it found and forces a full rebuild (unless object repairs are held back).
func (a *applier) verify() {
	now := a.o.Now()
	a.verifyAt = now.Add(a.o.VerifyEvery)
	urgent := a.drift.urgent
	a.drift.urgent = false
	v, ok := a.o.Kernel.(ruleset.Verifier)
	if !ok || a.applied == nil {
		return // nothing known to be applied: the next sync rebuilds anyway
	}
	var findings []ruleset.Finding
	if _, cheap := a.o.Kernel.(TablePresence); cheap && (urgent || now.Before(a.drift.holdUntil)) {
		// A restore that was spaced out, or a hold: object repairs are
		// held back, a missing table never is.
		switch fs := a.tableDisarmed(); {
		case fs != nil:
			findings = fs
		case now.Before(a.drift.holdUntil):
			a.verifyAt = a.drift.holdUntil
			return
		}
	}
	if findings == nil && !urgent && a.quiet(now) {
		return // nothing but egressd changed nftables since the last full verification
	}
	if findings == nil {
		a.drift.foreign = false
		a.drift.fullAt = now.Add(max(fullVerifyEvery, a.o.VerifyEvery))
		var err error
		if findings, err = v.Verify(*a.applied); err != nil {
			if a.tableGone() {
				// Removed while being read: restore, not rebuild.
				a.restore(now, []ruleset.Finding{tableMissing})
				return
			}
			a.o.Log.Warn("cannot verify the kernel state; rebuilding to be safe", event.Field(event.VerifyFailed), zap.Error(err))
			a.applied = nil
			return
		}
	}
	// A table removed while it was being read shows as missing pieces.
	if disarmed(findings) {
		a.restore(now, findings)
		return
	}
	if len(findings) > 0 && a.tableGone() {
		a.restore(now, []ruleset.Finding{tableMissing})
		return
	}
	if len(findings) == 0 || now.Before(a.drift.holdUntil) {
		return
	}
	// Count this repair and detect a fight.
	recent := a.drift.repairs[:0]
	for _, t := range a.drift.repairs {
		if now.Sub(t) < fightWindow {
			recent = append(recent, t)
		}
	}
	a.drift.repairs = append(recent, now)
	found := findingStrings(findings)
	if len(a.drift.repairs) > fightRepairs {
		hold := holdBackoff.Delay(len(a.drift.repairs) - fightRepairs)
		a.drift.holdUntil = now.Add(hold)
		a.o.Log.Error(fmt.Sprintf("the table keeps being changed by another process (%d repairs in %s); "+
			"another firewall manager may be fighting egressd over it. Repairing now, then holding repairs of "+
			"changed objects back (a removed table is still restored at once)", len(a.drift.repairs), fightWindow),
			event.Field(event.DriftRepeating), zap.Strings("found", found), zap.Duration("hold", hold))
	}
	a.o.Log.Warn("the kernel state differed from egressd's; restoring it", event.Field(event.DriftRepaired),
		zap.Strings("found", found), zap.Int("findings", len(findings)))
	a.o.Metrics.DriftRepaired()
	a.applied = nil // the next sync rebuilds in full
}

// quiet reports whether the periodic verification may skip the read-back:
// the kernel's monitor has read every transaction up to now, none was
// another process's (or lost) since the last full verification, and that
// was less than fullVerifyEvery ago.
func (a *applier) quiet(now time.Time) bool {
	m, ok := a.o.Kernel.(MonitorCaughtUp)
	if !ok || a.o.KernelEvents == nil || a.drift.foreign || a.drift.fullAt.IsZero() || !now.Before(a.drift.fullAt) {
		return false
	}
	if caught, err := m.CaughtUp(); err != nil || !caught {
		return false
	}
	// A table its foreign owner took with it when it exited left no
	// transaction to report (red team rtv): look, cheaply, that it is
	// there and armed; when the kernel cannot say, read back.
	if p, ok := a.o.Kernel.(TablePresence); ok {
		if present, err := p.TablePresent(); err != nil || !present {
			return false
		}
	}
	if d, ok := a.o.Kernel.(TableDormancy); ok {
		if dormant, err := d.TableDormant(); err != nil || dormant {
			return false
		}
	}
	return true
}

func findingStrings(findings []ruleset.Finding) []string {
	found := make([]string, len(findings))
	for i, f := range findings {
		found[i] = f.String()
	}
	return found
}

// restore schedules the rebuild of a missing table, spaced by restoreGap.
func (a *applier) restore(now time.Time, findings []ruleset.Finding) {
	if next := a.drift.lastRestore.Add(a.restoreGap()); now.Before(next) {
		a.verifyAt, a.drift.urgent = next, true
		return
	}
	a.drift.lastRestore = now
	a.o.Metrics.DriftRepaired()
	a.applied = nil // the sync that follows in this loop turn rebuilds in full
	a.drift.restoring = true
	d := &a.drift
	a.flushRestoreLog(now)
	if d.logFrom.IsZero() {
		d.logFrom = now
	}
	d.restores++
	if d.logged < restoreLogBurst {
		d.logged++
		a.o.Log.Warn("egressd's table was removed (or made dormant) by another process; restoring it at once", event.Field(event.DriftRepaired),
			zap.Strings("found", findingStrings(findings)), zap.Int("findings", len(findings)))
		if d.logged == restoreLogBurst {
			a.o.Log.Error(fmt.Sprintf("egressd's table keeps being removed (%d times since %s); restoring it every time, "+
				"and from now on logging one summary per %s. Find the process that flushes the ruleset",
				d.restores, d.logFrom.Format(time.RFC3339), restoreLogWindow),
				event.Field(event.DriftRepeating), zap.Int("restores", d.restores), zap.Strings("found", []string{tableMissing.String()}))
		}
		return
	}
	d.unlogged++
}

// flushRestoreLog ends the restore log window once it is over: restores
// that were not logged one by one are logged as one summary.
func (a *applier) flushRestoreLog(now time.Time) {
	d := &a.drift
	if d.logFrom.IsZero() || now.Sub(d.logFrom) < restoreLogWindow {
		return
	}
	if d.unlogged > 0 {
		a.o.Log.Error(fmt.Sprintf("egressd's table was removed and restored %d times in the last %s",
			d.restores, now.Sub(d.logFrom).Round(time.Second)),
			event.Field(event.DriftRepeating), zap.Int("restores", d.restores), zap.Duration("window", now.Sub(d.logFrom)),
			zap.Strings("found", []string{tableMissing.String()}))
		// Still going on: the next window logs only its summary.
		d.logFrom, d.logged, d.unlogged, d.restores = now, restoreLogBurst, 0, 0
		return
	}
	d.logFrom, d.logged, d.unlogged, d.restores = time.Time{}, 0, 0, 0
}

// restoreLogDue is when the restore log window ends, or zero.
func (a *applier) restoreLogDue() time.Time {
	if a.drift.unlogged == 0 {
		return time.Time{}
	}
	return a.drift.logFrom.Add(restoreLogWindow)
}
