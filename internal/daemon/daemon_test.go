package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/controller"
	"github.com/egressd/egressd/internal/deny"
	"github.com/egressd/egressd/internal/dnsproxy"
	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/ruleset"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// world is a daemon's world without root: ruleset.Fake for the kernel, a
// deny log and a metrics endpoint that record what they were opened with.
type world struct {
	t    *testing.T
	dir  string // the configuration
	run  string // the runtime directory
	k    *ruleset.Fake
	logs *observer.ObservedLogs
	hup  chan os.Signal

	mu       sync.Mutex
	notified []string
	ready    chan struct{}
	groups   []uint16          // deny log groups opened
	readers  map[uint16]string // group -> "running" | "flushed"
	served   map[string]string // metrics address -> "serving" | "stopped"
	events   []string          // the order of stops
	lastDeny netip.Addr        // recorded at a reader's last flush
}

func newWorld(t *testing.T, main string) *world {
	t.Helper()
	w := &world{t: t, dir: t.TempDir(), run: t.TempDir(), k: &ruleset.Fake{}, hup: make(chan os.Signal, 1), ready: make(chan struct{}),
		readers: map[uint16]string{}, served: map[string]string{}}
	w.write("egressd.yaml", main)
	w.write("allow.d/billing.yaml", "user: billing\nallow: [192.0.2.1:443]\n")
	return w
}

func (w *world) write(name, body string) {
	w.t.Helper()
	p := filepath.Join(w.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		w.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) note(s string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.events = append(w.events, s)
}

type fakeListener struct {
	w    *world
	addr string
}

func (l fakeListener) Addr() string { return l.addr }
func (l fakeListener) Serve(ctx context.Context) error {
	<-ctx.Done()
	l.w.mu.Lock()
	l.w.served[l.addr] = "stopped"
	l.w.mu.Unlock()
	l.w.note("metrics stopped")
	return nil
}

func (w *world) world() World {
	return World{
		Kernel: w.k,
		Notify: func(s string) error {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.notified = append(w.notified, s)
			if s == "READY=1" {
				close(w.ready)
			}
			return nil
		},
		DenyLog: func(group uint16) (DenyReader, error) {
			if group == 666 {
				return nil, errors.New("group taken")
			}
			w.mu.Lock()
			w.groups = append(w.groups, group)
			w.readers[group] = "running"
			w.mu.Unlock()
			return func(ctx context.Context, lookup deny.Lookup, prefix string, interval time.Duration, rec *deny.Recent) {
				<-ctx.Done()
				// The last window, flushed as the reader stops.
				dst := netip.AddrFrom4([4]byte{203, 0, 113, byte(group % 256)})
				rec.Record(deny.Event{Allowlist: "billing", Proto: "tcp", Dst: dst, DPort: 22, Count: 1, First: time.Now(), Last: time.Now()})
				w.mu.Lock()
				w.readers[group], w.lastDeny = "flushed", dst
				w.mu.Unlock()
				w.note("deny reader flushed")
			}, nil
		},
		ListenMetrics: func(s MetricsSettings) (Listener, error) {
			if strings.HasSuffix(s.Listen, ":1") {
				return nil, errors.New("address already in use")
			}
			w.mu.Lock()
			w.served[s.Listen] = "serving"
			w.mu.Unlock()
			return fakeListener{w: w, addr: s.Listen}, nil
		},
		Hangup:     w.hup,
		Users:      func(string) (uint32, error) { return 1001, nil },
		Trust:      config.Trust{Above: w.dir},
		WatchQuiet: 20 * time.Millisecond,
	}
}

// start runs the daemon until the returned stop is called; stop returns
// run's error.
func (w *world) start() (stop func() error) {
	w.t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	w.logs = logs
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, Settings{ConfigPath: filepath.Join(w.dir, "egressd.yaml"), ConfigRequired: true, RuntimeDir: w.run, Log: zap.New(core)}, w.world())
	}()
	select {
	case <-w.ready:
	case err := <-errc:
		w.t.Fatalf("run ended before READY=1: %v", err)
	case <-time.After(10 * time.Second):
		w.t.Fatal("no READY=1")
	}
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-errc
		})
		return err
	}
	w.t.Cleanup(func() { stop() }) //nolint:errcheck
	return stop
}

func (w *world) logged(name string) []observer.LoggedEntry {
	return w.logs.FilterField(event.Field(name)).All()
}

// eventually polls cond (the daemon works on its own goroutines).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

const mainFile = "resolvers: [\"192.0.2.53:53\"]\nallow_dir: allow.d\nmetrics_listen: \"127.0.0.1:9100\"\ndeny_log: { mode: nflog, group: 100 }\n"

// A stop ends the loop first (stopping, STOPPING=1, the table kept), then
// the readers, whose last window reaches the recent denies, then the
// publishers' last write of denies.json; the metrics endpoint is closed.
func TestStopOrder(t *testing.T) {
	w := newWorld(t, mainFile)
	stop := w.start()
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	w.mu.Lock()
	notified, readers, served, last := w.notified, w.readers, w.served, w.lastDeny
	w.mu.Unlock()
	if !containsString(notified, "READY=1") || notified[len(notified)-1] != "STOPPING=1" {
		t.Errorf("notifications %q, want READY=1 … STOPPING=1 last", notified)
	}
	if readers[100] != "flushed" || served["127.0.0.1:9100"] != "stopped" {
		t.Errorf("readers %v, metrics %v: not stopped", readers, served)
	}
	if w.k.Removed || w.k.Fulls != 1 {
		t.Errorf("on_exit keep: removed %v, %d full applies", w.k.Removed, w.k.Fulls)
	}
	if n := len(w.logged(event.Stopping)); n != 1 {
		t.Errorf("%d stopping events", n)
	}
	// The reader's last window is in the file `egressd denies` reads.
	data, err := os.ReadFile(filepath.Join(w.run, deny.RecentFile))
	if err != nil || !strings.Contains(string(data), last.String()) {
		t.Fatalf("%s lacks the last window's deny %s: %v\n%s", deny.RecentFile, last, err, data)
	}
}

// on_exit: remove: the table goes with the daemon, after STOPPING=1.
func TestStopRemovesOnExitRemove(t *testing.T) {
	w := newWorld(t, mainFile+"on_exit: remove\n")
	stop := w.start()
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	if !w.k.Removed {
		t.Error("on_exit remove: the table stayed")
	}
}

// A reload that changes deny_log.group and metrics_listen restarts those
// parts with the new settings at once (settings_applied), and says nothing
// needs a restart; the old reader is flushed and the old endpoint closed.
// A part that cannot start with its new settings says so and the daemon
// goes on.
func TestReloadRestartsParts(t *testing.T) {
	w := newWorld(t, mainFile)
	w.start()
	w.write("egressd.yaml", strings.NewReplacer("9100", "9101", "group: 100", "group: 101").Replace(mainFile))
	w.hup <- os.Interrupt // SIGHUP (any value: the channel is the signal)
	eventually(t, "the parts restarted", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.readers[101] == "running" && w.served["127.0.0.1:9101"] == "serving"
	})
	w.mu.Lock()
	if w.readers[100] != "flushed" || w.served["127.0.0.1:9100"] != "stopped" {
		t.Errorf("old parts still run: readers %v, metrics %v", w.readers, w.served)
	}
	w.mu.Unlock()
	got := map[string]string{}
	for _, e := range w.logged(event.SettingsApplied) {
		got[e.ContextMap()["part"].(string)] = fmt.Sprint(e.ContextMap()["settings"])
	}
	if got["deny_log"] != "[deny_log.group]" || got["metrics"] != "[metrics_listen]" || len(got) != 2 {
		t.Errorf("settings_applied %v", got)
	}
	if n := len(w.logged(event.RestartRequired)); n != 0 {
		t.Errorf("%d restart_required events for settings that were applied", n)
	}
	if n := len(w.logged(event.ConfigReloaded)); n != 1 {
		t.Errorf("%d config_reloaded events, want the signal's one", n)
	}

	// Failures are reported, and enforcement goes on.
	w.write("egressd.yaml", strings.NewReplacer("9100", "1", "group: 100", "group: 666").Replace(mainFile))
	w.hup <- os.Interrupt
	eventually(t, "the failures reported", func() bool {
		return len(w.logged(event.MetricsFailed)) == 1 && len(w.logged(event.DenyLogFailed)) == 1
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.readers[101] != "flushed" || w.served["127.0.0.1:9101"] != "stopped" {
		t.Errorf("the parts of the previous settings still run: readers %v, metrics %v", w.readers, w.served)
	}
}

// deny_log.mode none stops the reader and removes the file `egressd
// denies` reads (it would be stale); nflog again brings both back.
func TestReloadDenyLogMode(t *testing.T) {
	w := newWorld(t, mainFile)
	w.start()
	recent := filepath.Join(w.run, deny.RecentFile)
	eventually(t, "denies.json", func() bool { _, err := os.Stat(recent); return err == nil })
	w.write("egressd.yaml", strings.Replace(mainFile, "mode: nflog", "mode: none", 1))
	w.hup <- os.Interrupt
	eventually(t, "the reader stopped and denies.json removed", func() bool {
		_, err := os.Stat(recent)
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.readers[100] == "flushed" && errors.Is(err, os.ErrNotExist)
	})
	w.write("egressd.yaml", mainFile)
	w.hup <- os.Interrupt
	eventually(t, "the reader back", func() bool {
		_, err := os.Stat(recent)
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.readers[100] == "running" && err == nil
	})
}

// An edit of a watched file reloads without a signal; a new allow_dir is
// watched from the reload on.
func TestWatchFollowsAllowDir(t *testing.T) {
	w := newWorld(t, mainFile)
	w.start()
	w.write("other.d/ops.yaml", "user: ops\nallow: [192.0.2.2:22]\n")
	w.write("egressd.yaml", strings.Replace(mainFile, "allow.d", "other.d", 1))
	eventually(t, "the watch restarted", func() bool { return len(w.logged(event.SettingsApplied)) == 1 })
	before := len(w.logged(event.ConfigReloaded))
	w.write("other.d/ops.yaml", "user: ops\nallow: [192.0.2.3:22]\n")
	eventually(t, "a reload from the new directory's watch", func() bool { return len(w.logged(event.ConfigReloaded)) > before })
}

// An invalid configuration at start is controller.ErrConfig; run --once
// applies and returns.
func TestRunConfigAndOnce(t *testing.T) {
	w := newWorld(t, "resolvers: [bad\n")
	core, _ := observer.New(zap.DebugLevel)
	s := Settings{ConfigPath: filepath.Join(w.dir, "egressd.yaml"), ConfigRequired: true, RuntimeDir: w.run, Log: zap.New(core)}
	if err := run(context.Background(), s, w.world()); !errors.Is(err, controller.ErrConfig) {
		t.Fatalf("invalid configuration: %v", err)
	}
	w.write("egressd.yaml", mainFile)
	s.Once = true
	if err := run(context.Background(), s, w.world()); err != nil {
		t.Fatalf("once: %v", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.k.Fulls != 1 || len(w.groups) != 0 || len(w.served) != 0 {
		t.Errorf("once: %d applies, deny log %v, metrics %v (once runs no parts)", w.k.Fulls, w.groups, w.served)
	}
}

func containsString(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

type fakeProxy struct{}

func (fakeProxy) SetPolicy(*dnsproxy.Policy) {}
func (fakeProxy) Listen(uint16) error        { return nil }
func (fakeProxy) Refill() error              { return nil }

// The bind reports and the DNS proxy are stopped before the publishers'
// last write: what they saw last is in denies.json and observed.json. A
// changed deny_log.interval cannot reach bind reports already being read:
// restart_required says so.
func TestStopFlushesBindReportsAndProxy(t *testing.T) {
	w := newWorld(t, mainFile)
	stateDir := t.TempDir()
	var openReports func(BindReader)
	proxyClosed := false
	world := w.world()
	world.BindReports = func(open func(BindReader)) { openReports = open }
	var observe func(dnsproxy.Observation)
	world.DNSProxy = func(ctx context.Context, obs func(dnsproxy.Observation)) (controller.DNSProxy, func(), error) {
		observe = obs
		return fakeProxy{}, func() {
			// The proxy's last answer, observed as it closes.
			observe(dnsproxy.Observation{Allowlist: "billing", Name: "last.example.test", Listed: true, At: time.Now()})
			w.mu.Lock()
			proxyClosed = true
			w.mu.Unlock()
		}, nil
	}
	core, logs := observer.New(zap.DebugLevel)
	w.logs = logs
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, Settings{ConfigPath: filepath.Join(w.dir, "egressd.yaml"), ConfigRequired: true, RuntimeDir: w.run, StateDir: stateDir, Log: zap.New(core)}, world)
	}()
	select {
	case <-w.ready:
	case err := <-errc:
		t.Fatalf("run: %v", err)
	}
	// The listen restriction was loaded: its reader starts.
	bindFlushed := make(chan struct{})
	openReports(func(ctx context.Context, lookup deny.Lookup, interval time.Duration, rec *deny.Recent) {
		if interval != 10*time.Second {
			t.Errorf("bind reports' window %v, want deny_log.interval's default", interval)
		}
		<-ctx.Done()
		rec.Record(deny.Event{Allowlist: "billing", Proto: "tcp", Dst: netip.MustParseAddr("0.0.0.0"), DPort: 8080, Bind: true, Count: 1, First: time.Now(), Last: time.Now()})
		close(bindFlushed)
	})
	w.write("egressd.yaml", strings.Replace(mainFile, "group: 100", "group: 100, interval: 30s", 1))
	w.hup <- os.Interrupt
	eventually(t, "restart_required", func() bool { return len(w.logged(event.RestartRequired)) == 1 })
	if e := w.logged(event.RestartRequired)[0].ContextMap(); e["setting"] != "deny_log.interval" {
		t.Errorf("restart_required %v", e)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("run: %v", err)
	}
	select {
	case <-bindFlushed:
	default:
		t.Fatal("the bind reports' reader was not stopped")
	}
	w.mu.Lock()
	closed := proxyClosed
	w.mu.Unlock()
	if !closed {
		t.Fatal("the DNS proxy was not closed")
	}
	denies, _ := os.ReadFile(filepath.Join(w.run, deny.RecentFile))
	observed, _ := os.ReadFile(filepath.Join(stateDir, deny.ObservedFile))
	for name, doc := range map[string]string{"denies.json": string(denies), "observed.json": string(observed)} {
		if !strings.Contains(doc, "8080") || !strings.Contains(doc, "last.example.test") {
			t.Errorf("%s lacks the bind report's last window or the proxy's last answer:\n%s", name, doc)
		}
	}
}

// Outside systemd there is no watchdog to feed.
func TestWatchdogHeartbeatOff(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "")
	if hb := watchdogHeartbeat(nil); hb.Every != 0 || hb.Beat != nil {
		t.Errorf("heartbeat %+v without WatchdogSec=", hb)
	}
}
