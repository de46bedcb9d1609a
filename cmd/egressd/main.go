// Command egressd limits where each service user may connect out to.
// This file holds flags and wiring only; the logic lives in packages.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/bindguard"
	"github.com/egressd/egressd/internal/check"
	"github.com/egressd/egressd/internal/controller"
	"github.com/egressd/egressd/internal/deny"
	"github.com/egressd/egressd/internal/dnsproxy"
	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/internal/logs"
	"github.com/egressd/egressd/internal/manual"
	"github.com/egressd/egressd/internal/metrics"
	"github.com/egressd/egressd/internal/nflog"
	"github.com/egressd/egressd/internal/sdnotify"
	"github.com/egressd/egressd/internal/state"
	"github.com/egressd/egressd/ruleset"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// commands are egressd's subcommands, each with its arguments.
var commands map[string]func(args []string, stdout, stderr io.Writer) int

func init() {
	commands = map[string]func([]string, io.Writer, io.Writer) int{
		"run":        func(a []string, _, e io.Writer) int { return cmdRun(a, e) },
		"check":      cmdCheck,
		"validate":   cmdValidate,
		"harden":     cmdHarden,
		"wait":       func(a []string, _, e io.Writer) int { return cmdWait(a, e) },
		"remove":     func(a []string, _, e io.Writer) int { return cmdRemove(a, e) },
		"plan":       cmdPlan,
		"denies":     cmdDenies,
		"learn":      cmdLearn,
		"demo":       cmdDemo,
		"version":    cmdVersion,
		"help":       cmdHelp,
		"man":        cmdMan,
		"completion": cmdCompletion,
	}
}

func run(args []string, stdout, stderr io.Writer) int {
	helpOut = stdout
	if len(args) == 0 {
		manual.Egressd.WriteOverview(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "--help":
		return cmdHelp(args[1:], stdout, stderr)
	case "--version":
		return cmdVersion(args[1:], stdout, stderr)
	}
	if c := commands[args[0]]; c != nil {
		return c(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "egressd: unknown command %q\nRun 'egressd --help' for the commands.\n", args[0])
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
		return usageError(stderr, "run", "unexpected argument %q", fs.Arg(0))
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

	checkDescriptorLimit(log)
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
	// One notify socket for the daemon's life: READY=1 and the watchdog's
	// heartbeats need no new descriptor (nil outside systemd).
	notifier, err := sdnotify.Open()
	if err != nil {
		log.Error("cannot notify systemd", event.Field(event.NotifyFailed), zap.Error(err))
	}
	defer notifier.Close() //nolint:errcheck
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
			go deny.RunBinds(ctx, rd, g.Lost, ctl, ctl.Config().DenyLog.Interval, log, m, rec)
		}
	}
	ctl, err = controller.New(controller.Options{
		ConfigPath: *cfgPath, ConfigRequired: required, Kernel: kernel, Log: log, Metrics: m, StateDir: *runtimeDir, DNSProxy: proxy, Listen: listen,
		Notify:    notifier.Send,
		Heartbeat: watchdogHeartbeat(notifier), // WATCHDOG=1 from the loop when WatchdogSec= is set
		LastGood:  lastGoodStore(),             // $STATE_DIRECTORY: invalid files at start enforce the last good configuration
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
				ctl.ReloadBy(controller.ReloadWatch)
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
		if ln, err := listenMetrics(cfg); err != nil {
			log.Error("metrics endpoint failed; enforcement is unaffected", event.Field(event.MetricsFailed), zap.Error(err))
		} else {
			go serveMetrics(ctx, ln, m, log)
		}
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			ctl.ReloadBy(controller.ReloadSignal)
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

// listenMetrics opens metrics_listen: a TCP port, or a unix socket with
// metrics_socket_mode and metrics_socket_group.
func listenMetrics(cfg *config.Config) (net.Listener, error) {
	gid := -1
	if cfg.MetricsSocketGroup != "" {
		g, err := config.GroupID(cfg.MetricsSocketGroup)
		if err != nil {
			return nil, fmt.Errorf("metrics_socket_group %q: %w", cfg.MetricsSocketGroup, err)
		}
		gid = g
	}
	// The socket's directories follow the configuration's trust rules: no
	// other user may replace the socket scrapers connect to.
	return metrics.Listen(cfg.MetricsListen, cfg.MetricsSocketMode, gid, config.Trust{})
}

func serveMetrics(ctx context.Context, ln net.Listener, m *metrics.Metrics, log *zap.Logger) {
	log.Info("serving metrics", event.Field(event.MetricsListening), zap.Stringer("addr", ln.Addr()), zap.Int("max_connections", metrics.MaxConns))
	if err := metrics.Serve(ctx, ln, m, log); err != nil {
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
	textfile := fs.String("textfile", "", "write the result for node_exporter's textfile collector to this file (atomically)")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	required := false
	fs.Visit(func(f *flag.Flag) { required = required || f.Name == "config" })
	o := check.Options{ConfigPath: *cfgPath, ConfigRequired: required, RuntimeDir: *runtimeDir, Kernel: &ruleset.Netlink{}, ListNFT: check.ListWithNFT}
	ctx := context.Background()
	if *explain {
		listen := fs.NArg() == 3 && fs.Arg(1) == "listen"
		if fs.NArg() != 2 && !listen {
			return usageError(stderr, "check", "--explain takes USER (or UNIT) and HOST:PORT[/udp], or USER listen tcp|udp:PORT")
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
	if *textfile != "" {
		if err := check.WriteTextfile(*textfile, r); err != nil {
			fmt.Fprintln(stderr, "egressd check:", err)
			return check.ExitInvalid
		}
		if r.ExitCode == check.ExitOK {
			return r.ExitCode // a timer's run: the problems, if any, are worth the journal
		}
	}
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
		return usageError(stderr, "remove", "unexpected argument %q", fs.Arg(0))
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

// listenPinDir is --bpf-dir when given; else, under systemd, the bpffs that
// egressd.service binds at $RUNTIME_DIRECTORY/bpf (root's /sys/fs/bpf is
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
