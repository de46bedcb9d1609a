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
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/bindguard"
	"github.com/egressd/egressd/internal/check"
	"github.com/egressd/egressd/internal/controller"
	"github.com/egressd/egressd/internal/daemon"
	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/internal/logs"
	"github.com/egressd/egressd/internal/manual"
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

// newLogger is the daemon's logger; buffered (run --once) writes JSON
// lines in blocks, and flush must run before the process exits.
func newLogger(level string, w io.Writer, buffered bool) (log *zap.Logger, flush func() error, err error) {
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, nil, fmt.Errorf("--log-level: %v", err)
	}
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	enc.EncodeDuration = zapcore.StringDurationEncoder
	inner, flush := logs.NewCore(enc, w, lvl), func() error { return nil }
	if buffered {
		inner, flush = logs.NewBufferedCore(enc, w, lvl)
	}
	core := logs.Quiet(inner, time.Minute) // journald priorities, terminal format; one event per DNS outage
	return zap.New(core), flush, nil
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
	log, flush, err := newLogger(*level, stderr, *once)
	if err != nil {
		fmt.Fprintln(stderr, "egressd:", err)
		return 2
	}
	defer flush()    //nolint:errcheck
	defer log.Sync() //nolint:errcheck
	switch {
	case os.Getenv("GOGC") != "":
	case *once:
		// A run of a second or two: fewer collections (a tenth of the CPU
		// of 10,000 names at 50). Not none: a heap left to grow costs
		// more in page faults than collecting it (docs/performance.md).
		debug.SetGCPercent(200)
	default:
		// The live heap is small (about 10 MiB at 10,000 names) but refresh
		// bursts make garbage; collecting at +50% instead of +100% keeps the
		// resident size down for a negligible CPU cost. GOGC overrides.
		debug.SetGCPercent(50)
	}

	if prefix := os.Getenv("EGRESSD_PROFILE"); prefix != "" {
		stop, perr := startProfile(prefix)
		if perr != nil {
			fmt.Fprintln(stderr, "egressd: EGRESSD_PROFILE:", perr)
			return 1
		}
		defer stop()
	}
	checkDescriptorLimit(log)
	err = daemon.Run(context.Background(), daemon.Settings{ConfigPath: *cfgPath, ConfigRequired: required, Once: *once,
		RuntimeDir: *runtimeDir, StateDir: stateDirectory(), BPFDir: listenPinDir(fs, *bpfDir), ListenCgroup: *listenCgroup, Log: log})
	log.Sync() //nolint:errcheck // run --once: the buffered lines before what follows
	switch {
	case err == nil:
		return 0
	case errors.Is(err, daemon.ErrNotAdmin):
		fmt.Fprintln(stderr, "egressd run:", err)
		return 1
	case errors.Is(err, controller.ErrConfig):
		fmt.Fprintln(stderr, "egressd:", err)
		return 2
	case errors.Is(err, daemon.ErrRefused):
		fmt.Fprintln(stderr, "egressd:", err)
		return 1
	case errors.Is(err, daemon.ErrPartial), *once:
		return 1 // logged
	case errors.Is(err, context.Canceled):
		log.Error("egressd failed", event.Field(event.RunFailed), zap.Error(err))
		return 0
	default:
		log.Error("egressd failed", event.Field(event.RunFailed), zap.Error(err))
		return 1
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
