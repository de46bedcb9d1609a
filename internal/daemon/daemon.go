// Package daemon is `egressd run`: it owns every goroutine of the daemon —
// the controller's reconcile loop, the configuration watch, SIGHUP, the
// nftables monitor, the DNS proxy, the NFLOG deny reader, the listen
// restriction's bind reports, the recent-denies publishers and the metrics
// endpoint. It starts them in order, follows each configuration the loop
// puts in force (a part whose settings changed is restarted with its new
// settings: nothing waits for a restart of egressd), and stops them in
// order (Stop order, below). Each part holds its own small settings,
// copied from the configuration; no part reads another's.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/controller"
	"github.com/egressd/egressd/internal/deny"
	"github.com/egressd/egressd/internal/dnsproxy"
	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/internal/metrics"
	"github.com/egressd/egressd/resolver"
	"github.com/egressd/egressd/ruleset"
	"go.uber.org/zap"
)

// Settings are what `egressd run` is started with (its flags and
// environment); everything else comes from the configuration.
type Settings struct {
	ConfigPath     string
	ConfigRequired bool // --config was given: the file must exist
	Once           bool // resolve and apply once, then exit (run --once)
	RuntimeDir     string
	// StateDir is the service's state directory ($STATE_DIRECTORY): the
	// last good configuration and what `egressd learn` reads. "": none.
	StateDir     string
	BPFDir       string // where the listen restriction is pinned
	ListenCgroup string // the cgroup it attaches to; "": the cgroup2 root
	Log          *zap.Logger
}

// ErrPartial is run --once when some names did not resolve (exit 1).
var ErrPartial = errors.New("some names did not resolve")

// World is what the daemon drives: the kernel and the system's services.
// Run fills it with the real ones; tests with fakes (ruleset.Fake).
type World struct {
	Kernel  ruleset.Kernel
	Metrics *metrics.Metrics
	// Monitor tells of nftables changes by other processes (Netlink.Watch);
	// nil: drift is found by the periodic check only.
	Monitor func(ctx context.Context) (<-chan struct{}, error)
	// Notify sends sd_notify states; nil outside systemd.
	Notify    func(string) error
	Heartbeat controller.Heartbeat
	LastGood  controller.LastGood
	Listen    controller.ListenEnforcer // nil: listen: is reported as not enforced
	// BindReports, when set, is called with a function to call each time the
	// listen restriction is loaded (bindguard.Enforcer.OnOpen).
	BindReports func(open func(BindReader))
	// DNSProxy starts the DNS proxy; nil: none. Its close flushes it and
	// waits for its goroutines.
	DNSProxy func(ctx context.Context, observe func(dnsproxy.Observation)) (controller.DNSProxy, func(), error)
	// DenyLog opens the deny log's NFLOG group; nil: it cannot be read.
	DenyLog func(group uint16) (DenyReader, error)
	// Metrics endpoint: Listen opens metrics_listen (ListenMetrics), Serve
	// serves it until ctx ends.
	ListenMetrics func(cfg MetricsSettings) (Listener, error)
	// Hangup delivers SIGHUP.
	Hangup <-chan os.Signal
	// Tests: user lookups, DNS, trust, the cgroup2 root, the clock.
	Users      config.UserLookup
	NewQuerier func(*config.Config) resolver.Querier
	Trust      config.Trust
	CgroupRoot string
	// WatchQuiet is how long the configuration watch waits for a burst of
	// file events to end; default 200ms.
	WatchQuiet time.Duration
}

// DenyReader reads an opened deny log until ctx ends (deny.Run), then
// returns once its last window is flushed into rec.
type DenyReader func(ctx context.Context, lookup deny.Lookup, prefix string, interval time.Duration, rec *deny.Recent)

// BindReader reads the listen restriction's reports until ctx ends
// (deny.RunBinds), then returns once its last window is flushed into rec.
type BindReader func(ctx context.Context, lookup deny.Lookup, interval time.Duration, rec *deny.Recent)

// Listener is an open metrics endpoint.
type Listener interface {
	// Serve serves the metrics until ctx ends or the endpoint fails.
	Serve(ctx context.Context) error
	Addr() string
}

// publishWait bounds how long a stop waits for each recent-denies file's
// last write.
const publishWait = 2 * time.Second

// daemon is one run: the controller and the parts it owns.
type daemon struct {
	s   Settings
	w   World
	log *zap.Logger
	ctl *controller.Controller
	rec *deny.Recent // denied and audited attempts, names the proxy answered

	// The parts, owned by the supervisor goroutine once the loop runs.
	watch   *watchPart
	denies  *denyPart
	metrics *metricsPart
	binds   *bindsPart
	inputs  sync.WaitGroup // SIGHUP

	configs chan *config.Config // the newest configuration in force (a mailbox of one)
	pctx    context.Context     // the parts' context, ended after the loop stopped
}

// run is `egressd run` in w: the first apply, then the loop until ctx ends.
func run(ctx context.Context, s Settings, w World) error {
	d := &daemon{s: s, w: w, log: s.Log, rec: deny.NewRecent(0), configs: make(chan *config.Config, 1)}
	if w.Metrics == nil && !s.Once {
		d.w.Metrics = metrics.New()
	}
	if s.Once {
		// No endpoint serves them: the controller records nothing (and
		// skips the configuration's digest, a JSON encoding of it all).
		d.w.Metrics = nil
	}
	// Parts run under their own context, ended only after the loop has
	// stopped (stop order).
	pctx, cancelParts := context.WithCancel(context.Background())
	defer cancelParts()
	d.pctx = pctx

	var proxy controller.DNSProxy
	closeProxy := func() {}
	if !s.Once && w.DNSProxy != nil {
		observe := func(o dnsproxy.Observation) {
			d.rec.Resolve(o.Allowlist, o.Name, o.Addrs, o.Listed, o.Refused, o.At)
		}
		p, closeP, err := w.DNSProxy(pctx, observe)
		if err != nil {
			// Without conntrack the proxy cannot tell who asks: it does not
			// answer, and dns: proxy users' queries fail (never a bypass).
			d.log.Error("the DNS proxy cannot start: dns: proxy users' queries fail", event.Field(event.DNSProxyFailed), zap.Error(err))
		} else {
			proxy, closeProxy = p, closeP
		}
	}
	defer func() { closeProxy() }()

	var kernelEvents <-chan struct{}
	if !s.Once && w.Monitor != nil {
		events, err := w.Monitor(pctx)
		if err != nil {
			d.log.Warn("cannot watch nftables for changes by other tools; drift is found by the periodic check only",
				event.Field(event.WatchFailed), zap.Error(err))
		} else {
			kernelEvents = events
		}
	}
	stateDir := s.RuntimeDir
	if s.Once {
		stateDir = "" // no daemon behind it: check compares with fresh DNS
	}
	d.binds = &bindsPart{d: d}
	if !s.Once && w.BindReports != nil {
		w.BindReports(d.binds.open(pctx))
	}
	ctl, err := controller.New(controller.Options{
		ConfigPath: s.ConfigPath, ConfigRequired: s.ConfigRequired, Kernel: w.Kernel, Log: d.log, Metrics: d.w.Metrics,
		StateDir: stateDir, DNSProxy: proxy, Listen: w.Listen, KernelEvents: kernelEvents,
		Notify: w.Notify, Heartbeat: w.Heartbeat, LastGood: w.LastGood,
		Users: w.Users, NewQuerier: w.NewQuerier, Trust: w.Trust, CgroupRoot: w.CgroupRoot,
		OnConfig: d.configChanged, OneShot: s.Once,
	})
	if err != nil {
		return err
	}
	d.ctl = ctl
	if s.Once {
		failed, err := ctl.Once(ctx)
		if err != nil {
			d.log.Error("apply failed", event.Field(event.ApplyFailed), zap.Error(err))
			return fmt.Errorf("apply: %w", err)
		}
		if len(failed) > 0 {
			return ErrPartial
		}
		return nil
	}
	d.w.Metrics.SetDenyCounters(ctl.DeniedPackets)

	// The configuration at start: the loop does not run yet, so reading it
	// here races with nothing. From now on only OnConfig tells of it.
	cfg := ctl.Config()
	d.binds.settings(bindSettings(cfg))
	d.watch = &watchPart{d: d}
	d.watch.start(pctx, watchSettingsOf(cfg))
	d.denies = &denyPart{d: d}
	d.denies.start(pctx, denySettingsOf(cfg))
	// Bound before the first apply, so the endpoint is up once READY=1 is sent.
	d.metrics = &metricsPart{d: d}
	d.metrics.start(pctx, metricsSettingsOf(cfg))
	d.startHangup(pctx)

	supervised := make(chan struct{})
	sctx, stopSupervisor := context.WithCancel(pctx)
	go func() {
		defer close(supervised)
		d.supervise(sctx)
	}()
	err = ctl.Run(ctx)

	// Stop order: the loop has stopped (stopping, the state file, STOPPING=1,
	// the table kept or removed as on_exit says); then the inputs that only
	// wake it, the endpoint and the readers, whose last windows go into the
	// recent denies; then the DNS proxy (its last observations too); then
	// the recent denies' last writes.
	stopSupervisor()
	<-supervised
	d.watch.stop()
	d.metrics.stop()
	d.denies.stopReader()
	d.binds.stop()
	cancelParts()
	d.inputs.Wait()
	closeProxy()
	closeProxy = func() {}
	d.denies.stopPublishers()
	return err
}

// configChanged is Options.OnConfig: it runs on the loop's goroutine and
// only hands the configuration to the supervisor (the newest one wins).
func (d *daemon) configChanged(cfg *config.Config) {
	for {
		select {
		case d.configs <- cfg:
			return
		default:
		}
		select {
		case <-d.configs: // an older one nobody applied yet
		default:
		}
	}
}

// supervise follows each configuration the loop puts in force: the parts
// whose settings changed are restarted with their new settings.
func (d *daemon) supervise(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case cfg := <-d.configs:
			d.reload(d.pctx, cfg)
		}
	}
}

// reload gives every part its settings from cfg; a part whose settings
// changed is restarted with them (settings_applied, naming the keys).
func (d *daemon) reload(ctx context.Context, cfg *config.Config) {
	if s := watchSettingsOf(cfg); s != d.watch.s {
		old := d.watch.s
		d.watch.stop()
		d.watch.start(ctx, s)
		d.applied("watch", map[string]bool{"allow_dir": old.AllowDir != s.AllowDir, "hosts_file": old.HostsFile != s.HostsFile, "lists_dir": old.ListsDir != s.ListsDir})
	}
	if s := denySettingsOf(cfg); s != d.denies.s {
		old := d.denies.s
		d.denies.stopReader()
		d.denies.start(ctx, s)
		d.applied("deny_log", map[string]bool{"deny_log.mode": old.Mode != s.Mode, "deny_log.group": old.Group != s.Group,
			"deny_log.prefix": old.Prefix != s.Prefix, "deny_log.interval": old.Interval != s.Interval})
	}
	if s := metricsSettingsOf(cfg); s != d.metrics.s {
		old := d.metrics.s
		d.metrics.stop()
		d.metrics.start(ctx, s)
		d.applied("metrics", map[string]bool{"metrics_listen": old.Listen != s.Listen, "metrics_socket_mode": old.SocketMode != s.SocketMode,
			"metrics_socket_group": old.SocketGroup != s.SocketGroup})
	}
	if s := bindSettings(cfg); s != d.binds.current() && d.binds.settings(s) {
		// The bind reports' reader lives with the loaded programs: it keeps
		// the window it was opened with.
		d.log.Warn("this setting takes full effect at the next restart (systemctl restart egressd)", event.Field(event.RestartRequired),
			zap.String("setting", "deny_log.interval"), zap.String("part", "bind_denied reports"))
	}
}

func (d *daemon) applied(part string, changed map[string]bool) {
	var keys []string
	for k, c := range changed {
		if c {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	d.log.Info("a part of the daemon was restarted with the new configuration's settings", event.Field(event.SettingsApplied),
		zap.String("part", part), zap.Strings("settings", keys))
}

// startHangup turns SIGHUP into reloads until ctx ends.
func (d *daemon) startHangup(ctx context.Context) {
	if d.w.Hangup == nil {
		return
	}
	d.inputs.Add(1)
	go func() {
		defer d.inputs.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-d.w.Hangup:
				d.ctl.ReloadBy(controller.ReloadSignal)
			}
		}
	}()
}

// removeRecent removes a previous run's recent denies: not current.
func (d *daemon) removeRecent() {
	os.Remove(filepath.Join(d.s.RuntimeDir, deny.RecentFile)) //nolint:errcheck
}
