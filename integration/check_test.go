//go:build linux

package integration

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dnstest"
	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/ruleset"
)

// egressdCmd runs the binary inside the namespace and returns its exit code,
// stdout and stderr.
func (w *world) egressdCmd(args ...string) (int, string, string) {
	w.t.Helper()
	cmd := exec.Command(egressd, args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := w.ns.Start(cmd); err != nil {
		w.t.Fatal(err)
	}
	err := cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		w.t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

func (w *world) check(args ...string) (int, string) {
	code, out, errs := w.egressdCmd(append([]string{"check", "--config", filepath.Join(w.dir, "egressd.yaml"), "--runtime-dir", w.runDir()}, args...)...)
	return code, out + errs
}

func (w *world) checkJSON() (int, map[string]any) {
	w.t.Helper()
	code, out := w.check("--json")
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		w.t.Fatalf("check --json printed no JSON: %v\n%s", err, out)
	}
	return code, m
}

func problemKinds(m map[string]any) []string {
	var out []string
	for _, p := range m["problems"].([]any) {
		out = append(out, p.(map[string]any)["kind"].(string))
	}
	return out
}

func TestCheckExitCodesAndDrift(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	if code, out, errs := w.egressdCmd(w.tw.RunArgs("--once")...); code != 0 {
		t.Fatalf("run --once: %d\n%s%s", code, out, errs)
	}
	code, out := w.check()
	if code != 0 {
		t.Fatalf("in sync: exit %d, want 0\n%s", code, out)
	}
	t.Logf("check report, in sync:\n%s", out)

	k := &ruleset.Netlink{NetNSFd: w.ns.Fd()}
	drifts := w.drifts()
	for _, d := range drifts {
		if err := d.do(); err != nil {
			t.Fatalf("%s: %v", d.name, err)
		}
		code, m := w.checkJSON()
		kinds := problemKinds(m)
		if code != 1 || m["status"] != "problems" || !strings.Contains(strings.Join(kinds, " "), "drift_"+d.found) {
			t.Errorf("%s: exit %d, status %v, problems %v; want exit 1 with drift_%s", d.name, code, m["status"], kinds, d.found)
		}
		if code, out, errs := w.egressdCmd(w.tw.RunArgs("--once")...); code != 0 {
			t.Fatalf("repair with run --once: %d\n%s%s", code, out, errs)
		}
	}
	_, out = w.check()
	if !strings.Contains(out, "OK") {
		t.Fatalf("after repair:\n%s", out)
	}
	w.Remove(t, k)
	code, out = w.check()
	t.Logf("check report, table deleted (exit %d):\n%s", code, out)

	// A name that does not resolve is a problem (exit 1), not invalid.
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nallow: [api.example.test:443, gone.example.test:443]\n", uidA))
	code, m := w.checkJSON()
	if code != 1 || !strings.Contains(strings.Join(problemKinds(m), " "), "name_failed") {
		t.Errorf("failing name: exit %d, problems %v", code, problemKinds(m))
	}
	// An invalid configuration is exit 2, with file, line and column.
	w.write("allow.d/billing.yaml", "user: a\nallow: [nope]\n")
	code, out = w.check()
	if code != 2 || !strings.Contains(out, "billing.yaml:2:") {
		t.Errorf("invalid config: exit %d, want 2 with the position\n%s", code, out)
	}
}

// check cannot run without root: exit 2 with the reason.
func TestCheckNotRoot(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	cmd := exec.Command(egressd, "check", "--config", filepath.Join(w.dir, "egressd.yaml"), "--runtime-dir", w.runDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uidNone, Gid: uidNone}}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := w.ns.Start(cmd); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 2 || !strings.Contains(out.String(), "needs root") {
		t.Fatalf("check as an unprivileged user: %v\n%s", err, out.String())
	}
}

// Remove deletes the table (test helper that reports failure).
func (w *world) Remove(t *testing.T, k *ruleset.Netlink) {
	t.Helper()
	if err := k.Remove(); err != nil {
		t.Fatal(err)
	}
}

// With the daemon running, check compares with the daemon's view: an
// address that lingers after a DNS change is not drift.
func TestCheckWithDaemonLingerIsNotDrift(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.write("egressd.yaml", strings.Replace(mainConfig, "linger: 2s", "linger: 30s", 1))
	w.start()
	m := w.mark()
	w.dns.Set("api.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.11")}, TTL: 2})
	if _, err := w.waitEvent(event.RulesetApplied, m, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1200 * time.Millisecond) // the state file is written at most once a second
	code, report := w.checkJSON()
	if code != 0 {
		t.Fatalf("lingering address reported: exit %d, problems %v", code, report["problems"])
	}
	d := report["daemon"].(map[string]any)
	if d["running"] != true || d["config_matches"] != true {
		t.Fatalf("daemon section = %v", d)
	}
	// An invalid file on disk: check says so (exit 2) while the daemon keeps
	// enforcing its last good configuration.
	w.write("allow.d/web.yaml", "user: [\n")
	code, out := w.check()
	if code != 2 {
		t.Fatalf("invalid config with a running daemon: exit %d\n%s", code, out)
	}
	w.expect(uidB, "tcp", "192.0.2.12:443", okConnected)
	w.expect(uidB, "tcp", "198.51.100.20:4444", okRefused)
	// A valid change the daemon has not applied yet is config_not_applied.
	w.daemon.Process.Signal(syscall.SIGSTOP) //nolint:errcheck
	w.write("allow.d/web.yaml", fmt.Sprintf("user: %d\nallow: [198.51.100.20:443]\ndns: none\n", uidB))
	code, report = w.checkJSON()
	w.daemon.Process.Signal(syscall.SIGCONT) //nolint:errcheck
	if code != 1 || !strings.Contains(strings.Join(problemKinds(report), " "), "config_not_applied") {
		t.Fatalf("pending change: exit %d, problems %v", code, problemKinds(report))
	}
}

func TestCheckExplain(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.start()
	time.Sleep(1100 * time.Millisecond)
	cases := []struct {
		user, target string
		code         int
		want         []string
	}{
		{fmt.Sprint(uidA), "api.example.test:443", 0, []string{"ALLOWED", "api.example.test:443 (", "billing.yaml:3:5", "allow4"}},
		{fmt.Sprint(uidA), "api.example.test:8443", 1, []string{"DENIED", "nearest: same host, other port: api.example.test:443"}},
		{fmt.Sprint(uidA), "198.51.100.20:4444", 1, []string{"DENIED", "198.51.100.20:4444/tcp denied"}},
		{fmt.Sprint(uidA), "203.0.113.5:5353/udp", 0, []string{"ALLOWED", "203.0.113.5:5353/udp ("}},
		{fmt.Sprint(uidNone), "198.51.100.20:4444", 0, []string{"UNRESTRICTED", "no allowlist"}},
	}
	for _, c := range cases {
		code, out := w.check("--explain", c.user, c.target)
		if code != c.code {
			t.Errorf("explain %s %s: exit %d, want %d\n%s", c.user, c.target, code, c.code, out)
		}
		for _, s := range c.want {
			if !strings.Contains(out, s) {
				t.Errorf("explain %s %s: output lacks %q:\n%s", c.user, c.target, s, out)
			}
		}
		t.Logf("$ egressd check --explain %s %s\n%s", c.user, c.target, out)
	}
}

// The --json document follows docs/check.md: required keys and their types.
func TestCheckJSONSchema(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.start()
	time.Sleep(1100 * time.Millisecond)
	_, m := w.checkJSON()
	type field struct {
		path string
		kind string
	}
	schema := []field{{"version", "number"}, {"status", "string"}, {"exit_code", "number"}, {"checked_at", "string"},
		{"config", "object"}, {"config.file", "string"}, {"config.valid", "bool"}, {"config.allowlists", "number"}, {"config.names", "number"}, {"config.resolvers", "array"},
		{"daemon", "object"}, {"daemon.state_file", "string"}, {"daemon.seen", "bool"}, {"daemon.running", "bool"}, {"daemon.pid", "number"},
		{"daemon.generation", "number"}, {"daemon.last_apply", "string"}, {"daemon.config_matches", "bool"},
		{"allowlists", "array"}, {"problems", "array"}}
	for _, f := range schema {
		var v any = m
		for _, p := range strings.Split(f.path, ".") {
			v = v.(map[string]any)[p]
		}
		if got := jsonKind(v); got != f.kind {
			t.Errorf("%s: %s, want %s", f.path, got, f.kind)
		}
	}
	al := m["allowlists"].([]any)[0].(map[string]any)
	for k, kind := range map[string]string{"name": "string", "file": "string", "user": "string", "uid": "number", "entries": "number", "names": "number", "addresses": "number", "status": "string"} {
		if got := jsonKind(al[k]); got != kind {
			t.Errorf("allowlists[0].%s: %s, want %s", k, got, kind)
		}
	}
	if m["version"] != float64(1) || m["status"] != "ok" {
		t.Errorf("version %v status %v", m["version"], m["status"])
	}
}

func jsonKind(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}
