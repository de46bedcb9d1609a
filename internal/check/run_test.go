package check

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/state"
	"github.com/egressd/egressd/resolver"
	"github.com/egressd/egressd/ruleset"
)

func runFixture(t *testing.T) Options {
	o := fixture(t, map[string]string{
		"egressd.yaml":       "resolvers: [192.0.2.53]\n",
		"allow.d/alice.yaml": "user: alice\nallow: [192.0.2.1:443, api.example.test:443, lan.example.test:22]\n",
	})
	dnsAnswers := map[string][]string{"api.example.test": {"203.0.113.5"}, "lan.example.test": {"10.0.0.5"}}
	o.NewQuerier = answers(dnsAnswers, resolver.SourceDNS)
	o.Kernel = applied(t, o, dnsAnswers)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	o.Now = func() time.Time { return now }
	return o
}

func text(r *Report) string {
	var b strings.Builder
	r.WriteText(&b)
	return b.String()
}

// No daemon: the kernel is compared with a fresh render; a private answer
// is refused by the same rule as the daemon's.
func TestRunFreshRender(t *testing.T) {
	o := runFixture(t)
	r := Run(context.Background(), o)
	if p := problem(r, "answers_dropped", "lan.example.test"); p == nil {
		t.Fatalf("a private answer was not refused: %+v", r.Problems)
	}
	if len(r.Problems) != 1 || r.ExitCode != ExitProblem || status(r, "alice") != "ok" {
		t.Fatalf("exit %d, problems %+v, allowlists %+v", r.ExitCode, r.Problems, r.Allowlists)
	}
	if r.Allowlists[0].Addresses != 2 || r.Config.Sources["api.example.test"] != "dns" || r.Daemon.Seen {
		t.Fatalf("%+v %+v", r.Allowlists[0], r.Config)
	}
	out := text(r)
	for _, want := range []string{"PROBLEMS: 1", "names:   2 answered by dns, 0 by hosts", "no state file", "ALLOWLIST", "answers_dropped lan.example.test"} {
		if !strings.Contains(out, want) {
			t.Errorf("text lacks %q:\n%s", want, out)
		}
	}
}

// In sync: exit 0, "OK".
func TestRunOK(t *testing.T) {
	o := fixture(t, map[string]string{
		"egressd.yaml":       "resolvers: [192.0.2.53]\n",
		"allow.d/alice.yaml": "user: alice\nallow: [192.0.2.1:443]\n",
	})
	o.Kernel = applied(t, o, nil)
	r := Run(context.Background(), o)
	if r.ExitCode != ExitOK || r.Status != "ok" || !strings.HasPrefix(text(r), "egressd check: OK: in sync") {
		t.Fatalf("%+v\n%s", r, text(r))
	}
}

// Drift on one allowlist's set is that allowlist's; on the table, everyone's.
func TestRunDrift(t *testing.T) {
	o := fixture(t, map[string]string{
		"egressd.yaml":     "resolvers: [192.0.2.53]\n",
		"allow.d/a.yaml":   "user: alice\nallow: [192.0.2.1:443]\n",
		"allow.d/b.yaml":   "user: bob\nallow: [192.0.2.2:443]\n",
		"allow.d/c.yaml":   "user: carol\nallow: [192.0.2.3:443]\n",
		"allow.d/ign.yaml": "user: nobody-here\nallow: []\n",
	})
	uids := map[string]uint32{"alice": 1001, "bob": 1002, "carol": 1003}
	o.Users = func(n string) (uint32, error) {
		if u, ok := uids[n]; ok {
			return u, nil
		}
		return 0, errors.New("unknown user")
	}
	k := applied(t, o, nil)
	o.Kernel = k
	k.findings = []ruleset.Finding{{Kind: "elements_missing", Object: ruleset.SetName4("a"), Detail: "192.0.2.1"}}
	r := Run(context.Background(), o)
	if status(r, "a") != "drift" || status(r, "b") != "ok" || problem(r, "drift_elements_missing", "") == nil {
		t.Fatalf("%+v %+v", r.Allowlists, r.Problems)
	}
	if p := problem(r, "drift_elements_missing", ""); !strings.Contains(p.Fix, "start egressd") {
		t.Fatalf("no daemon, yet the fix is %q", p.Fix)
	}
	k.findings = []ruleset.Finding{{Kind: "table_missing", Object: "inet egressd"}}
	r = Run(context.Background(), o)
	if status(r, "a") != "drift" || status(r, "b") != "drift" || status(r, "c") != "drift" {
		t.Fatalf("a missing table is not everyone's drift: %+v", r.Allowlists)
	}
	k.findings, k.verifyErr = nil, errors.New("netlink")
	r = Run(context.Background(), o)
	if r.ExitCode != ExitInvalid || problem(r, "cannot_run", "kernel") == nil {
		t.Fatalf("%+v", r)
	}
}

// A running daemon's published view is what the kernel should hold; a
// configuration it does not enforce is reported.
func TestRunDaemonView(t *testing.T) {
	o := runFixture(t)
	cfg, err := config.LoadTrusted(o.ConfigPath, true, o.Trust)
	if err != nil {
		t.Fatal(err)
	}
	now := o.Now()
	last := now.Add(-time.Minute)
	st := &state.State{Version: 1, PID: os.Getpid(), Updated: now, LastApply: last, Generation: 7,
		ConfigHash: state.Hash(cfg), Plan: state.FromPlan(o.Kernel.(*planKernel).plan), Users: map[string]uint32{"alice": 1001}}
	if err := state.Write(o.RuntimeDir, st); err != nil {
		t.Fatal(err)
	}
	r := Run(context.Background(), o)
	if !r.Daemon.Running || !r.Daemon.ConfigMatches || r.Daemon.Generation != 7 || problem(r, "config_not_applied", "") != nil {
		t.Fatalf("%+v %+v", r.Daemon, r.Problems)
	}
	if out := text(r); !strings.Contains(out, "daemon:  running (pid") || !strings.Contains(out, "last apply 1m0s ago") {
		t.Fatalf("%s", out)
	}
	st.ConfigHash = "other"
	if err := state.Write(o.RuntimeDir, st); err != nil {
		t.Fatal(err)
	}
	r = Run(context.Background(), o)
	if problem(r, "config_not_applied", "") == nil || !strings.Contains(text(r), "NOT enforcing the files on disk") {
		t.Fatalf("%+v", r.Problems)
	}
	// The daemon that wrote it is gone.
	st.PID = 1 << 30
	if err := state.Write(o.RuntimeDir, st); err != nil {
		t.Fatal(err)
	}
	r = Run(context.Background(), o)
	if problem(r, "daemon_not_running", "") == nil || r.Daemon.Running || !strings.Contains(text(r), "daemon:  not running") {
		t.Fatalf("%+v\n%s", r.Problems, text(r))
	}
}

// An invalid configuration: each error once, with what protects the host
// meanwhile (a running daemon's last good configuration, or nothing).
func TestRunInvalidConfig(t *testing.T) {
	o := runFixture(t)
	os.WriteFile(o.ConfigPath, []byte("resolvers: [192.0.2.53]\nbogus: 1\n"), 0o644) //nolint:errcheck
	r := Run(context.Background(), o)
	p := problem(r, "config_invalid", "")
	if r.ExitCode != ExitInvalid || r.Status != "invalid" || p == nil || !strings.Contains(p.Fix, "no egressd daemon is running") {
		t.Fatalf("%+v", r)
	}
	if out := text(r); !strings.Contains(out, "INVALID CONFIGURATION: 1 error\n") || !strings.Contains(out, ": invalid") {
		t.Fatalf("%s", out)
	}
	// Two errors: each with its own fix, what protects the host said once.
	os.WriteFile(o.ConfigPath, []byte("resolvers: [192.0.2.53]\nbogus: 1\nalso: 2\n"), 0o644) //nolint:errcheck
	r = Run(context.Background(), o)
	if out := text(r); !strings.Contains(out, "INVALID CONFIGURATION: 2 errors") || strings.Count(out, "no egressd daemon is running") != 1 {
		t.Fatalf("two errors:\n%s", out)
	}
	os.WriteFile(o.ConfigPath, []byte("resolvers: [192.0.2.53]\nbogus: 1\n"), 0o644) //nolint:errcheck
	if err := state.Write(o.RuntimeDir, &state.State{Version: 1, PID: os.Getpid(), ConfigFile: "/last/good"}); err != nil {
		t.Fatal(err)
	}
	r = Run(context.Background(), o)
	if p := problem(r, "config_invalid", ""); p == nil || !strings.Contains(p.Fix, "keeps enforcing its last good configuration (/last/good)") || !r.Daemon.Running {
		t.Fatalf("%+v", r)
	}
	// A file that cannot be read at all (not a config.Errors).
	os.Remove(o.ConfigPath) //nolint:errcheck
	os.Mkdir(o.ConfigPath, 0o755)
	r = Run(context.Background(), o)
	if r.ExitCode != ExitInvalid || len(r.Config.Errors) == 0 {
		t.Fatalf("%+v", r)
	}
}

// A missing allow directory, and a kernel that cannot be read.
func TestRunAllowDirMissingAndKernelUnreadable(t *testing.T) {
	o := fixture(t, map[string]string{"egressd.yaml": "resolvers: [192.0.2.53]\n"})
	o.Kernel = &planKernel{}
	r := Run(context.Background(), o)
	if problem(r, "allow_dir_missing", "") == nil {
		t.Fatalf("%+v", r.Problems)
	}
	o.Kernel = &planKernel{setsErr: errors.New("netlink")}
	r = Run(context.Background(), o)
	if r.ExitCode != ExitInvalid || problem(r, "cannot_run", "kernel") == nil {
		t.Fatalf("%+v", r)
	}
	o.Kernel = &planKernel{setsErr: ruleset.ErrNoTable}
	if r = Run(context.Background(), o); problem(r, "cannot_run", "") != nil {
		t.Fatalf("no table yet is not a reason not to check: %+v", r.Problems)
	}
}

// A name answered by the hosts file is taken as written and reported as such.
func TestRunHostsFile(t *testing.T) {
	o := fixture(t, map[string]string{
		"egressd.yaml":       "resolvers: [192.0.2.53]\nhosts_file: HOSTS\n",
		"hosts":              "10.0.0.7 db.example.test\n",
		"allow.d/alice.yaml": "user: alice\nallow: [db.example.test:5432]\n",
	})
	os.WriteFile(o.ConfigPath, []byte("resolvers: [192.0.2.53]\nhosts_file: "+strings.TrimSuffix(o.ConfigPath, "egressd.yaml")+"hosts\n"), 0o644) //nolint:errcheck
	o.Kernel = &planKernel{}
	r := Run(context.Background(), o)
	if r.Config.Sources["db.example.test"] != resolver.SourceHosts || problem(r, "answers_dropped", "") != nil || r.Allowlists[0].Addresses != 1 {
		t.Fatalf("%+v %+v %+v", r.Config, r.Problems, r.Allowlists)
	}
	if !strings.Contains(text(r), "0 answered by dns, 1 by hosts") {
		t.Fatal(text(r))
	}
}

func TestCanAdmin(t *testing.T) {
	if os.Geteuid() == 0 && !CanAdmin() {
		t.Fatal("root cannot administer nftables")
	}
}

// Issue 22: for a dns: proxy allowlist, check says where resolved's D-Bus
// API stays reachable for the service (its hardening keeps the system bus,
// or no hardened unit is found); a unit whose drop-in closes the bus gets
// no note (control), nor does an allowlist without dns: proxy.
func TestRunSystemBusNotes(t *testing.T) {
	o := fixture(t, map[string]string{
		"egressd.yaml":       "resolvers: [192.0.2.53]\n",
		"allow.d/alice.yaml": "user: alice\ndns: proxy\nallow: [\"*.cdn.example.test:443\"]\n",
	})
	o.UnitDir = filepath.Join(filepath.Dir(o.ConfigPath), "units")
	o.Kernel = applied(t, o, nil)
	gate := "[Service]\nExecStartPre=+/usr/bin/egressd wait --user alice --timeout 30s\n"
	for _, c := range []struct {
		name, dropIn, want string
	}{
		{"no hardened unit", "", "no unit in " + o.UnitDir + " starts gated on this allowlist"},
		{"bus kept", gate + "InaccessiblePaths=-/run/systemd/resolve -/run/nscd\n", "stays reachable for alice.service"},
		{"bus closed (control)", gate + "InaccessiblePaths=-/run/systemd/resolve -/run/nscd\nInaccessiblePaths=-/run/dbus\n", ""},
	} {
		if c.dropIn != "" {
			os.MkdirAll(filepath.Join(o.UnitDir, "alice.service.d"), 0o755) //nolint:errcheck
			if err := os.WriteFile(filepath.Join(o.UnitDir, "alice.service.d", "hardening.conf"), []byte(c.dropIn), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		r := Run(context.Background(), o)
		notes := strings.Join(r.Allowlists[0].Notes, "\n")
		out := text(r)
		if c.want == "" && (notes != "" || strings.Contains(out, "notes:")) {
			t.Errorf("%s: notes %q", c.name, notes)
		}
		if c.want != "" && (!strings.Contains(notes, c.want) || !strings.Contains(out, "notes:\n  alice: ") || !strings.Contains(notes, "org.freedesktop.resolve1")) {
			t.Errorf("%s: notes %q, want %q\n%s", c.name, notes, c.want, out)
		}
	}
}
