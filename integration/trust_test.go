//go:build linux

package integration

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dnstest"
	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/internal/testworld"
	"github.com/egressd/egressd/ruleset"
)

// runAs runs the egressd binary inside the namespace as uid; exit code and output.
func (w *world) runAs(uid int, args ...string) (int, string) {
	w.t.Helper()
	cmd := exec.Command(egressd, args...)
	testworld.AsUser(cmd, uid)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := w.ns.Start(cmd); err != nil {
		w.t.Fatal(err)
	}
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		w.t.Fatal(err)
	}
	return 0, out.String()
}

func (w *world) path(name string) string { return filepath.Join(w.dir, name) }

// expectRejected waits for a config_rejected event naming path and a fix.
func (w *world) expectRejected(since int, path string) map[string]any {
	w.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, ev := range w.eventsSince(event.ConfigRejected, since) {
			if strings.Contains(fmt.Sprint(ev["file"]), path) && ev["fix"] != nil {
				return ev
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	w.t.Fatalf("no config_rejected naming %s with a fix; daemon log:\n%s", path, w.logText())
	return nil
}

// A protected service must not control its own allowlist: a file, a
// directory or a symlink target it owns or can write is refused, the last
// good configuration stays, and check says so with the fix.
func TestAllowlistWritableByServiceRefused(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.start()
	w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)

	// 1. The allowlist owned by the protected user, rewritten to allow everything.
	m := w.mark()
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nallow: [\"0.0.0.0/0:1-65535\"]\n", uidA))
	if err := os.Chown(w.path("allow.d/billing.yaml"), uidA, uidA); err != nil {
		t.Fatal(err)
	}
	syscallKill(w) // reload now (SIGHUP), as the watcher would
	ev := w.expectRejected(m, "billing.yaml")
	if msg := fmt.Sprint(ev["error"]); !strings.Contains(msg, fmt.Sprintf("uid %d", uidA)) || !strings.Contains(msg, "0644") ||
		!strings.Contains(fmt.Sprint(ev["fix"]), "chown root:root") {
		t.Errorf("config_rejected does not name owner, mode and fix: %v", ev)
	}
	w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)
	w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)
	code, out := w.check()
	if code != 2 || !strings.Contains(out, "billing.yaml") || !strings.Contains(out, "chown root:root") {
		t.Errorf("check with a user-owned allowlist: exit %d, want 2 naming the file and the fix\n%s", code, out)
	}
	if strings.Count(out, "owned by") != 1 {
		t.Errorf("check prints the error %d times, want once\n%s", strings.Count(out, "owned by"), out)
	}
	if strings.Contains(out, "line and column") {
		t.Errorf("check tells to fix a line and column for an error without a position\n%s", out)
	}

	// 2. Root-owned again, but the allow directory is group-writable.
	os.Chown(w.path("allow.d/billing.yaml"), 0, 0) //nolint:errcheck
	os.Chmod(w.path("allow.d"), 0o775)             //nolint:errcheck
	m = w.mark()
	syscallKill(w)
	w.expectRejected(m, "allow.d")
	w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)
	os.Chmod(w.path("allow.d"), 0o755) //nolint:errcheck

	// 3. A symlink to a file in a directory the service owns.
	if err := os.MkdirAll(w.path("svc"), 0o755); err != nil {
		t.Fatal(err)
	}
	w.write("svc/billing.yaml", fmt.Sprintf("user: %d\nallow: [\"0.0.0.0/0:1-65535\"]\n", uidA))
	os.Chown(w.path("svc"), uidA, uidA) //nolint:errcheck
	os.Remove(w.path("allow.d/billing.yaml"))
	if err := os.Symlink("../svc/billing.yaml", w.path("allow.d/billing.yaml")); err != nil {
		t.Fatal(err)
	}
	m = w.mark()
	syscallKill(w)
	w.expectRejected(m, "svc")
	w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)

	// At start there is no last good configuration: the daemon refuses to
	// start, and says so without pretending one stays in force.
	w.kill()
	code, _, errs := w.egressdCmd("run", "--once", "--config", w.path("egressd.yaml"), "--runtime-dir", w.runDir())
	if code != 2 || !strings.Contains(errs, "svc") || strings.Contains(errs, "last good configuration stays") {
		t.Errorf("start with an untrusted allowlist: exit %d, want 2 without \"last good configuration stays\"\n%s", code, errs)
	}
}

func syscallKill(w *world) {
	w.t.Helper()
	if err := w.daemon.Process.Signal(syscall.SIGHUP); err != nil {
		w.t.Fatal(err)
	}
}

// An edit naming a user that does not exist (a typo) keeps the uid in force
// until that user exists; check says so. Only deleting the file lifts it.
func TestTypoUserKeepsRestriction(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.start()
	w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)
	m := w.mark()
	w.write("allow.d/billing.yaml", "user: billingg\nallow:\n  - api.example.test:443\n  - 203.0.113.5:5353/udp\n")
	ev, err := w.waitEvent(event.UserMissing, m, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ev["uid"] != float64(uidA) || ev["previous_user"] != fmt.Sprint(uidA) {
		t.Errorf("user_missing does not name the uid still enforced: %v", ev)
	}
	w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)
	w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)
	time.Sleep(1100 * time.Millisecond) // the state file is written at most once a second
	code, m2 := w.checkJSON()
	found := false
	for _, p := range m2["problems"].([]any) {
		p := p.(map[string]any)
		if p["kind"] == "user_missing" && strings.Contains(p["detail"].(string), fmt.Sprintf("still enforces uid %d", uidA)) {
			found = true
		}
	}
	if code != 1 || !found || strings.Contains(strings.Join(problemKinds(m2), " "), "config_not_applied") {
		t.Errorf("check after the typo: exit %d, problems %v", code, m2["problems"])
	}
	// Deleting the file lifts it.
	m = w.mark()
	os.Remove(w.path("allow.d/billing.yaml"))
	if _, err := w.waitEvent(event.RulesetApplied, m, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// That ruleset_applied may be an apply that began before the removal
	// was seen (a renewal, the typo's state): the lift follows within the
	// watch's settle time.
	w.eventually(uidA, "tcp", "198.51.100.20:4444", okConnected, 5*time.Second)
}

// Edits that change nothing in the kernel still change what the daemon
// says it enforces: check is in sync again, not config_not_applied forever.
func TestCheckInSyncAfterNoopEdits(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.start()
	edits := []string{
		// a comment and a reordering
		fmt.Sprintf("# billing\nuser: %d\nallow:\n  - 203.0.113.5:5353/udp\n  - api.example.test:443\n", uidA),
		// a duplicate entry and a name answering NXDOMAIN
		fmt.Sprintf("user: %d\nallow:\n  - 203.0.113.5:5353/udp\n  - api.example.test:443\n  - api.example.test:443\n  - nx.example.test:443\n", uidA),
	}
	for i, body := range edits {
		m := w.mark()
		w.write("allow.d/billing.yaml", body)
		if _, err := w.waitEvent(event.ConfigLoaded, m, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		var code int
		var out string
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if code, out = w.check(); !strings.Contains(out, "config_not_applied") {
				break
			}
		}
		if strings.Contains(out, "config_not_applied") || strings.Contains(out, "NOT enforcing") {
			t.Errorf("edit %d: check still says the daemon does not enforce the files (exit %d)\n%s", i, code, out)
		}
	}
	// A new allowlist whose user does not exist yet: nothing in the kernel.
	m0 := w.mark()
	w.write("allow.d/late.yaml", "user: egressd-no-such-user\nallow: [192.0.2.12:443]\n")
	if _, err := w.waitEvent(event.ConfigLoaded, m0, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	var lateOut string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if _, lateOut = w.check(); !strings.Contains(lateOut, "config_not_applied") {
			break
		}
	}
	if strings.Contains(lateOut, "config_not_applied") {
		t.Errorf("after adding an allowlist for a missing user check says config_not_applied\n%s", lateOut)
	}
	os.Remove(w.path("allow.d/late.yaml"))
	// A linger change (main file) changes nothing in the kernel either.
	m := w.mark()
	w.write("egressd.yaml", strings.Replace(mainConfig, "linger: 2s", "linger: 3s", 1))
	if _, err := w.waitEvent(event.ConfigLoaded, m, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	w.write("allow.d/billing.yaml", edits[0])
	var out string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if _, out = w.check(); !strings.Contains(out, "config_not_applied") {
			break
		}
	}
	if strings.Contains(out, "config_not_applied") {
		t.Errorf("after a linger change check says config_not_applied\n%s", out)
	}
}

// Nobody else can open, let alone hold, the daemon's lock; a lock file
// planted by another user is refused, not trusted.
func TestRuntimeLockNotUsableByOthers(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.start()
	lock := filepath.Join(w.runDir(), "egressd.lock")
	if got := w.connect(uidNone, "flock", lock); got != okRefused {
		t.Errorf("an unprivileged user opened the lock file (result %s)", resultName[got])
	}
	st, err := os.Stat(lock)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("lock file mode: %v %v, want 0600", st.Mode(), err)
	}
	w.kill()

	// A lock file planted by another user (and an open one from an earlier version).
	os.Remove(lock)
	if err := os.WriteFile(lock, []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chown(lock, uidNone, uidNone) //nolint:errcheck
	code, _, errs := w.egressdCmd("run", "--once", "--config", w.path("egressd.yaml"), "--runtime-dir", w.runDir())
	if code != 1 || !strings.Contains(errs, lock) || !strings.Contains(errs, fmt.Sprintf("uid %d", uidNone)) {
		t.Errorf("a foreign lock file: exit %d, want 1 naming the file and its owner\n%s", code, errs)
	}
	// A root-owned 0644 lock file of an earlier version is replaced by a 0600 one.
	os.Chown(lock, 0, 0) //nolint:errcheck
	w.start()
	if st, err := os.Stat(lock); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("the old 0644 lock file was kept: %v %v", st.Mode(), err)
	}
	// A runtime directory other users can write is refused.
	w.kill()
	os.Chmod(w.runDir(), 0o777) //nolint:errcheck
	code, _, errs = w.egressdCmd("run", "--once", "--config", w.path("egressd.yaml"), "--runtime-dir", w.runDir())
	if code != 1 || !strings.Contains(errs, "writable by other users") {
		t.Errorf("a world-writable runtime directory: exit %d\n%s", code, errs)
	}
	os.Chmod(w.runDir(), 0o755) //nolint:errcheck
}

// remove tells the truth: refused while a daemon runs (it would restore
// the table), "nothing to remove" when there is nothing.
func TestRemoveTellsTheTruth(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.start()
	pid := w.daemon.Process.Pid
	code, _, errs := w.egressdCmd("remove", "--runtime-dir", w.runDir())
	if code != 1 || !strings.Contains(errs, fmt.Sprintf("pid %d", pid)) || !strings.Contains(errs, "systemctl stop egressd") {
		t.Errorf("remove while the daemon runs: exit %d, want 1 naming pid %d and how to stop it\n%s", code, pid, errs)
	}
	k := &ruleset.Netlink{NetNSFd: w.ns.Fd()}
	if _, err := k.ReadUsers(); err != nil {
		t.Fatalf("the table is gone after a refused remove: %v", err)
	}
	w.stop(syscall.SIGTERM)
	code, _, errs = w.egressdCmd("remove", "--runtime-dir", w.runDir())
	if code != 0 || !strings.Contains(errs, "removed") {
		t.Errorf("remove after stop: exit %d\n%s", code, errs)
	}
	code, _, errs = w.egressdCmd("remove", "--runtime-dir", w.runDir())
	if code != 0 || !strings.Contains(errs, "nothing to remove") {
		t.Errorf("second remove: exit %d, want 0 and \"nothing to remove\"\n%s", code, errs)
	}
}

// allow.d/NAME.yml is an allowlist too; any other file is reported.
func TestYmlLoadedOthersReported(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.write("allow.d/other.yml", fmt.Sprintf("user: %d\nallow: [192.0.2.11:443]\ndns: none\n", uidNone))
	w.write("allow.d/notes.txt", "user: 1\n")
	m := w.mark()
	w.start()
	w.expect(uidNone, "tcp", "192.0.2.12:443", okRefused)
	w.expect(uidNone, "tcp", "192.0.2.11:443", okConnected)
	ev, err := w.waitEvent(event.ConfigFileSkipped, m, time.Second)
	if err != nil || !strings.HasSuffix(fmt.Sprint(ev["file"]), "notes.txt") {
		t.Errorf("no config_file_skipped for notes.txt: %v %v", ev, err)
	}
	time.Sleep(1100 * time.Millisecond)
	code, j := w.checkJSON()
	if code != 1 || !strings.Contains(strings.Join(problemKinds(j), " "), "file_skipped") {
		t.Errorf("check: exit %d, problems %v, want file_skipped", code, problemKinds(j))
	}
}

// A deny event names only the denied allowlist's own names whose addresses
// include the destination: not another allowlist's, not a deleted one.
func TestDenyNamesOnlyOwnNames(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.dns.Set("cdn.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("198.51.100.20")}, TTL: 60})
	w.dns.Set("old.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.11")}, TTL: 60})
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nallow:\n  - api.example.test:443\n  - old.example.test:443\n", uidA))
	w.write("allow.d/web.yaml", fmt.Sprintf("user: %d\nallow: [cdn.example.test:443]\ndns: none\n", uidB))
	w.start()
	m := w.mark()
	w.expect(uidA, "tcp", "198.51.100.20:443", okRefused)
	ev, err := w.waitEvent(event.Deny, m, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if names, _ := ev["names"].([]any); len(names) != 0 {
		t.Errorf("billing's deny to web's address names %v, want none", names)
	}
	// old.example.test leaves billing's allowlist.
	m = w.mark()
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nallow:\n  - api.example.test:443\n", uidA))
	if _, err := w.waitEvent(event.RulesetApplied, m, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	m = w.mark()
	w.expect(uidA, "tcp", "192.0.2.11:443", okRefused)
	if ev, err = w.waitEvent(event.Deny, m, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if names, _ := ev["names"].([]any); len(names) != 0 {
		t.Errorf("deny names a name deleted from the allowlist: %v", names)
	}
	// The control: its own name, wrong port.
	m = w.mark()
	w.expect(uidA, "tcp", "192.0.2.10:8443", okRefused)
	if ev, err = w.waitEvent(event.Deny, m, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if names, _ := ev["names"].([]any); len(names) != 1 || names[0] != "api.example.test" {
		t.Errorf("own name, wrong port: names %v", names)
	}
}

// check --explain and check answer only what they know.
func TestExplainTellsTheTruth(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.start()
	cfg := []string{"check", "--config", w.path("egressd.yaml"), "--runtime-dir", w.runDir()}
	// Not root: cannot answer (the table exists and uidA is restricted).
	code, out := w.runAs(uidNone, append(cfg, "--explain", fmt.Sprint(uidA), "198.51.100.20:4444")...)
	if code != 2 || !strings.Contains(out, "CAP_NET_ADMIN") || strings.Contains(out, "UNRESTRICTED") {
		t.Errorf("--explain as non-root: exit %d, want 2 (cannot answer)\n%s", code, out)
	}
	code, out = w.runAs(uidNone, cfg...)
	if code != 2 || strings.Contains(out, "INVALID") || strings.Contains(out, "no state file ()") || !strings.Contains(out, "CANNOT CHECK") {
		t.Errorf("check as non-root: exit %d, want 2 with an honest headline\n%s", code, out)
	}
	// Root is never restricted.
	code, out = w.check("--explain", "root", "198.51.100.20:4444")
	if code != 0 || !strings.Contains(out, "UNRESTRICTED") {
		t.Errorf("--explain root: exit %d\n%s", code, out)
	}
	// An allowlist's name instead of its user: a hint.
	code, out = w.check("--explain", "billing", "198.51.100.20:4444")
	if code != 2 || !strings.Contains(out, "is an allowlist") || !strings.Contains(out, fmt.Sprint(uidA)) {
		t.Errorf("--explain billing: exit %d, want 2 with a hint\n%s", code, out)
	}
	// Flags after the positional arguments; JSON with version and exit code.
	code, out = w.check("--explain", fmt.Sprint(uidA), "198.51.100.20:4444", "--json")
	var x map[string]any
	if err := json.Unmarshal([]byte(out), &x); err != nil || code != 1 || x["version"] != float64(1) || x["exit_code"] != float64(1) || x["verdict"] != "denied" {
		t.Errorf("--explain ... --json: exit %d, %v\n%s", code, err, out)
	}
	code, out = w.check("--json", "--explain", "nosuchuser", "198.51.100.20:4444")
	x = nil
	if err := json.Unmarshal([]byte(out), &x); err != nil || code != 2 || x["exit_code"] != float64(2) || x["error"] == nil {
		t.Errorf("--explain --json error: exit %d, %v\n%s", code, err, out)
	}
	// run as non-root: a hint, not a netlink error; run --help: its usage, exit 0.
	code, out = w.runAs(uidNone, "run", "--config", w.path("egressd.yaml"), "--runtime-dir", filepath.Join(w.dir, "run-x"))
	if code == 0 || !strings.Contains(out, "needs root or CAP_NET_ADMIN") {
		t.Errorf("run as non-root: exit %d\n%s", code, out)
	}
	if code, out, _ := w.egressdCmd("run", "--help"); code != 0 || !strings.Contains(out, "Usage:\n  egressd run ") {
		t.Errorf("run --help: exit %d\n%s", code, out)
	}
}

// --explain says when an allowed address only lingers: it left the DNS
// answers and will be removed.
func TestExplainShowsLingering(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.write("egressd.yaml", strings.Replace(mainConfig, "linger: 2s", "linger: 60s", 1))
	w.start()
	m := w.mark()
	w.dns.Set("api.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.11")}, TTL: 2})
	seen := false
	for deadline := time.Now().Add(10 * time.Second); !seen && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, ev := range w.eventsSince(event.Resolved, m) {
			seen = seen || strings.Contains(fmt.Sprint(ev["added"]), "192.0.2.11")
		}
	}
	if !seen {
		t.Fatalf("the new answer was not resolved; daemon log:\n%s", w.logText())
	}
	code, out := w.check("--explain", fmt.Sprint(uidA), "api.example.test:443")
	// The daemon publishes each lingering address's expiry: --explain names it.
	if code != 0 || !strings.Contains(out, "192.0.2.10:443/tcp allowed") || !strings.Contains(out, "no longer in the DNS answers") ||
		!strings.Contains(out, "(lingering) until 20") {
		t.Errorf("--explain with a lingering address: exit %d\n%s", code, out)
	}
}
