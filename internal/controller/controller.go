// Package controller owns egressd's reconcile loop: configuration, DNS
// refreshes, user lookups and signals only mark work as due; one goroutine
// computes the desired state and applies it to the kernel.
package controller

import (
	"errors"
	"fmt"
	"github.com/egressd/egressd/internal/event"
	"sync"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/backoff"
	"github.com/egressd/egressd/internal/metrics"
	"github.com/egressd/egressd/internal/phase"
	"github.com/egressd/egressd/internal/policy"
	"github.com/egressd/egressd/resolver"
	"github.com/egressd/egressd/ruleset"
	"go.uber.org/zap"
)

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
	// An error is logged (notify_failed).
	Notify func(state string) error
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
	// DNSProxy, when set, answers the queries of dns: proxy users.
	DNSProxy DNSProxy
	// Heartbeat, when Every is set, is called from the loop itself at that
	// period (systemd's watchdog: a hung loop stops calling it).
	Heartbeat Heartbeat
	// Listen, when set, enforces allowlists' listen: keys; without it a
	// listen: key is reported as not enforced (listen_unenforced).
	Listen ListenEnforcer
	// OnConfig, when set, is told each configuration that takes effect (at
	// New and at every reload that changes it), on the loop's goroutine: it
	// must not block. internal/daemon follows it with the parts it owns.
	OnConfig func(*config.Config)
	// CgroupRoot is where the cgroup2 hierarchy is mounted (tests); default: found in /proc/self/mountinfo.
	CgroupRoot string
	// OneShot: the process applies once and exits (run --once); what only
	// a running daemon reads is not kept (the index that names the
	// destination of a deny event).
	OneShot bool
}

// Heartbeat is a callback the loop calls every Every. A beat that fails is
// logged (notify_failed) and sent again a second later, not a period later:
// systemd's watchdog must not starve while the loop is healthy.
type Heartbeat struct {
	Every time.Duration
	Beat  func() error
}

// Controller is the reconcile loop. The goroutine that calls Run or Once
// owns it and its parts, each the single owner of one concern:
//
//   - refresher (refresher.go): the resolver cache, hosts file, DNS rounds
//     and the failing set;
//   - applier (applier.go, drift.go): render, full or delta apply, the
//     apply backoff, drift verification, repair and restore;
//   - publisher (publisher.go): the state file for `egressd check`;
//   - attribution (attribution.go) and denyCounters (denycount.go): what
//     other goroutines read (deny events, metrics), behind atomics or a lock.
//
// The Controller itself holds the configuration, the users and the loop.
type Controller struct {
	o       *Options
	cfg     *config.Config
	users   policy.Users
	usersAt time.Time // next look for missing users
	// usersGen counts the changes of the uids and unit keys in users.
	usersGen uint64
	// built is what the plan in force was built from; a reconcile with
	// the same inputs would build the same plan, and is skipped (sync).
	built  buildKey
	builds int // policy.Build calls, for tests
	reload chan struct{}
	// cfgRetry: a reload whose read failed for a reason that passes is
	// due again at cfgRetry.At() (zero: none pending).
	cfgRetry backoff.Retry

	reloadMu sync.Mutex
	reloadBy map[string]bool // why the pending reload was asked for
	rejected bool            // the last reload was rejected: the next good one is a recovery

	dns    *refresher
	apply  *applier
	pub    *publisher
	attr   *attribution
	deny   *denyCounters
	proxy  proxyState
	units  *unitFollower
	listen listenState
}

// StartDeadline bounds the first resolution of every name.
var StartDeadline = 15 * time.Second

// ErrConfig wraps a configuration that cannot be loaded at start.
var ErrConfig = errors.New("configuration invalid")

// New validates options and loads the configuration. A bad configuration at
// start is an error wrapping ErrConfig: there is no last good one to keep.
func New(opts Options) (*Controller, error) {
	o := &opts
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
	c := &Controller{o: o, reload: make(chan struct{}, 1), attr: &attribution{}, deny: &denyCounters{},
		pub: &publisher{o: o, started: o.Now()}, units: &unitFollower{o: o}}
	c.apply = newApplier(o, c.deny)
	c.cfgRetry = backoff.Retry{Exp: configRetry, Now: o.Now}
	// A read that fails for a reason that passes is retried for a while
	// before the files count as invalid (the last good configuration, or
	// no start).
	start := backoff.Retry{Exp: configRetry}
	deadline := time.Now().Add(StartDeadline)
	endConfig := phase.Start("config")
	cfg, again, err := c.load(&start)
	for ; again && time.Now().Before(deadline); cfg, again, err = c.load(&start) {
		time.Sleep(time.Until(start.At()))
	}
	endConfig()
	if err != nil {
		if cfg = c.fallback(err); cfg == nil {
			return nil, fmt.Errorf("%w: %v", ErrConfig, err)
		}
	}
	if cfg.AllowDirMissing {
		o.Log.Warn("the allow directory does not exist: no allowlists, nobody is restricted", event.Field(event.ConfigLoaded), zap.String("allow_dir", cfg.AllowDir))
	}
	endHosts := phase.Start("hosts")
	c.dns = newRefresher(o, cfg, c.attr.nameChanged)
	endHosts()
	endSet := phase.Start("setconfig")
	c.setConfig(cfg)
	endSet()
	if err != nil {
		o.Metrics.ConfigRejected() // the last good configuration stands in for the rejected files
	}
	return c, nil
}

// setStateDir changes where the state is published ("" for nowhere); tests
// call it before Run (internal/daemon sets Options.StateDir at New).
func (c *Controller) setStateDir(dir string) { c.o.StateDir = dir }

// setKernelEvents connects the nftables change monitor; tests call it
// before Run (internal/daemon sets Options.KernelEvents at New).
func (c *Controller) setKernelEvents(ch <-chan struct{}) { c.o.KernelEvents = ch }

// Config returns the configuration in force.
func (c *Controller) Config() *config.Config { return c.cfg }
