// Command egressd limits where each service user may connect out to.
// This file holds flags and wiring only; the logic lives in packages.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/egressd/egressd/internal/bindguard"
	"github.com/egressd/egressd/internal/event"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/check"
	"github.com/egressd/egressd/internal/controller"
	"github.com/egressd/egressd/internal/deny"
	"github.com/egressd/egressd/internal/dnsproxy"
	"github.com/egressd/egressd/internal/logs"
	"github.com/egressd/egressd/internal/metrics"
	"github.com/egressd/egressd/internal/nflog"
	"github.com/egressd/egressd/internal/state"
	"github.com/egressd/egressd/internal/version"
	"github.com/egressd/egressd/ruleset"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "harden":
		return cmdHarden(args[1:], stdout, stderr)
	case "wait":
		return cmdWait(args[1:], stderr)
	case "remove":
		return cmdRemove(args[1:], stderr)
	case "plan":
		return cmdPlan(args[1:], stdout, stderr)
	case "denies":
		return cmdDenies(args[1:], stdout, stderr)
	case "learn":
		return cmdLearn(args[1:], stdout, stderr)
	case "demo":
		return cmdDemo(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, version.Get())
		return 0
	case "help", "-h", "--help":
		return cmdHelp(args[1:], stdout, stderr)
	case "man":
		return cmdMan(args[1:], stdout, stderr)
	case "completion":
		return cmdCompletion(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "egressd: unknown command %q\n\n%s", args[0], usage)
	return 2
}

func newLogger(level string, w io.Writer) (*zap.Logger, error) {
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %v", err)
	}
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	enc.EncodeDuration = zapcore.StringDurationEncoder
	core := logs.Quiet(logs.NewCore(enc, w, lvl), time.Minute) // journald priorities, terminal format; one event per DNS outage
	return zap.New(core), nil
}

func cmdRun(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", config.DefaultPath, "main configuration file")
	once := fs.Bool("once", false, "resolve and apply once, then exit")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	runtimeDir := fs.String("runtime-dir", state.DefaultDir, "where the daemon publishes its state for egressd check")
	bpfDir := fs.String("bpf-dir", bindguard.DefaultDir, "where the listen restriction's BPF programs and maps are pinned (on bpffs)")
	listenCgroup := fs.String("listen-cgroup", "", "the cgroup the listen restriction attaches to (default: the cgroup2 root, every process)")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "egressd run: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	required := false
	fs.Visit(func(f *flag.Flag) { required = required || f.Name == "config" })
	log, err := newLogger(*level, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "egressd:", err)
		return 2
	}
	defer log.Sync() //nolint:errcheck
	if os.Getenv("GOGC") == "" {
		// The live heap is small (about 10 MiB at 10,000 names) but refresh
		// bursts make garbage; collecting at +50% instead of +100% keeps the
		// resident size down for a negligible CPU cost. GOGC overrides.
		debug.SetGCPercent(50)
	}

	if !check.CanAdmin() {
		fmt.Fprintln(stderr, "egressd run: needs root or CAP_NET_ADMIN (it changes nftables): run it as root, or through egressd.service, which grants CAP_NET_ADMIN to its own user")
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	release, err := state.Lock(*runtimeDir)
	if err != nil {
		log.Error("refusing to start", event.Field(event.StartRefused), zap.Error(err))
		fmt.Fprintln(stderr, "egressd:", err)
		return 1
	}
	defer release()
	kernel := &ruleset.Netlink{}
	m := metrics.New()
	var proxy controller.DNSProxy
	// What the daemon observes for `egressd denies` and `egressd learn`:
	// denied and audited attempts (NFLOG), and the names the DNS proxy
	// answered or refused.
	rec := deny.NewRecent(0)
	if !*once {
		observe := func(o dnsproxy.Observation) { rec.Resolve(o.Allowlist, o.Name, o.Addrs, o.Listed, o.Refused, o.At) }
		srv, closeProxy, err := newDNSProxy(ctx, kernel, log, m, observe)
		if err != nil {
			// Without conntrack the proxy cannot tell who asks: it does not
			// answer, and dns: proxy users' queries fail (never a bypass).
			log.Error("the DNS proxy cannot start: dns: proxy users' queries fail", event.Field(event.DNSProxyFailed), zap.Error(err))
		} else {
			proxy = srv
			defer closeProxy()
		}
	}
	// listen: restriction (cgroup BPF). Its reports become bind_denied events
	// once it is loaded; lookups go through the controller, set below.
	var ctl *controller.Controller
	listen := &bindguard.Enforcer{Dir: listenPinDir(fs, *bpfDir), Cgroup: *listenCgroup}
	if !*once {
		listen.OnOpen = func(g *bindguard.Guard) {
			rd, err := g.Events()
			if err != nil {
				log.Error("cannot read refused binds; they are still refused, but not reported", event.Field(event.DenyLogFailed), zap.Error(err))
				return
			}
			go deny.RunBinds(ctx, rd, ctl, ctl.Config().DenyLog.Interval, log, m, rec)
		}
	}
	ctl, err = controller.New(controller.Options{
		ConfigPath: *cfgPath, ConfigRequired: required, Kernel: kernel, Log: log, Metrics: m, StateDir: *runtimeDir, DNSProxy: proxy, Listen: listen,
		Notify:    func(s string) { daemon.SdNotify(false, s) }, //nolint:errcheck // no-op outside systemd
		Heartbeat: watchdogHeartbeat(),                          // WATCHDOG=1 from the loop when WatchdogSec= is set
		LastGood:  lastGoodStore(),                              // $STATE_DIRECTORY: invalid files at start enforce the last good configuration
	})
	if err != nil {
		fmt.Fprintln(stderr, "egressd:", err)
		return 2
	}
	m.SetDenyCounters(ctl.DeniedPackets)
	if *once {
		ctl.SetStateDir("") // no daemon behind it: check compares with fresh DNS
		failed, err := ctl.Once(ctx)
		if err != nil {
			log.Error("apply failed", event.Field(event.ApplyFailed), zap.Error(err))
			return 1
		}
		if len(failed) > 0 {
			return 1
		}
		return 0
	}

	w, err := config.NewWatcher(*cfgPath, ctl.Config().AllowDir, 200*time.Millisecond, log,
		"/etc/passwd", ctl.Config().HostsFile, ctl.Config().ListsDir)
	if err != nil {
		log.Warn("cannot watch the configuration; reload with SIGHUP", event.Field(event.WatchFailed), zap.Error(err))
	} else {
		go w.Run(ctx)
		go func() {
			for range w.C {
				ctl.Reload()
			}
		}()
	}
	if events, err := kernel.Watch(ctx); err != nil {
		log.Warn("cannot watch nftables for changes by other tools; drift is found by the periodic check only",
			event.Field(event.WatchFailed), zap.Error(err))
	} else {
		ctl.SetKernelEvents(events)
	}
	cfg := ctl.Config()
	var published []<-chan struct{} // the recent denies' last writes, awaited at stop
	defer func() {
		for _, done := range published {
			select {
			case <-done:
			case <-time.After(2 * time.Second):
			}
		}
	}()
	if cfg.DenyLog.Mode != config.LogNFLOG {
		os.Remove(filepath.Join(*runtimeDir, deny.RecentFile)) //nolint:errcheck // a previous run's: not current
	}
	if cfg.DenyLog.Mode == config.LogNFLOG {
		if l, err := nflog.Listen(cfg.DenyLog.Group, 0); err != nil {
			log.Error("cannot read the deny log; denied connections are still rejected and counted, but not reported as events",
				event.Field(event.DenyLogFailed), zap.Uint16("group", cfg.DenyLog.Group), zap.Error(err))
		} else {
			if dir := stateDirectory(); dir != "" {
				if err := deny.LoadObserved(rec, dir); err != nil {
					log.Warn("cannot read the observations of the previous run; egressd learn starts afresh", event.Field(event.StateFailed), zap.Error(err))
				}
				published = append(published, deny.PublishRecent(ctx, rec, dir, deny.ObservedFile, 10*time.Second, log))
			}
			published = append(published, deny.PublishRecent(ctx, rec, *runtimeDir, deny.RecentFile, 250*time.Millisecond, log))
			go deny.Run(ctx, l, ctl, cfg.DenyLog.Prefix, cfg.DenyLog.Interval, log, m, rec)
		}
	}
	if cfg.MetricsListen != "" {
		// Bound before the first apply, so the endpoint is up once READY=1 is sent.
		if ln, err := net.Listen("tcp", cfg.MetricsListen); err != nil {
			log.Error("metrics endpoint failed; enforcement is unaffected", event.Field(event.MetricsFailed), zap.Error(err))
		} else {
			go serveMetrics(ctx, ln, m, log)
		}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			ctl.Reload()
		}
	}()
	if err := ctl.Run(ctx); err != nil {
		log.Error("egressd failed", event.Field(event.RunFailed), zap.Error(err))
		if errors.Is(err, context.Canceled) {
			return 0
		}
		return 1
	}
	return 0
}

func serveMetrics(ctx context.Context, ln net.Listener, m *metrics.Metrics, log *zap.Logger) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	// Any local user can connect: bound every connection's life, so idle
	// keep-alive connections cannot pile up in the daemon.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second, IdleTimeout: 30 * time.Second, MaxHeaderBytes: 8 << 10}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	log.Info("serving metrics", event.Field(event.MetricsListening), zap.Stringer("addr", ln.Addr()))
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("metrics endpoint failed; enforcement is unaffected", event.Field(event.MetricsFailed), zap.Error(err))
	}
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", config.DefaultPath, "main configuration file")
	asJSON := fs.Bool("json", false, "print the report as JSON (docs/check.md)")
	explain := fs.Bool("explain", false, "explain USER HOST:PORT[/udp]: would USER reach it now, and by which entry")
	runtimeDir := fs.String("runtime-dir", state.DefaultDir, "where the daemon publishes its state")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	required := false
	fs.Visit(func(f *flag.Flag) { required = required || f.Name == "config" })
	o := check.Options{ConfigPath: *cfgPath, ConfigRequired: required, RuntimeDir: *runtimeDir, Kernel: &ruleset.Netlink{}}
	ctx := context.Background()
	if *explain {
		listen := fs.NArg() == 3 && fs.Arg(1) == "listen"
		if fs.NArg() != 2 && !listen {
			fmt.Fprintln(stderr, "usage: egressd check [--config F] [--json] --explain USER HOST:PORT[/udp]\n       egressd check [--config F] [--json] --explain USER listen tcp|udp:PORT")
			return check.ExitInvalid
		}
		target := fs.Arg(1)
		var x *check.Explanation
		var err error
		if listen {
			target = fs.Arg(2)
			x, err = check.ExplainListen(o, fs.Arg(0), target)
		} else {
			x, err = check.Explain(ctx, o, fs.Arg(0), target)
		}
		if err != nil {
			if *asJSON {
				writeJSON(stdout, check.CannotAnswer(fs.Arg(0), target, err))
			} else {
				fmt.Fprintln(stderr, "egressd check --explain: cannot answer:", err)
			}
			return check.ExitInvalid
		}
		if *asJSON {
			writeJSON(stdout, x)
		} else {
			x.WriteText(stdout)
		}
		return x.ExitCode
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "egressd check: unexpected argument %q\n", fs.Arg(0))
		return check.ExitInvalid
	}
	r := check.Run(ctx, o)
	if *asJSON {
		writeJSON(stdout, r)
	} else {
		r.WriteText(stdout)
	}
	return r.ExitCode
}

func writeJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v) //nolint:errcheck
}

func cmdRemove(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("remove", flag.ContinueOnError)
	fs.SetOutput(stderr)
	runtimeDir := fs.String("runtime-dir", state.DefaultDir, "the daemon's runtime directory (its lock says whether it runs)")
	bpfDir := fs.String("bpf-dir", bindguard.DefaultDir, "where the listen restriction is pinned")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "egressd remove: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if !check.CanAdmin() {
		fmt.Fprintln(stderr, "egressd remove: needs root or CAP_NET_ADMIN (it changes nftables); nothing was removed")
		return 1
	}
	// A running daemon would put the table back at once: removing it
	// would print a lie. Stopping the daemon is the operator's decision.
	pid, held, err := state.Holder(*runtimeDir)
	if err != nil {
		fmt.Fprintf(stderr, "egressd remove: refused: cannot tell whether the daemon runs (%v); nothing was removed\n", err)
		return 1
	}
	if held {
		who := "the egressd daemon"
		if pid > 0 {
			who = fmt.Sprintf("the egressd daemon (pid %d)", pid)
		}
		fmt.Fprintf(stderr, "egressd remove: refused: %s is running and would restore the table at once; nothing was removed.\n"+
			"Stop it first (systemctl stop egressd, or kill %s), then run egressd remove again.\n", who, pidOr(pid))
		return 1
	}
	code := 0
	if hooks := bindguard.Pinned(*bpfDir); len(hooks) > 0 {
		if err := bindguard.Remove(*bpfDir); err != nil {
			fmt.Fprintln(stderr, "egressd remove:", err)
			code = 1
		} else {
			fmt.Fprintf(stderr, "egressd: listen restriction removed (%s); listening is no longer restricted\n", *bpfDir)
		}
	}
	k := &ruleset.Netlink{}
	if _, err := k.ReadUsers(); errors.Is(err, ruleset.ErrNoTable) {
		fmt.Fprintln(stderr, "egressd remove: nothing to remove: table inet egressd does not exist")
		return code
	}
	if err := k.Remove(); err != nil {
		fmt.Fprintln(stderr, "egressd remove:", err)
		return 1
	}
	fmt.Fprintln(stderr, "egressd: table inet egressd removed; egress is no longer restricted")
	return code
}

func pidOr(pid int) string {
	if pid > 0 {
		return fmt.Sprint(pid)
	}
	return "its process"
}

// parseFlags parses flags wherever they stand among the positional
// arguments (check --explain USER HOST:PORT --json). --help prints the
// manual and exits 0; a bad flag exits 2. done says the caller returns code.
func parseFlags(fs *flag.FlagSet, args []string) (code int, done bool) {
	var pos []string
	fs.Usage = func() {} // the error is printed by fs; the manual on --help only
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(os.Stdout, usage)
				return 0, true
			}
			fmt.Fprintf(fs.Output(), "see egressd help for the %s options\n", fs.Name())
			return 2, true
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if rest[0] == "--" {
			pos = append(pos, rest[1:]...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	fs.Parse(append([]string{"--"}, pos...)) //nolint:errcheck // only positionals left
	return 0, false
}

// listenPinDir is --bpf-dir when given; else, under systemd, the bpffs that
// egressd-listen.conf binds at $RUNTIME_DIRECTORY/bpf (root's /sys/fs/bpf is
// closed to egressd's dynamic user) when it is there; else the default.
func listenPinDir(fs *flag.FlagSet, dir string) string {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "bpf-dir" })
	if given {
		return dir
	}
	if rd, _, _ := strings.Cut(os.Getenv("RUNTIME_DIRECTORY"), ":"); rd != "" {
		if p := filepath.Join(rd, "bpf"); bindguard.IsBPFFS(p) {
			return p
		}
	}
	return dir
}
