// Package controller owns egressd's reconcile loop: configuration, DNS
// refreshes, user lookups and signals only mark work as due; one goroutine
// computes the desired state and applies it to the kernel.
package controller

import (
	"context"
	"errors"
	"fmt"
	"github.com/egressd/egressd/internal/backoff"
	"github.com/egressd/egressd/internal/event"
	"net/netip"
	"reflect"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/metrics"
	"github.com/egressd/egressd/internal/policy"
	"github.com/egressd/egressd/internal/state"
	"github.com/egressd/egressd/resolver"
	"github.com/egressd/egressd/ruleset"
	"github.com/miekg/dns"
	"go.uber.org/zap"
)

// Event names are a contract (SPEC.md "Events"): log pipelines alert on them.
const ()

// Options wire a Controller to the world.
type Options struct {
	ConfigPath     string
	ConfigRequired bool // the operator named the file: it must exist
	Kernel         ruleset.Kernel
	Log            *zap.Logger
	// Users looks user names up; default config.SystemUsers.
	Users config.UserLookup
	// NewQuerier builds the DNS client for a configuration; default resolver.Client.
	NewQuerier func(*config.Config) resolver.Querier
	// Notify receives sd_notify-style state strings ("READY=1", "STATUS=…"); may be nil.
	Notify func(state string)
	// Concurrency bounds the DNS queries in flight; default policy.Concurrency.
	Concurrency int
	// MinInterval coalesces bursts of work: reconciles run at most this often; default 100ms.
	MinInterval time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Metrics records what happens; nil records nothing.
	Metrics *metrics.Metrics
	// StateDir, when set, is where the daemon publishes its view for
	// `egressd check` (state.json, replaced atomically).
	StateDir string
	// KernelEvents, when set, signals that another process changed nftables:
	// the loop verifies the table soon after.
	KernelEvents <-chan struct{}
	// VerifyEvery is the backstop period of full verification; default 60s.
	VerifyEvery time.Duration
	// Trust says who may own configuration paths (config.Trust); the zero
	// value is root and egressd's own user, every directory up to /.
	Trust config.Trust
	// LastGood, when set, keeps each configuration that takes effect and
	// supplies the last one when the files are invalid at start.
	LastGood LastGood
	// Heartbeat, when Every is set, is called from the loop itself at that
	// period (systemd's watchdog: a hung loop stops calling it).
	Heartbeat Heartbeat
}

// Heartbeat is a callback the loop calls every Every.
type Heartbeat struct {
	Every time.Duration
	Beat  func()
}

// event.DriftRepaired and event.DriftRepeating are event names.
const ()

// Controller is the reconcile loop. Its state is owned by the goroutine that
// calls Run or Once.
type Controller struct {
	o       Options
	cfg     *config.Config
	querier resolver.Querier
	hosts   *resolver.Hosts // looked up before DNS (hosts.go)
	cache   *resolver.Cache
	users   policy.Users

	applied    *ruleset.Plan // what the kernel holds; nil forces a full apply
	generation uint64
	retry      backoff.Retry // after apply failures
	usersAt    time.Time     // next look for missing users
	reload     chan struct{}
	failing    map[resolver.Key]bool

	index      nameIndex                         // allowlist -> address -> names, for deny events
	indexStale bool                              // the configuration changed since the index was built
	indexNames map[string]bool                   // names whose addresses changed since the index was built
	allowUsers usersByAllowlist                  // allowlist -> user, for deny events
	allowByUID atomic.Pointer[map[uint32]string] // uid -> allowlist, for deny events
	renderer   ruleset.Renderer                  // remembers unchanged allowlists' sets

	denyMu   sync.Mutex
	denyBase map[string]uint64 // denied packets counted before the last full rebuild

	started   time.Time
	ownership bool // the table's ownership was logged
	lastApply time.Time
	verifyAt  time.Time  // next verification of the kernel state
	drift     driftState // the drift repair's memory (drift.go)
	publishAt time.Time  // next state file write
	// publishSoon: a configuration took effect; publish without waiting for publishAt.
	publishSoon bool
	dirty       bool // the state file is behind
}

// applyBackoff spaces the retries of a failed apply.
var applyBackoff = backoff.Exp{Base: time.Second, Max: 30 * time.Second}

// StartDeadline bounds the first resolution of every name.
var StartDeadline = 15 * time.Second

// ErrConfig wraps a configuration that cannot be loaded at start.
var ErrConfig = errors.New("configuration invalid")

// New validates options and loads the configuration. A bad configuration at
// start is an error wrapping ErrConfig: there is no last good one to keep.
func New(o Options) (*Controller, error) {
	if o.Users == nil {
		o.Users = config.SystemUsers
	}
	if o.NewQuerier == nil {
		o.NewQuerier = func(c *config.Config) resolver.Querier { return &resolver.Client{Servers: c.Resolvers} }
	}
	if o.Concurrency <= 0 {
		o.Concurrency = policy.Concurrency
	}
	if o.MinInterval <= 0 {
		o.MinInterval = 100 * time.Millisecond
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.VerifyEvery <= 0 {
		o.VerifyEvery = time.Minute
	}
	c := &Controller{o: o, reload: make(chan struct{}, 1), failing: map[resolver.Key]bool{}, started: o.Now(),
		retry: backoff.Retry{Exp: applyBackoff, Now: o.Now}}
	cfg, err := config.LoadTrusted(o.ConfigPath, o.ConfigRequired, o.Trust)
	if err != nil {
		if cfg = c.fallback(err); cfg == nil {
			return nil, fmt.Errorf("%w: %v", ErrConfig, err)
		}
	}
	if cfg.AllowDirMissing {
		o.Log.Warn("the allow directory does not exist: no allowlists, nobody is restricted", event.Field(event.ConfigLoaded), zap.String("allow_dir", cfg.AllowDir))
	}
	c.cache = resolver.NewCache(cachePolicy(cfg), o.Now)
	if c.hosts, err = resolver.NewHostsWith(cfg.HostsFile, o.Trust.ReadFile); err != nil {
		o.Log.Error("cannot read the hosts file; names are looked up in DNS only", event.Field(event.ConfigRejected), zap.String("file", cfg.HostsFile), zap.Error(err))
	}
	c.setConfig(cfg)
	return c, nil
}

// SetStateDir changes where the state is published ("" for nowhere); call before Run.
func (c *Controller) SetStateDir(dir string) { c.o.StateDir = dir }

// SetKernelEvents connects the nftables change monitor; call before Run.
func (c *Controller) SetKernelEvents(ch <-chan struct{}) { c.o.KernelEvents = ch }

// Config returns the configuration in force.
func (c *Controller) Config() *config.Config { return c.cfg }

func cachePolicy(cfg *config.Config) resolver.Policy {
	return resolver.Policy{MinTTL: cfg.MinTTL, MaxTTL: cfg.MaxTTL, Linger: cfg.Linger, StaleGrace: cfg.StaleGrace, MaxAddrs: cfg.MaxAddressesPerName}
}

func (c *Controller) setConfig(cfg *config.Config) {
	c.cfg = cfg
	c.querier = c.hostsFirst(c.o.NewQuerier(cfg))
	c.cache.SetPolicy(cachePolicy(cfg))
	c.cache.Sync(policy.CacheNames(cfg))
	c.lookupUsers(true)
	// A configuration change that only changes elements is applied as a
	// delta like DNS churn; one that changes chains, users or logging
	// rebuilds the table (sync compares structures). Rebuilding on every
	// edit would reset the rate limits and counters for nothing.
	entries := 0
	users := map[string]string{}
	for _, a := range cfg.Allowlists {
		entries += len(a.Entries)
		users[a.Name] = a.User
	}
	c.allowUsers.Store(&users)
	c.indexStale = true
	c.publishSoon = true // check compares with the files at once, not a second later
	// Published even when the kernel needs no change (a comment, a
	// reordering, a user that does not exist yet): check compares the
	// configuration the daemon enforces with the files on disk.
	c.dirty = true
	for _, f := range cfg.Skipped {
		c.o.Log.Warn("file in the allow directory ignored: allowlists are NAME.yaml or NAME.yml", event.Field(event.ConfigFileSkipped),
			zap.String("file", f), zap.String("allow_dir", cfg.AllowDir))
	}
	c.keepLastGood(cfg)
	for k := range c.failing {
		if _, ok := c.cache.Status(k); !ok {
			delete(c.failing, k)
		}
	}
	c.o.Log.Info("configuration loaded", event.Field(event.ConfigLoaded), zap.String("file", cfg.File),
		zap.String("allow_dir", cfg.AllowDir), zap.Int("allowlists", len(cfg.Allowlists)),
		zap.Int("entries", entries), zap.Int("names", len(cfg.Names())), zap.Stringers("resolvers", cfg.Resolvers))
}

// logRejected reports a configuration that cannot be loaded. At start
// there is no last good configuration to keep: the daemon does not start.
func (c *Controller) logRejected(err error, atStart bool) {
	msg := "configuration rejected; the last good configuration stays in force"
	if atStart {
		msg = "configuration rejected; egressd cannot start without a valid configuration"
	}
	var ce config.Errors
	if !errors.As(err, &ce) {
		c.o.Log.Error(msg, event.Field(event.ConfigRejected), zap.Error(err))
		return
	}
	for _, e := range ce {
		fields := []zap.Field{event.Field(event.ConfigRejected), zap.String("file", e.Pos.File), zap.Int("line", e.Pos.Line), zap.Int("column", e.Pos.Col), zap.String("error", e.Msg)}
		if e.Fix != "" {
			fields = append(fields, zap.String("fix", e.Fix))
		}
		c.o.Log.Error(msg, fields...)
	}
}

// lookupUsers refreshes uids; it logs what is missing when the set of
// missing users changed or when loud is set (a reload).
func (c *Controller) lookupUsers(loud bool) bool { return c.lookupUsersFrom(c.users, loud) }

// lookupUsersFrom is lookupUsers keeping the uids of prev (see Users.Keep).
func (c *Controller) lookupUsersFrom(prev policy.Users, loud bool) bool {
	u := policy.LookupUsers(c.cfg, c.o.Users)
	u.Keep(prev)
	changed := !reflect.DeepEqual(u.UIDs, c.users.UIDs)
	if len(u.Vanished) > len(c.users.Vanished) || (loud && len(u.Vanished) > 0) {
		for n, err := range u.Vanished {
			if was, ok := u.Was[n]; ok {
				c.o.Log.Error("the allowlist names a user that does not exist; still enforcing the uid of the user it named before, until the new one exists (fail closed; only deleting the allowlist file lifts a restriction)",
					event.Field(event.UserMissing), zap.String("allowlist", n), zap.Uint32("uid", u.UIDs[n]), zap.String("previous_user", was), zap.Error(err))
				continue
			}
			c.o.Log.Error("a restricted user no longer resolves; still enforcing its last uid (fail closed)",
				event.Field(event.UserMissing), zap.String("allowlist", n), zap.Uint32("uid", u.UIDs[n]), zap.Error(err))
		}
	}
	if loud || changed {
		names := make([]string, 0, len(u.Missing))
		for n := range u.Missing {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			c.o.Log.Warn("allowlist not enforced yet: its user does not exist; it will be as soon as the user appears",
				event.Field(event.UserMissing), zap.String("allowlist", n), zap.Error(u.Missing[n]))
		}
		for _, m := range u.Conflicts {
			c.o.Log.Error("two allowlists restrict the same uid", event.Field(event.UserConflict), zap.String("error", m))
		}
	}
	c.users = u
	byUID := make(map[uint32]string, len(u.UIDs))
	for n, uid := range u.UIDs {
		byUID[uid] = n
	}
	c.allowByUID.Store(&byUID)
	c.usersAt = c.o.Now().Add(5 * time.Second)
	return changed
}

// seedUsers keeps enforcing, across a restart, the uids that the previous
// run enforced for allowlists whose user does not resolve now (read from
// the state file it published; the runtime directory is egressd's own).
func (c *Controller) seedUsers() {
	if c.o.StateDir == "" {
		return
	}
	st, err := state.Read(c.o.StateDir)
	if err != nil || len(st.Users) == 0 {
		return
	}
	c.lookupUsersFrom(policy.Seed(st.Users), true)
}

// Reload asks the loop to reload the configuration (SIGHUP, file watcher).
func (c *Controller) Reload() {
	select {
	case c.reload <- struct{}{}:
	default:
	}
}

func (c *Controller) doReload() {
	defer c.reloadHosts() // with the configuration in force after this reload
	cfg, err := config.LoadTrusted(c.o.ConfigPath, c.o.ConfigRequired, c.o.Trust)
	if err != nil {
		c.logRejected(err, false)
		return
	}
	if cfg.AllowDirMissing && len(c.cfg.Allowlists) > 0 {
		c.logRejected(config.Errors{{Pos: config.Pos{File: cfg.AllowDir}, Msg: "the allow directory is missing; " +
			"keeping the last good configuration (to lift restrictions, delete the allowlist files, not the directory)"}}, false)
		return
	}
	if reflect.DeepEqual(cfg, c.cfg) {
		// An editor touched a file without changing it, or /etc/passwd changed.
		c.lookupUsers(false)
		return
	}
	// These are wired once, at start (the NFLOG listener, the metrics
	// endpoint, the directory watch): say so rather than pretend.
	old := c.cfg
	for what, changed := range map[string]bool{
		"deny_log.mode":  old.DenyLog.Mode != cfg.DenyLog.Mode,
		"deny_log.group": old.DenyLog.Group != cfg.DenyLog.Group,
		"metrics_listen": old.MetricsListen != cfg.MetricsListen,
		"allow_dir":      old.AllowDir != cfg.AllowDir,
		"hosts_file":     old.HostsFile != cfg.HostsFile, // its watch
		"lists_dir":      old.ListsDir != cfg.ListsDir,   // its watch
	} {
		if changed {
			c.o.Log.Warn("this setting takes full effect at the next restart (systemctl restart egressd)", event.Field(event.RestartRequired), zap.String("setting", what))
		}
	}
	c.setConfig(cfg)
}

// resolve queries keys and records the outcomes (used by Once and tests).
func (c *Controller) resolve(ctx context.Context, keys []resolver.Key) map[string]error {
	return c.observe(keys, policy.Query(ctx, c.querier, keys, c.o.Concurrency))
}

// observe records outcomes in the cache and logs what changed. Names that
// failed are returned.
func (c *Controller) observe(keys []resolver.Key, out []policy.Outcome) map[string]error {
	failed := map[string]error{}
	for i, k := range keys {
		o := out[i]
		prev, known := c.cache.Status(k)
		if !known {
			continue // the name left the configuration while it was being looked up
		}
		if o.Cancelled {
			// Stopping, or the start deadline: not a DNS failure; the key
			// is asked again.
			failed[k.Name] = o.Err
			c.cache.Release(k)
			continue
		}
		c.o.Metrics.Resolved(o.Dur.Seconds())
		ch := c.cache.Observe(k, o.Res, o.Err)
		st, _ := c.cache.Status(k)
		if len(ch.Added) > 0 || len(ch.Removed) > 0 {
			c.markIndex(k.Name)
		}
		if o.Err != nil {
			c.failing[k] = true
		} else {
			delete(c.failing, k)
		}
		switch {
		case o.Err != nil:
			failed[k.Name] = o.Err
			c.o.Log.Warn("resolution failed", event.Field(event.ResolveFailed), zap.String("name", k.Name), zap.String("type", typeName(k)),
				zap.Error(o.Err), zap.Bool("serving_stale", st.ServingStale), zap.Int("addresses", len(st.Addrs)),
				zap.Duration("retry_in", ch.TTL), zap.Stringers("removed", ch.Removed))
		// Info when something changed, or on a name's first answer (even a
		// negative one); a refresh that changes nothing is debug.
		case len(ch.Added) > 0 || len(ch.Removed) > 0 || ch.Dropped > 0 || prev.LastOK.IsZero():
			level := c.o.Log.Info
			if ch.Dropped > 0 {
				level = c.o.Log.Warn
			}
			level("resolved", event.Field(event.Resolved), zap.String("name", k.Name), zap.String("type", typeName(k)),
				zap.Stringers("added", ch.Added), zap.Stringers("removed", ch.Removed),
				zap.Duration("ttl", ch.TTL), zap.Int("dropped", ch.Dropped), zap.Bool("negative", o.Res.Negative))
		default:
			c.o.Log.Debug("resolved, unchanged", event.Field(event.Resolved), zap.String("name", k.Name), zap.String("type", typeName(k)), zap.Duration("ttl", ch.TTL))
		}
	}
	c.o.Metrics.NamesFailing(len(c.failing))
	return failed
}

func (c *Controller) markIndex(name string) {
	if c.indexNames == nil {
		c.indexNames = map[string]bool{}
	}
	c.indexNames[name] = true
}

func typeName(k resolver.Key) string {
	if k.Type == dns.TypeAAAA {
		return "AAAA"
	}
	return "A"
}

// sync brings the kernel to the desired state: a full rebuild when nothing
// is known to be applied or the structure changed, else an element delta.
func (c *Controller) sync() error {
	if expired := c.cache.Expire(); len(expired) > 0 {
		for k, lost := range expired {
			c.markIndex(k.Name)
			c.o.Log.Info("addresses expired", event.Field(event.Resolved), zap.String("name", k.Name), zap.String("type", typeName(k)),
				zap.Stringers("added", []netip.Addr{}), zap.Stringers("removed", lost), zap.String("reason", "ttl+linger or stale_grace ran out"))
		}
	}
	plan := c.renderer.Render(policy.BuildDesiredHosts(c.cfg, c.users, c.cache.Addrs, c.hosts.Has))
	index := func() {
		if c.indexStale {
			c.index.store(buildNameIndex(c.cfg, c.cache.Addrs))
		} else if len(c.indexNames) > 0 {
			c.index.store(updateNameIndex(c.index.load(), c.cfg, c.indexNames, c.cache.Addrs))
		}
		c.indexStale, c.indexNames = false, nil
	}
	start := time.Now()
	var err error
	kind := "delta"
	var changed int
	if c.applied == nil || !ruleset.SameStructure(*c.applied, plan) {
		kind, changed = "full", plan.Elements()
		err = c.applyFull(plan)
	} else {
		d := ruleset.Diff(*c.applied, plan)
		if len(d) == 0 {
			index()
			return nil
		}
		changed = d.Elements()
		err = c.o.Kernel.ApplyDelta(plan, d)
	}
	if kind == "full" {
		c.drift.fullTook = time.Since(start) // spaces restores of a removed table
	}
	c.o.Metrics.Applied(kind, err, float64(time.Now().UnixNano())/1e9)
	if err != nil {
		c.applied = nil // unknown kernel state: the next attempt rebuilds
		wait := c.retry.Fail()
		c.o.Log.Error("applying the ruleset failed; the kernel keeps its previous state", event.Field(event.ApplyFailed),
			zap.String("kind", kind), zap.Error(err), zap.Int("failures", c.retry.Failures()), zap.Duration("retry_in", wait))
		return err
	}
	c.retry.Reset()
	c.applied = &plan
	index()
	c.lastApply, c.dirty = c.o.Now(), true
	sizes := map[[2]string]int{}
	for _, ch := range plan.Chains {
		sizes[[2]string{ch.Allowlist, "ipv4"}] = len(plan.Sets[ruleset.SetName4(ch.Allowlist)])
		sizes[[2]string{ch.Allowlist, "ipv6"}] = len(plan.Sets[ruleset.SetName6(ch.Allowlist)])
	}
	c.o.Metrics.SetElements(sizes)
	c.generation++
	c.o.Log.Info("ruleset applied", event.Field(event.RulesetApplied), zap.Uint64("generation", c.generation), zap.String("kind", kind),
		zap.Int("elements", plan.Elements()), zap.Int("changed", changed), zap.Int("allowlists", len(plan.Chains)),
		zap.Duration("duration", time.Since(start)))
	c.notify(fmt.Sprintf("STATUS=enforcing %d allowlists, %d elements (generation %d)%s", len(plan.Chains), plan.Elements(), c.generation, c.lastGoodNote()))
	return nil
}

// carryDenyCounters keeps denied-packet totals across a full rebuild, which
// starts the kernel's counters at zero (and across restarts: the first
// apply reads what the previous run left).
func (c *Controller) carryDenyCounters() {
	cr, ok := c.o.Kernel.(ruleset.CounterReader)
	if !ok {
		return
	}
	cur, err := cr.ReadDenyCounters()
	if err != nil {
		return // no table yet
	}
	c.denyMu.Lock()
	defer c.denyMu.Unlock()
	if c.denyBase == nil {
		c.denyBase = map[string]uint64{}
	}
	for k, v := range cur {
		c.denyBase[k] += v
	}
}

// DeniedPackets returns, per allowlist, every packet rejected since egressd
// first saw the table: the kernel's counters plus what earlier rebuilds
// reset. Safe for concurrent use (the metrics endpoint calls it).
func (c *Controller) DeniedPackets() (map[string]uint64, error) {
	cr, ok := c.o.Kernel.(ruleset.CounterReader)
	if !ok {
		return nil, errors.New("kernel does not count")
	}
	cur, err := cr.ReadDenyCounters()
	if err != nil {
		return nil, err
	}
	c.denyMu.Lock()
	defer c.denyMu.Unlock()
	out := map[string]uint64{}
	for k, v := range c.denyBase {
		out[k] = v
	}
	for k, v := range cur {
		out[k] += v
	}
	return out, nil
}

func (c *Controller) notify(s string) {
	if c.o.Notify != nil {
		c.o.Notify(s)
	}
}

// Once resolves every name once and applies the result in one transaction.
// It returns the names that failed (no addresses or a query error).
func (c *Controller) Once(ctx context.Context) (map[string]error, error) {
	// Blackholed resolvers must not hold the first apply (and READY=1) for
	// long: names not answered by then allow nothing yet and are retried.
	rctx, cancel := context.WithTimeout(ctx, StartDeadline)
	failed := c.resolve(rctx, c.cache.Due())
	cancel()
	for _, n := range c.cfg.Names() {
		if _, bad := failed[n]; !bad && len(c.cache.Addrs(n)) == 0 {
			failed[n] = errors.New("no addresses (NXDOMAIN, no data, or every answer refused)")
		}
	}
	err := c.sync()
	c.logOwnership()
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
		zap.Int("names", len(c.cfg.Names())), zap.Int("names_failed", len(failed)), zap.Uint64("generation", c.generation))
	c.notify("READY=1")
	c.verifyAt = c.o.Now().Add(c.o.VerifyEvery)
	c.publish(true)
	timer := time.NewTimer(0)
	defer timer.Stop()
	last := c.o.Now()
	// DNS rounds run in the background so that a slow or dead resolver
	// never delays a reload, a drift repair or a stop; one round at a time.
	type round struct {
		keys []resolver.Key
		out  []policy.Outcome
	}
	rounds := make(chan round, 1)
	inflight := false
	var beat <-chan time.Time
	if hb := c.o.Heartbeat; hb.Every > 0 && hb.Beat != nil {
		hb.Beat()
		tick := time.NewTicker(hb.Every)
		defer tick.Stop()
		beat = tick.C
	}
	for {
		wait := c.nextWake().Sub(c.o.Now())
		// Coalesce: never reconcile more often than MinInterval, except to
		// restore a removed table (spaced by drift.go itself).
		if since := c.o.Now().Sub(last); since+wait < c.o.MinInterval && !c.drift.urgent {
			wait = c.o.MinInterval - since
		}
		timer.Reset(max(wait, 0))
		select {
		case <-ctx.Done():
			return c.stop()
		case <-c.reload:
			c.doReload()
		case _, ok := <-c.o.KernelEvents:
			if !ok {
				c.o.KernelEvents = nil // the monitor ended; the periodic check remains
				c.o.Log.Warn("the nftables monitor stopped; drift is now found by the periodic check only", event.Field(event.WatchFailed))
			}
			c.kernelChanged()
		case r := <-rounds:
			inflight = false
			c.observe(r.keys, r.out)
		case <-beat:
			c.o.Heartbeat.Beat()
		case <-timer.C:
		}
		last = c.o.Now()
		if ctx.Err() != nil {
			return c.stop()
		}
		if c.o.Now().After(c.usersAt) && c.lookupUsers(false) {
			c.o.Log.Info("a user appeared or changed; updating", event.Field(event.ConfigLoaded), zap.String("reason", "user lookup changed"))
		}
		if due := c.cache.Due(); len(due) > 0 && !inflight {
			inflight = true
			c.cache.Claim(due)
			q, conc := c.querier, c.o.Concurrency
			go func() { rounds <- round{due, policy.Query(ctx, q, due, conc)} }()
		}
		if !c.verifyAt.IsZero() && !c.o.Now().Before(c.verifyAt) {
			c.verify()
		}
		c.flushRestoreLog(c.o.Now())
		if c.retry.Ready() {
			c.sync() //nolint:errcheck // logged; retried with backoff
		}
		c.publish(false)
	}
}

func (c *Controller) nextWake() time.Time {
	next := c.cache.NextEvent()
	consider := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	consider(c.retry.At())
	consider(c.verifyAt)
	consider(c.restoreLogDue())
	if c.dirty && c.o.StateDir != "" {
		consider(c.publishAt)
	}
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
	}
	return nil
}
