package controller

import (
	"fmt"
	"os"
	"time"

	"github.com/egressd/egressd/internal/state"
	"github.com/egressd/egressd/resolver"
	"github.com/egressd/egressd/ruleset"
	"go.uber.org/zap"
)

// Drift repair: another tool (nft flush ruleset, a firewalld reload, a
// restart of nftables.service, a hand-typed nft command) may change the
// table. The loop verifies the kernel against the last applied plan soon
// after any foreign nftables transaction and every VerifyEvery, and rebuilds
// the table when they differ.
//
// Two controllers fighting over the same objects would otherwise loop: more
// than fightRepairs repairs within fightWindow hold repairs back, doubling
// the hold each time up to maxHold, and log drift_repeating loudly.
const (
	fightRepairs = 5
	fightWindow  = time.Minute
	firstHold    = 10 * time.Second
	maxHold      = 5 * time.Minute
	verifyDelay  = 100 * time.Millisecond // lets a burst of foreign changes settle
)

// kernelChanged is called when another process committed an nftables transaction.
func (c *Controller) kernelChanged() {
	at := c.o.Now().Add(verifyDelay)
	if c.verifyAt.IsZero() || at.Before(c.verifyAt) {
		c.verifyAt = at
	}
}

// verify compares the kernel with the applied plan; on drift it logs what
// it found and forces a full rebuild (unless repairs are being held back).
func (c *Controller) verify() {
	now := c.o.Now()
	c.verifyAt = now.Add(c.o.VerifyEvery)
	v, ok := c.o.Kernel.(ruleset.Verifier)
	if !ok || c.applied == nil {
		return // nothing known to be applied: the next sync rebuilds anyway
	}
	if now.Before(c.holdUntil) {
		c.verifyAt = c.holdUntil
		return
	}
	findings, err := v.Verify(*c.applied)
	if err != nil {
		c.o.Log.Warn("cannot verify the kernel state; rebuilding to be safe", ev(EvVerifyFailed), zap.Error(err))
		c.applied = nil
		return
	}
	if len(findings) == 0 {
		return
	}
	// Count this repair and detect a fight.
	recent := c.repairs[:0]
	for _, t := range c.repairs {
		if now.Sub(t) < fightWindow {
			recent = append(recent, t)
		}
	}
	c.repairs = append(recent, now)
	found := make([]string, len(findings))
	for i, f := range findings {
		found[i] = f.String()
	}
	if len(c.repairs) > fightRepairs {
		hold := firstHold << min(len(c.repairs)-fightRepairs-1, 5)
		hold = min(hold, maxHold)
		c.holdUntil = now.Add(hold)
		c.o.Log.Error(fmt.Sprintf("the table keeps being changed by another process (%d repairs in %s); "+
			"another firewall manager may be fighting egressd over it. Repairing now, then holding repairs back", len(c.repairs), fightWindow),
			ev(EvDriftRepeating), zap.Strings("found", found), zap.Duration("hold", hold))
	}
	c.o.Log.Warn("the kernel state differed from egressd's; restoring it", ev(EvDriftRepaired),
		zap.Strings("found", found), zap.Int("findings", len(findings)))
	c.o.Metrics.DriftRepaired()
	c.applied = nil // the next sync rebuilds in full
}

// publish writes the state file for `egressd check`, at most once a second.
func (c *Controller) publish(force bool) {
	if c.o.StateDir == "" || (!c.dirty && !force) || c.applied == nil {
		return
	}
	now := c.o.Now()
	if !force && now.Before(c.publishAt) {
		return
	}
	c.publishAt = now.Add(time.Second)
	s := &state.State{
		Version: 1, PID: os.Getpid(), Started: c.started, Updated: now, Generation: c.generation, LastApply: c.lastApply,
		ConfigFile: c.cfg.File, ConfigHash: state.Hash(c.cfg), Plan: *c.applied,
		Names: map[string]state.Name{}, Users: c.users.UIDs, MissingUser: map[string]string{},
	}
	for n, err := range c.users.Missing {
		s.MissingUser[n] = err.Error()
	}
	for _, name := range c.cfg.Names() {
		var sn state.Name
		for _, a := range c.cache.Addrs(name) {
			sn.Addrs = append(sn.Addrs, a.String())
		}
		for _, k := range resolver.KeysFor(name) {
			if st, ok := c.cache.Status(k); ok {
				sn.Failing = sn.Failing || st.Failing
				sn.ServingStale = sn.ServingStale || st.ServingStale
				if st.LastOK.After(sn.LastOK) {
					sn.LastOK = st.LastOK
				}
				if st.LastErr != nil {
					sn.Error = st.LastErr.Error()
				}
			}
		}
		s.Names[name] = sn
	}
	if err := state.Write(c.o.StateDir, s); err != nil {
		c.o.Log.Warn("cannot write the state file; egressd check will not see the daemon's view", ev("state_failed"), zap.Error(err))
		return
	}
	c.dirty = false
}
