package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/harden"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func cmdHarden(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("harden", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o harden.Options
	var writable, listen listFlag
	fs.StringVar(&o.User, "user", "", "the service user")
	fs.StringVar(&o.Group, "group", "", "the service group (default: the user)")
	fs.Var(&writable, "writable", "a path the service may write (repeatable)")
	fs.Var(&listen, "listen", "tcp:PORT or udp:PORT the service binds (repeatable)")
	fs.BoolVar(&o.JIT, "jit", false, "the service needs writable+executable memory (JVM, V8, LuaJIT)")
	fs.IntVar(&o.NProc, "nproc", 0, "LimitNPROC (default 64)")
	fs.StringVar(&o.FSize, "fsize", "", "LimitFSIZE (default 1G)")
	fs.StringVar(&o.AppArmor, "apparmor", "", "AppArmor profile to confine the service")
	fs.StringVar(&o.SELinux, "selinux", "", "SELinux context to run the service in")
	fs.BoolVar(&o.LoopbackOnly, "loopback-only", false, "the service talks to localhost only")
	noPrivUsers := fs.Bool("no-private-users", false, "leave out PrivateUsers=yes (daemons that change uid themselves, or need other users' uids)")
	fs.IntVar(&o.SystemdVersion, "systemd-version", 0, fmt.Sprintf("target systemd version (default: this host's, else %d)", harden.DefaultSystemdVersion))
	features := fs.String("target-features", "", "the target systemd's feature line, as \"systemctl --version\" prints it (default: this host's when no --systemd-version is given)")
	fs.StringVar(&o.Egressd, "egressd", installedSelf(), "the egressd binary the start gate runs")
	fs.DurationVar(&o.GateTimeout, "gate-timeout", harden.DefaultGateTimeout, "how long the start gate waits for the user's allowlist in the kernel")
	fs.StringVar(&o.Allowlist, "allowlist", "", "the allowlist (NAME of allow.d/NAME.yaml) that restricts the service's egress")
	fs.BoolVar(&o.KeepSystemBus, "keep-system-bus", false, "with a dns: proxy allowlist: leave the D-Bus system bus reachable (the service needs it); resolved's D-Bus API then resolves any name out of the proxy's sight")
	fs.StringVar(&o.Unit, "unit", "", "the unit name, for the install hint (e.g. billing.service)")
	unitFile := fs.String("unit-file", "", "with a unit allowlist: the unit's file, whose ExecStartPre= lines the drop-in lists again after the gate (default: found in systemd's unit directories)")
	cfgPath := fs.String("config", config.DefaultPath, "main configuration file (with --allowlist)")
	audit := fs.String("audit", "", "audit UNIT_FILE (and its drop-ins) instead of generating")
	asJSON := fs.Bool("json", false, "with --audit: JSON output")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(stderr, "harden", "unexpected argument %q", fs.Arg(0))
	}
	localVersion, localBPF := localSystemd()
	if *audit != "" {
		r, err := harden.Audit(*audit, harden.Env{BPF: localBPF, AllowlistFor: allowlistFor(*cfgPath), ListenFor: listenFor(*cfgPath), Egressd: installedSelf()})
		if err != nil {
			fmt.Fprintln(stderr, "egressd harden --audit:", err)
			return 2
		}
		if *asJSON {
			writeJSON(stdout, r)
		} else {
			r.WriteText(stdout)
		}
		if len(r.Findings) > 0 {
			return 1
		}
		return 0
	}
	o.Writable, o.PrivateUsers = writable, !*noPrivUsers
	switch {
	case *features != "":
		o.BPF = harden.ParseFeatures(*features)
	case o.SystemdVersion == 0 && localVersion != 0: // the target is this host
		o.SystemdVersion, o.BPF = localVersion, localBPF
	}
	for _, l := range listen {
		ls, err := harden.ParseListen(l)
		if err != nil {
			fmt.Fprintln(stderr, "egressd harden:", err)
			return 2
		}
		o.Listen = append(o.Listen, ls)
	}
	if o.Allowlist != "" {
		cfg, err := config.Load(*cfgPath, true)
		if err != nil {
			fmt.Fprintln(stderr, "egressd harden: --allowlist needs a valid configuration:", err)
			return 2
		}
		var al *config.Allowlist
		for _, a := range cfg.Allowlists {
			if a.Name == o.Allowlist {
				al = a
			}
		}
		if al == nil {
			fmt.Fprintf(stderr, "egressd harden: no allowlist %q in %s\n", o.Allowlist, cfg.AllowDir)
			return 2
		}
		if al.IsUnit() {
			if err := unitGate(&o, al, *unitFile); err != nil {
				fmt.Fprintln(stderr, "egressd harden:", err)
				return 2
			}
		} else if o.User == "" {
			o.User = al.User
			// A numeric user: names the user by name where it has one, for
			// readers of the drop-in (the uid is the same).
			if _, ok := al.NumericUID(); ok {
				if u, err := user.LookupId(al.User); err == nil {
					o.User = u.Username
				}
			}
		} else if a, b := uidOf(o.User), uidOf(al.User); o.User != al.User && (a < 0 || a != b) {
			fmt.Fprintf(stderr, "egressd harden: --user %s, but allowlist %s restricts user %s\n", o.User, al.Name, al.User)
			return 2
		}
		o.AllowlistInfo = fmt.Sprintf(" (%s, %d entries, dns: %s)", al.File, len(al.Entries), al.DNS)
		o.DNSProxy = al.DNS == config.DNSProxy
		if al.Listen != nil {
			var ls []string
			for _, l := range al.Listen {
				ls = append(ls, l.String())
			}
			joined := strings.Join(ls, ", ")
			o.AllowlistListen = &joined
		}
	}
	out, err := harden.Generate(o)
	if err != nil {
		fmt.Fprintln(stderr, "egressd harden:", err)
		return 2
	}
	warnings := o.Warnings(func(p string) bool { _, err := os.Stat(p); return err == nil })
	if o.Allowlist == "" {
		switch _, ok, err := allowlistFor(*cfgPath)(o.User); {
		case err != nil:
			warnings = append(warnings, fmt.Sprintf("cannot tell whether egressd restricts %s: %v", o.User, err))
		case !ok:
			warnings = append(warnings, fmt.Sprintf("no egressd allowlist for user %s: its egress is not restricted, and the start gate will refuse to start it until one is enforced (write allow.d/NAME.yaml with user: %s)", o.User, o.User))
		}
	}
	for _, w := range warnings {
		fmt.Fprintln(stderr, "egressd harden: warning:", w)
	}
	fmt.Fprint(stdout, out)
	return 0
}

// uidOf is name's uid, or -1 when it has none.
func uidOf(name string) int64 {
	if n, err := lookupUID(name); err == nil {
		return int64(n)
	}
	return -1
}

// unitGate sets the start gate of a unit allowlist: the unit's own
// ExecStartPre= lines, read from its unit file and drop-ins, follow the gate.
func unitGate(o *harden.Options, al *config.Allowlist, unitFile string) error {
	if o.Unit == "" {
		o.Unit = al.Unit
	} else if o.Unit != al.Unit {
		return fmt.Errorf("--unit %s, but allowlist %s restricts unit %s", o.Unit, al.Name, al.Unit)
	}
	o.GateUnit = al.Unit
	if unitFile == "" {
		var err error
		if unitFile, err = harden.FindUnitFile(al.Unit, harden.UnitDirs); err != nil {
			return fmt.Errorf("%v: pass --unit-file (the drop-in resets ExecStartPre= and must list the unit's own lines again)", err)
		}
	}
	own, err := harden.OwnStartPre(unitFile, al.Unit, harden.UnitDirs)
	if err != nil {
		return fmt.Errorf("read the unit's ExecStartPre= lines: %w", err)
	}
	o.OwnStartPre = own
	return nil
}

// installedSelf is the start gate's default binary: this egressd, when it
// is installed in a system directory of binaries (the package's /usr/bin,
// /usr/local/bin of an install from source), so that the drop-in runs the
// egressd that wrote it; else (go run, a build directory)
// harden.DefaultEgressd, where egressd.service of the source tree runs it.
func installedSelf() string {
	p, err := os.Executable()
	if err == nil && filepath.Base(p) == "egressd" {
		switch filepath.Dir(p) {
		case "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin", "/bin", "/sbin":
			return p
		}
	}
	return harden.DefaultEgressd
}

// localSystemd reads this host's systemd version and BPF_FRAMEWORK from
// `systemctl --version` (fixed arguments); 0 and unknown without systemctl.
func localSystemd() (int, harden.Feature) {
	out, err := exec.Command("systemctl", "--version").Output()
	if err != nil {
		return 0, harden.FeatureUnknown
	}
	return harden.ParseSystemctlVersion(string(out))
}

// listenFor finds the listen: rules that hold a unit's processes (harden
// --audit), from the configuration at cfgPath.
func listenFor(cfgPath string) func(unit, user string) ([]harden.ListenRule, error) {
	return func(unit, userName string) ([]harden.ListenRule, error) {
		cfg, err := config.Load(cfgPath, false)
		if err != nil {
			return nil, err
		}
		return listenRules(cfg, unit, userName, lookupUID), nil
	}
}

// listenRules are the listen: keys of the unit allowlist of unit and of the
// user allowlist of userName: the kernel holds the unit's processes to both
// (the unit's cgroup and the user's uid are separate keys), so one without
// listen: does not hide the other's.
func listenRules(cfg *config.Config, unit, userName string, lookup func(string) (uint32, error)) []harden.ListenRule {
	var out []harden.ListenRule
	add := func(a *config.Allowlist) {
		if a.Listen == nil {
			return
		}
		entries := make([]string, 0, len(a.Listen))
		for _, l := range a.Listen {
			entries = append(entries, l.String())
		}
		out = append(out, harden.ListenRule{Allowlist: a.Name, Unit: a.Unit != "", Listen: entries})
	}
	for _, a := range cfg.Allowlists {
		if a.Unit != "" && a.Unit == unit {
			add(a)
		}
	}
	if userName != "" {
		uid, uidErr := lookup(userName)
		for _, a := range cfg.Allowlists {
			if a.Unit != "" {
				continue
			}
			if n, ok := a.NumericUID(); a.User == userName || (ok && uidErr == nil && n == uid) {
				add(a)
			}
		}
	}
	return out
}

// allowlistFor answers which allowlist restricts a user, from the
// configuration at cfgPath (its absence means: no allowlists).
func allowlistFor(cfgPath string) func(string) (string, bool, error) {
	return func(userName string) (string, bool, error) {
		cfg, err := config.Load(cfgPath, false)
		if err != nil {
			return "", false, err
		}
		uid, uidErr := lookupUID(userName)
		for _, a := range cfg.Allowlists {
			if a.User == userName {
				return a.Name, true, nil
			}
			if n, ok := a.NumericUID(); ok && uidErr == nil && n == uid {
				return a.Name, true, nil
			}
		}
		return "", false, nil
	}
}
