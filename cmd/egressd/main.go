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
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/check"
	"github.com/egressd/egressd/internal/controller"
	"github.com/egressd/egressd/internal/deny"
	"github.com/egressd/egressd/internal/logs"
	"github.com/egressd/egressd/internal/metrics"
	"github.com/egressd/egressd/internal/nflog"
	"github.com/egressd/egressd/internal/state"
	"github.com/egressd/egressd/ruleset"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

const usage = `NAME
    egressd - per-service egress allowlists, kept current from DNS, enforced by nftables

SYNOPSIS
    egressd run [--config FILE] [--once] [--log-level LEVEL] [--runtime-dir DIR]
    egressd check [--config FILE] [--json] [--runtime-dir DIR]
    egressd check [--config FILE] [--json] --explain USER HOST:PORT[/udp]
    egressd harden --user USER [--writable PATH]... [--listen tcp:PORT|udp:PORT]...
                   [--jit] [--nproc N] [--fsize SIZE] [--apparmor PROFILE | --selinux CONTEXT]
                   [--loopback-only] [--no-private-users] [--systemd-version N]
                   [--target-features FEATURES] [--egressd PATH] [--gate-timeout D]
                   [--allowlist NAME] [--unit NAME] [--config FILE]
    egressd harden --audit UNIT_FILE [--json]
    egressd wait (--user USER | --allowlist NAME) [--timeout 30s]
    egressd remove
    egressd demo
    egressd version
    egressd help

DESCRIPTION
    For each protected service user, egressd allows outgoing connections to
    the host:port destinations of that user's allowlist, and logs, then
    rejects, everything else that user sends. Names are resolved with
    egressd's own DNS client, honouring TTLs, and the nftables table
    "inet egressd" is kept current in atomic netlink transactions.
    Users without an allowlist, and root, are not affected.

COMMANDS
    run       Run the daemon in the foreground (systemd Type=notify). It
              applies the whole ruleset, signals READY=1, then follows DNS
              TTLs and allowlist edits. SIGHUP reloads the configuration;
              SIGTERM stops, leaving the rules in place (on_exit: keep) or
              removing them (on_exit: remove).
    run --once
              Resolve everything once, apply, exit.
    check     Validate the configuration, resolve every name once, and
              compare with the live kernel table (through netlink). When
              the daemon runs, the kernel is compared with the daemon's
              published view (DIR/state.json), so lingering and stale-served
              addresses are not drift. Prints one line per allowlist, then
              each problem with what to do; --json prints the document
              described in docs/check.md. Changes nothing.
    check --explain USER HOST:PORT[/udp]
              Would USER be allowed to reach HOST:PORT right now, according
              to the live kernel, and by which allowlist entry; when denied,
              the nearest entries (same host other port, same name other
              address).
    harden    Print a systemd drop-in that hardens one protected service:
              its own user, no new privileges, private /tmp, read-only
              system with explicit writable paths, no W+X memory, resource
              limits, port binding limits, LSM profile, and ordering after
              egressd.service (Wants=, never Requires=) with a start gate
              (egressd wait). Every line says which exploit behaviour it
              blocks; options the target systemd lacks are left out, and
              what it does not enforce is said (SocketBind* without
              BPF_FRAMEWORK). Warnings on stderr.
              See docs/hardening.md.
    harden --audit UNIT_FILE
              Report the unit's exposure score (systemd-analyze security),
              each missing protection with the line to add, and every code
              or configuration path the service user could modify (walking
              up to /), with the fix. Exit 1 when anything is found.
    wait      The start gate of a protected service (ExecStartPre=+, written
              by harden): wait until egressd restricts USER (or the user of
              allowlist NAME) in the kernel, then exit 0; exit 1 when the
              timeout passes first, so the service does not start. Needs
              CAP_NET_ADMIN to read nf_tables (the + prefix runs it as root).
    remove    Delete the table inet egressd: every restriction is lifted.
              For uninstalling and emergencies.
    demo      Run the real daemon on example allowlists inside a throwaway
              network namespace, with its own DNS server and example
              services; prints what is allowed, what is denied and a DNS
              change taking effect. Never touches the host's firewall.
    version   Print version and build information.

OPTIONS
    --config FILE    Main configuration file (default /etc/egressd/egressd.yaml;
                     when not given and missing, every key takes its default).
    --once           With run: apply once and exit.
    --log-level L    debug, info (default), warn or error.
    --runtime-dir D  where the daemon publishes its state for check
                     (default /run/egressd).
    --json           With check: machine-readable output.

FILES
    /etc/egressd/egressd.yaml        main configuration
    /etc/egressd/allow.d/NAME.yaml   one allowlist per service user

EXIT STATUS
    run        0 on a clean stop; 1 on a runtime failure; 2 if the
               configuration is invalid at start.
    run --once 0 applied; 1 applied, but some names failed to resolve;
               2 configuration invalid (nothing was changed).
    check      0 in sync, no problems; 1 drift or problems; 2 configuration
               invalid, or check cannot run (not root, no nf_tables).
    check --explain
               0 allowed (or the user is not restricted); 1 denied;
               2 cannot answer.
    harden     0 printed; 2 invalid options. With --audit: 0 nothing found,
               1 findings, 2 cannot read the unit.
    wait       0 the user is restricted; 1 not by the timeout; 2 bad arguments.
    remove     0 removed (or nothing to remove); 1 on failure.

EVENTS
    Logs are JSON lines on stderr with a stable "event" key: started,
    config_loaded, config_rejected, resolved, resolve_failed,
    ruleset_applied, apply_failed, user_missing, user_conflict, deny,
    deny_overflow, drift_repaired, drift_repeating, stopping.

SEE ALSO
    README.md, nft(8), systemd.exec(5)
`

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
	case "demo":
		return cmdDemo(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, versionString())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "egressd: unknown command %q\n\n%s", args[0], usage)
	return 2
}

func versionString() string {
	s := "egressd " + version
	if bi, ok := debug.ReadBuildInfo(); ok {
		s += " (" + bi.GoVersion
		for _, kv := range bi.Settings {
			if kv.Key == "vcs.revision" || kv.Key == "vcs.modified" {
				s += ", " + kv.Key + "=" + kv.Value
			}
		}
		s += ")"
	}
	return s
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
	if err := fs.Parse(args); err != nil {
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

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	release, err := state.Lock(*runtimeDir)
	if err != nil {
		log.Error("refusing to start", zap.String("event", "start_refused"), zap.Error(err))
		fmt.Fprintln(stderr, "egressd:", err)
		return 1
	}
	defer release()
	kernel := &ruleset.Netlink{}
	m := metrics.New()
	ctl, err := controller.New(controller.Options{
		ConfigPath: *cfgPath, ConfigRequired: required, Kernel: kernel, Log: log, Metrics: m, StateDir: *runtimeDir,
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
			log.Error("apply failed", zap.String("event", controller.EvApplyFailed), zap.Error(err))
			return 1
		}
		if len(failed) > 0 {
			return 1
		}
		return 0
	}

	w, err := config.NewWatcher(*cfgPath, ctl.Config().AllowDir, 200*time.Millisecond, log, "/etc/passwd")
	if err != nil {
		log.Warn("cannot watch the configuration; reload with SIGHUP", zap.String("event", "watch_failed"), zap.Error(err))
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
			zap.String("event", controller.EvVerifyFailed), zap.Error(err))
	} else {
		ctl.SetKernelEvents(events)
	}
	cfg := ctl.Config()
	if cfg.DenyLog.Mode == config.LogNFLOG {
		if l, err := nflog.Listen(cfg.DenyLog.Group, 0); err != nil {
			log.Error("cannot read the deny log; denied connections are still rejected and counted, but not reported as events",
				zap.String("event", "deny_log_failed"), zap.Uint16("group", cfg.DenyLog.Group), zap.Error(err))
		} else {
			go deny.Run(ctx, l, ctl, cfg.DenyLog.Interval, log, m)
		}
	}
	if cfg.MetricsListen != "" {
		// Bound before the first apply, so the endpoint is up once READY=1 is sent.
		if ln, err := net.Listen("tcp", cfg.MetricsListen); err != nil {
			log.Error("metrics endpoint failed; enforcement is unaffected", zap.String("event", "metrics_failed"), zap.Error(err))
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
		log.Error("egressd failed", zap.String("event", controller.EvApplyFailed), zap.Error(err))
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
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	log.Info("serving metrics", zap.String("event", "metrics_listening"), zap.Stringer("addr", ln.Addr()))
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("metrics endpoint failed; enforcement is unaffected", zap.String("event", "metrics_failed"), zap.Error(err))
	}
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", config.DefaultPath, "main configuration file")
	asJSON := fs.Bool("json", false, "print the report as JSON (docs/check.md)")
	explain := fs.Bool("explain", false, "explain USER HOST:PORT[/udp]: would USER reach it now, and by which entry")
	runtimeDir := fs.String("runtime-dir", state.DefaultDir, "where the daemon publishes its state")
	if err := fs.Parse(args); err != nil {
		return check.ExitInvalid
	}
	required := false
	fs.Visit(func(f *flag.Flag) { required = required || f.Name == "config" })
	o := check.Options{ConfigPath: *cfgPath, ConfigRequired: required, RuntimeDir: *runtimeDir, Kernel: &ruleset.Netlink{}}
	ctx := context.Background()
	if *explain {
		if fs.NArg() != 2 {
			fmt.Fprintln(stderr, "usage: egressd check [--config F] [--json] --explain USER HOST:PORT[/udp]")
			return check.ExitInvalid
		}
		x, err := check.Explain(ctx, o, fs.Arg(0), fs.Arg(1))
		if err != nil {
			fmt.Fprintln(stderr, "egressd check --explain:", err)
			return check.ExitInvalid
		}
		if *asJSON {
			writeJSON(stdout, x)
		} else {
			x.WriteText(stdout)
		}
		if x.Verdict == "denied" {
			return check.ExitProblem
		}
		return check.ExitOK
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
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := (&ruleset.Netlink{}).Remove(); err != nil {
		fmt.Fprintln(stderr, "egressd remove:", err)
		return 1
	}
	fmt.Fprintln(stderr, "egressd: table inet egressd removed; egress is no longer restricted")
	return 0
}
