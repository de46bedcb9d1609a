package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/internal/phase"
	"github.com/egressd/egressd/internal/policy"
	"github.com/egressd/egressd/ruleset"
	"go.uber.org/zap"
)

// sync brings the kernel to the desired state (applier.sync) and, once it
// holds it, the name index and the state file follow.
//
// Most reconciles of a steady state change nothing (a refresh that brings
// the same addresses only marks their lifetimes for the next renewal): when
// every input of policy.Build is the one the plan in force was built from,
// the build, render and diff are skipped. The inputs are counted exactly
// (buildKey), never guessed from the time.
func (c *Controller) sync() error {
	c.dns.expire()
	c.dns.cache.Renew() // extended lifetimes reach the kernel in batches
	c.syncProxy()
	cgroups := c.units.current(c.cfg)
	key := buildKey{cfg: c.cfg, cache: c.dns.cache.Generation(), hosts: c.dns.hostsGen, users: c.usersGen, cgroups: cgroups}
	if c.apply.applied != nil && c.listen.err == "" && key.same(c.built) {
		c.attr.refresh(c.cfg, c.dns.cache.Addrs)
		return nil
	}
	c.builds++
	endBuild := phase.Start("build")
	d := policy.Build(policy.Inputs{Config: c.cfg, Users: c.users, Lifetimes: c.dns.cache.AppendLifetimes,
		FromHosts: c.dns.hosts.Has, Cgroups: cgroups})
	endBuild()
	changed, err := c.apply.sync(d.Ruleset)
	if err != nil {
		return err
	}
	c.built = key
	if !c.o.OneShot {
		c.attr.refresh(c.cfg, c.dns.cache.Addrs)
	}
	c.syncListen(d)
	if changed {
		if c.apply.renewedOnly {
			c.pub.renewed()
		} else {
			c.pub.changed(false)
		}
		c.notify(c.apply.status() + c.lastGoodNote())
	}
	return nil
}

// buildKey is what policy.Build reads, by identity or generation: the
// configuration in force (replaced, never changed in place), the resolver
// cache's generation (addresses and kernel lifetimes), the hosts file's
// reads, the users' uids and unit keys, and the units' cgroups.
type buildKey struct {
	cfg     *config.Config
	cache   uint64
	hosts   uint64
	users   uint64
	cgroups []ruleset.Cgroup
}

func (k buildKey) same(o buildKey) bool {
	return k.cfg == o.cfg && k.cache == o.cache && k.hosts == o.hosts && k.users == o.users && slices.Equal(k.cgroups, o.cgroups)
}

// publish writes the state file if due (publisher.publish).
func (c *Controller) publish(force bool) {
	c.pub.publish(force, view{generation: c.apply.generation, lastApply: c.apply.lastApply, cfg: c.cfg,
		applied: c.apply.applied, users: c.users, cache: c.dns.cache, listenErr: c.listen.err, listenDir: c.listenDir()})
}

func (c *Controller) notify(s string) {
	if c.o.Notify == nil {
		return
	}
	if err := c.o.Notify(s); err != nil {
		what, _, _ := strings.Cut(s, "=")
		c.o.Log.Warn("cannot notify systemd", event.Field(event.NotifyFailed), zap.String("notification", what), zap.Error(err))
	}
}

// beatRetry is how soon a failed watchdog heartbeat is sent again.
var beatRetry = time.Second

// heartbeat sends WATCHDOG=1; on failure it logs and returns a channel
// that fires when the beat is due again.
func (c *Controller) heartbeat() <-chan time.Time {
	if err := c.o.Heartbeat.Beat(); err != nil {
		c.o.Log.Warn("cannot send the watchdog heartbeat; retrying", event.Field(event.NotifyFailed),
			zap.String("notification", "WATCHDOG"), zap.Duration("retry_in", beatRetry), zap.Error(err))
		return time.After(beatRetry)
	}
	return nil
}

// Once resolves every name once and applies the result in one transaction.
// It returns the names that failed (no addresses or a query error).
func (c *Controller) Once(ctx context.Context) (map[string]error, error) {
	// Blackholed resolvers must not hold the first apply (and READY=1) for
	// long: names not answered by then allow nothing yet and are retried.
	rctx, cancel := context.WithTimeout(ctx, StartDeadline)
	failed := c.dns.resolve(rctx, c.dns.cache.Due())
	cancel()
	for _, n := range c.cfg.Names() {
		if _, bad := failed[n]; !bad && !c.dns.cache.HasAddrs(n) {
			failed[n] = errors.New("no addresses (NXDOMAIN, no data, or every answer refused)")
		}
	}
	err := c.sync()
	endOwn := phase.Start("ownership")
	c.apply.logOwnership()
	endOwn()
	return failed, err
}

// Run is the daemon: first full apply, READY=1, then the loop until ctx
// ends. On return the kernel keeps the rules unless on_exit is remove.
func (c *Controller) Run(ctx context.Context) error {
	c.seedUsers()
	failed, err := c.Once(ctx)
	if err != nil {
		return fmt.Errorf("first apply: %w", err)
	}
	c.o.Log.Info("egressd is enforcing", event.Field(event.Started), zap.Int("allowlists", len(c.cfg.Allowlists)),
		zap.Int("names", len(c.cfg.Names())), zap.Int("names_failed", len(failed)), zap.Uint64("generation", c.apply.generation))
	c.notify("READY=1")
	c.apply.verifyAt = c.o.Now().Add(c.o.VerifyEvery)
	c.publish(true)
	timer := time.NewTimer(0)
	defer timer.Stop()
	last := c.o.Now()
	// DNS rounds run in the background so that a slow or dead resolver
	// never delays a reload, a drift repair or a stop; one round at a time.
	rounds := make(chan round, 1)
	inflight := false
	kernelEvents := c.o.KernelEvents // Options are not changed once Run runs
	var beat, beatAgain <-chan time.Time
	if hb := c.o.Heartbeat; hb.Every > 0 && hb.Beat != nil {
		beatAgain = c.heartbeat()
		tick := time.NewTicker(hb.Every)
		defer tick.Stop()
		beat = tick.C
	}
	for {
		wait := c.nextWake().Sub(c.o.Now())
		// Coalesce: never reconcile more often than MinInterval, except to
		// restore a removed table (spaced by drift.go itself).
		if since := c.o.Now().Sub(last); since+wait < c.o.MinInterval && !c.apply.drift.urgent {
			wait = c.o.MinInterval - since
		}
		timer.Reset(max(wait, 0))
		select {
		case <-ctx.Done():
			return c.stop()
		case <-c.reload:
			c.doReload()
			// The proxy follows an edit at once, even while applies back
			// off: what the edit no longer allows leaves its sets now.
			c.syncProxy()
		case _, ok := <-kernelEvents:
			if !ok {
				kernelEvents = nil // the monitor ended; the periodic check remains
				c.o.Log.Warn("the nftables monitor stopped; drift is now found by the periodic check only", event.Field(event.WatchFailed))
			}
			c.apply.kernelChanged()
		case r := <-rounds:
			inflight = false
			c.dns.observe(r.keys, r.out)
		case <-beat:
			beatAgain = c.heartbeat()
		case <-beatAgain:
			beatAgain = c.heartbeat()
		case <-timer.C:
		}
		last = c.o.Now()
		if ctx.Err() != nil {
			return c.stop()
		}
		if c.o.Now().After(c.usersAt) && c.lookupUsers(false) {
			c.o.Log.Info("a user appeared or changed; updating", event.Field(event.ConfigLoaded), zap.String("reason", "user lookup changed"))
		}
		if !c.cfgRetry.At().IsZero() && c.cfgRetry.Ready() {
			c.doReload() // the last read failed for a reason that passes
		}
		if !inflight {
			inflight = c.dns.startRound(ctx, rounds)
		}
		if !c.apply.verifyAt.IsZero() && !c.o.Now().Before(c.apply.verifyAt) {
			c.apply.verify()
			c.verifyListen()
		}
		c.apply.flushRestoreLog(c.o.Now())
		if c.apply.retry.Ready() {
			c.sync() //nolint:errcheck // logged; retried with backoff
		}
		c.publish(false)
	}
}

func (c *Controller) nextWake() time.Time {
	next := c.dns.cache.NextEvent()
	consider := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	consider(c.apply.retry.At())
	consider(c.cfgRetry.At())
	consider(c.apply.verifyAt)
	consider(c.apply.restoreLogDue())
	consider(c.pub.due())
	consider(c.units.due())
	if len(c.users.Missing) > 0 || len(c.users.Vanished) > 0 {
		consider(c.usersAt)
	}
	if next.IsZero() {
		next = c.o.Now().Add(time.Minute)
	}
	return next
}

func (c *Controller) stop() error {
	c.o.Log.Info("stopping", event.Field(event.Stopping), zap.String("on_exit", c.cfg.OnExit))
	c.publish(true)
	c.notify("STOPPING=1")
	if c.cfg.OnExit == "remove" {
		if err := c.o.Kernel.Remove(); err != nil {
			return fmt.Errorf("remove table on exit: %w", err)
		}
		c.o.Log.Info("table removed (on_exit: remove): egress is no longer restricted", event.Field(event.Stopping))
		if c.o.Listen != nil {
			if err := c.o.Listen.Remove(); err != nil {
				return fmt.Errorf("remove the listen restriction on exit: %w", err)
			}
		}
	}
	return nil
}
