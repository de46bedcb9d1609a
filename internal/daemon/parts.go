package daemon

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/controller"
	"github.com/egressd/egressd/internal/deny"
	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/internal/metrics"
	"go.uber.org/zap"
)

// task is one goroutine of a part, with its own context.
type task struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func goTask(ctx context.Context, f func(ctx context.Context)) *task {
	ctx, cancel := context.WithCancel(ctx)
	t := &task{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(t.done)
		f(ctx)
	}()
	return t
}

// stop ends the task and waits for it; a nil task is stopped.
func (t *task) stop() {
	if t == nil {
		return
	}
	t.cancel()
	<-t.done
}

// watchSettings are the paths the configuration watch follows besides the
// main file.
type watchSettings struct {
	AllowDir, HostsFile, ListsDir string
}

func watchSettingsOf(cfg *config.Config) watchSettings {
	return watchSettings{AllowDir: cfg.AllowDir, HostsFile: cfg.HostsFile, ListsDir: cfg.ListsDir}
}

// watchPart watches the configuration's files and asks the loop for a
// reload when they change.
type watchPart struct {
	d *daemon
	s watchSettings
	t *task
}

func (p *watchPart) start(ctx context.Context, s watchSettings) {
	p.s = s
	quiet := p.d.w.WatchQuiet
	if quiet <= 0 {
		quiet = 200 * time.Millisecond
	}
	w, err := config.NewWatcher(p.d.s.ConfigPath, s.AllowDir, quiet, p.d.log, "/etc/passwd", s.HostsFile, s.ListsDir)
	if err != nil {
		p.d.log.Warn("cannot watch the configuration; reload with SIGHUP", event.Field(event.WatchFailed), zap.Error(err))
		return
	}
	p.t = goTask(ctx, func(ctx context.Context) {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.Run(ctx)
		}()
		for {
			select {
			case <-ctx.Done():
				wg.Wait()
				return
			case <-w.C:
				p.d.ctl.ReloadBy(controller.ReloadWatch)
			}
		}
	})
}

func (p *watchPart) stop() {
	p.t.stop()
	p.t = nil
}

// denySettings are the deny log reader's.
type denySettings struct {
	Mode     config.LogMode
	Group    uint16
	Prefix   string
	Interval time.Duration
}

func denySettingsOf(cfg *config.Config) denySettings {
	return denySettings{Mode: cfg.DenyLog.Mode, Group: cfg.DenyLog.Group, Prefix: cfg.DenyLog.Prefix, Interval: cfg.DenyLog.Interval}
}

// denyPart reads the deny log (deny_log.mode nflog) into deny events and
// the recent denies, and publishes those for `egressd denies` (runtime
// directory) and `egressd learn` (state directory) while it is on.
type denyPart struct {
	d         *daemon
	s         denySettings
	reader    *task
	publish   context.CancelFunc
	published []<-chan struct{} // the publishers' last writes
}

func (p *denyPart) start(ctx context.Context, s denySettings) {
	p.s = s
	if s.Mode != config.LogNFLOG {
		p.stopPublishers()
		p.d.removeRecent() // a previous run's (or mode's): not current
		return
	}
	if p.d.w.DenyLog == nil {
		p.failed(s, errNoDenyLog)
		return
	}
	read, err := p.d.w.DenyLog(s.Group)
	if err != nil {
		p.failed(s, err)
		return
	}
	if p.publish == nil {
		p.startPublishers()
	}
	p.reader = goTask(ctx, func(ctx context.Context) { read(ctx, p.d.ctl, s.Prefix, s.Interval, p.d.rec) })
}

func (p *denyPart) failed(s denySettings, err error) {
	p.d.log.Error("cannot read the deny log; denied connections are still rejected and counted, but not reported as events",
		event.Field(event.DenyLogFailed), zap.Uint16("group", s.Group), zap.Error(err))
}

// startPublishers starts the publishers under a context of their own: they
// end only by stopPublishers, after every part that records into the
// recent denies has stopped (stop order).
func (p *denyPart) startPublishers() {
	pctx, cancel := context.WithCancel(context.Background())
	p.publish = cancel
	if dir := p.d.s.StateDir; dir != "" {
		if err := deny.LoadObserved(p.d.rec, dir); err != nil {
			p.d.log.Warn("cannot read the observations of the previous run; egressd learn starts afresh", event.Field(event.StateFailed), zap.Error(err))
		}
		p.published = append(p.published, deny.PublishRecent(pctx, p.d.rec, dir, deny.ObservedFile, 10*time.Second, 10*time.Second, p.d.log))
	}
	p.published = append(p.published, deny.PublishRecent(pctx, p.d.rec, p.d.s.RuntimeDir, deny.RecentFile, 250*time.Millisecond, time.Second, p.d.log))
}

// stopReader stops the reader; its last window is in the recent denies
// when it returns.
func (p *denyPart) stopReader() {
	p.reader.stop()
	p.reader = nil
}

// stopPublishers ends the publishers after their last write (each waited
// for publishWait at most).
func (p *denyPart) stopPublishers() {
	if p.publish == nil {
		return
	}
	p.publish()
	p.publish = nil
	for _, done := range p.published {
		select {
		case <-done:
		case <-time.After(publishWait):
		}
	}
	p.published = nil
}

type noDenyLog struct{}

func (noDenyLog) Error() string { return "this egressd cannot read NFLOG" }

var errNoDenyLog error = noDenyLog{}

// MetricsSettings are the metrics endpoint's.
type MetricsSettings struct {
	Listen      string // metrics_listen: HOST:PORT or unix:PATH; "": none
	SocketMode  os.FileMode
	SocketGroup string
}

func metricsSettingsOf(cfg *config.Config) MetricsSettings {
	return MetricsSettings{Listen: cfg.MetricsListen, SocketMode: cfg.MetricsSocketMode, SocketGroup: cfg.MetricsSocketGroup}
}

// metricsPart serves the metrics endpoint. Enforcement never depends on it.
type metricsPart struct {
	d *daemon
	s MetricsSettings
	t *task
}

func (p *metricsPart) start(ctx context.Context, s MetricsSettings) {
	p.s = s
	if s.Listen == "" {
		return
	}
	if p.d.w.ListenMetrics == nil {
		return
	}
	ln, err := p.d.w.ListenMetrics(s)
	if err != nil {
		p.d.log.Error("metrics endpoint failed; enforcement is unaffected", event.Field(event.MetricsFailed), zap.Error(err))
		return
	}
	p.d.log.Info("serving metrics", event.Field(event.MetricsListening), zap.String("addr", ln.Addr()), zap.Int("max_connections", metrics.MaxConns))
	p.t = goTask(ctx, func(ctx context.Context) {
		if err := ln.Serve(ctx); err != nil {
			p.d.log.Error("metrics endpoint failed; enforcement is unaffected", event.Field(event.MetricsFailed), zap.Error(err))
		}
	})
}

func (p *metricsPart) stop() {
	p.t.stop()
	p.t = nil
}

// bindSettings are the bind reports' window (deny_log.interval).
func bindSettings(cfg *config.Config) time.Duration { return cfg.DenyLog.Interval }

// bindsPart reads the listen restriction's reports (bind_denied) once the
// restriction is loaded. The loop loads it (Listen.Apply), so open runs on
// the loop's goroutine; the window is set by the supervisor: both under mu.
type bindsPart struct {
	d        *daemon
	mu       sync.Mutex
	interval time.Duration
	readers  []*task
	stopped  bool
}

// settings sets the window of readers opened from now on; true when one
// is open already (it keeps the window it was opened with).
func (p *bindsPart) settings(interval time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.interval = interval
	return len(p.readers) > 0
}

func (p *bindsPart) current() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.interval
}

// open returns what the listen enforcer calls with each reader it opens.
func (p *bindsPart) open(ctx context.Context) func(BindReader) {
	return func(read BindReader) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.stopped {
			return
		}
		interval := p.interval
		p.readers = append(p.readers, goTask(ctx, func(ctx context.Context) { read(ctx, p.d.ctl, interval, p.d.rec) }))
	}
}

// stop ends the readers, each after its last window.
func (p *bindsPart) stop() {
	p.mu.Lock()
	p.stopped = true
	readers := p.readers
	p.readers = nil
	p.mu.Unlock()
	for _, t := range readers {
		t.stop()
	}
}
