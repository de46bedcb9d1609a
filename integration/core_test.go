//go:build linux

package integration

import (
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
)

func TestEnforcement(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.start()

	// An allowlisted name:port connects, over IPv4 and IPv6.
	w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)
	w.expect(uidA, "tcp", "[2001:db8::10]:443", okConnected)
	// The same host on another port, and an unlisted address, are refused at once.
	w.expect(uidA, "tcp", "192.0.2.10:8443", okRefused)
	w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)
	// UDP entries: the listed port answers, another is refused.
	w.expect(uidA, "udp", "203.0.113.5:5353", okConnected)
	w.expect(uidA, "udp", "203.0.113.5:5354", okRefused)
	// dns: resolvers lets billing reach the resolver; web has dns: none.
	w.expect(uidA, "udp", "192.0.2.53:53", timedOut) // allowed through, but the client's "ping" is not DNS: no answer
	w.expect(uidB, "udp", "192.0.2.53:53", okRefused)
	// Two users' allowlists do not leak into each other.
	w.expect(uidB, "tcp", "192.0.2.10:443", okRefused)
	w.expect(uidA, "tcp", "192.0.2.12:443", okRefused)
	w.expect(uidB, "tcp", "192.0.2.12:443", okConnected)
	w.expect(uidB, "tcp", "[2001:db8::20]:443", okConnected)
	w.expect(uidB, "tcp", "[2001:db8::10]:443", okRefused)
	// Root and users without an allowlist are unaffected.
	w.expect(0, "tcp", "198.51.100.20:4444", okConnected)
	w.expect(uidNone, "tcp", "198.51.100.20:4444", okConnected)
	w.expect(uidNone, "udp", "203.0.113.5:5354", okConnected)
}

func TestDNSChangeFollowsTTLAndLinger(t *testing.T) {
	w := newWorld(t)
	w.standardConfig() // TTL 2s, linger 2s
	w.start()
	w.expect(uidA, "tcp", "192.0.2.11:443", okRefused)

	changed := time.Now()
	w.dns.Set("api.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.11")}, TTL: 2})
	took := w.eventually(uidA, "tcp", "192.0.2.11:443", okConnected, 3*time.Second) // TTL + 1s
	t.Logf("new address allowed %v after the DNS change (TTL 2s)", took)
	// The old address lingers (last seen + TTL + linger), then stops working.
	gone := w.eventually(uidA, "tcp", "192.0.2.10:443", okRefused, 2*time.Second+2*time.Second+2*time.Second)
	t.Logf("old address refused %v after the DNS change (TTL 2s + linger 2s)", time.Since(changed))
	if since := time.Since(changed); since < 2*time.Second {
		t.Errorf("old address refused after %v: sooner than its TTL", since)
	}
	_ = gone
	// The IPv6 answer vanished too (no AAAA any more: NODATA empties it after the negative TTL).
	w.eventually(uidA, "tcp", "[2001:db8::10]:443", okRefused, 15*time.Second)
}

func TestAllowlistEditAppliesLive(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.start()
	w.expect(uidA, "tcp", "198.51.100.20:443", okRefused)

	// An editor-style save: write a temporary file, rename over the original.
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nallow:\n  - api.example.test:443\n  - 198.51.100.20:443\n", uidA))
	w.eventually(uidA, "tcp", "198.51.100.20:443", okConnected, 3*time.Second)
	w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)

	// A new allowlist file for another user.
	w.write("allow.d/other.yaml", fmt.Sprintf("user: %d\nallow: [192.0.2.12:443]\n", uidNone))
	w.eventually(uidNone, "tcp", "198.51.100.20:4444", okRefused, 3*time.Second)
	w.expect(uidNone, "tcp", "192.0.2.12:443", okConnected)

	// Removing the file lifts that user's restriction.
	if err := os.Remove(filepath.Join(w.dir, "allow.d/other.yaml")); err != nil {
		t.Fatal(err)
	}
	w.eventually(uidNone, "tcp", "198.51.100.20:4444", okConnected, 3*time.Second)

	// SIGHUP reloads too.
	if err := os.WriteFile(filepath.Join(w.dir, "allow.d/web.yaml"), []byte(fmt.Sprintf("user: %d\nallow: [198.51.100.20:4444]\ndns: none\n", uidB)), 0o644); err != nil {
		t.Fatal(err)
	}
	w.daemon.Process.Signal(syscall.SIGHUP) //nolint:errcheck
	w.eventually(uidB, "tcp", "198.51.100.20:4444", okConnected, 3*time.Second)
	w.expect(uidB, "tcp", "192.0.2.12:443", okRefused)
}

// A Kubernetes ConfigMap mount swaps a ..data symlink.
func TestConfigMapSymlinkSwap(t *testing.T) {
	w := newWorld(t)
	w.write("egressd.yaml", mainConfig)
	dir := filepath.Join(w.dir, "allow.d")
	mk := func(gen, body string) {
		if err := os.MkdirAll(filepath.Join(dir, gen), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, gen, "billing.yaml"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk("..2026_01", fmt.Sprintf("user: %d\nallow: [192.0.2.12:443]\n", uidA))
	if err := os.Symlink("..2026_01", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/billing.yaml", filepath.Join(dir, "billing.yaml")); err != nil {
		t.Fatal(err)
	}
	w.start()
	w.expect(uidA, "tcp", "192.0.2.12:443", okConnected)
	w.expect(uidA, "tcp", "198.51.100.20:443", okRefused)

	mk("..2026_02", fmt.Sprintf("user: %d\nallow: [198.51.100.20:443]\n", uidA))
	if err := os.Symlink("..2026_02", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	w.eventually(uidA, "tcp", "198.51.100.20:443", okConnected, 3*time.Second)
	w.expect(uidA, "tcp", "192.0.2.12:443", okRefused)
}

func TestBadEditKeepsEnforcement(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.start()
	p := w.probe(uidA, "198.51.100.20:443")

	m := w.mark()
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nallow:\n  - api.example.test:443\n  - 198.51.100.20:443\n  - not a destination\n", uidA))
	ev, err := w.waitEvent(event.ConfigRejected, m, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(fmt.Sprint(ev["file"]), "allow.d/billing.yaml") || ev["line"] != float64(5) || ev["column"] != float64(5) || !strings.Contains(fmt.Sprint(ev["error"]), "not a destination") {
		t.Errorf("config_rejected event = %v", ev)
	}
	// Give a wrong reload time to do harm, then check nothing changed.
	time.Sleep(500 * time.Millisecond)
	w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)
	w.expect(uidB, "tcp", "192.0.2.12:443", okConnected)
	w.expect(uidB, "tcp", "198.51.100.20:443", okRefused)
	if tries, leaks := p.finish(); leaks > 0 || tries == 0 {
		t.Errorf("denied destination reachable %d times in %d tries during the bad edit", leaks, tries)
	}

	// A duplicate user across two files is rejected as a whole too.
	m = w.mark()
	w.write("allow.d/dup.yaml", fmt.Sprintf("user: %d\nallow: [198.51.100.20:4444]\n", uidB))
	if _, err := w.waitEvent(event.ConfigRejected, m, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	w.expect(uidB, "tcp", "198.51.100.20:4444", okRefused)

	// Fixing the files applies the fixed configuration.
	os.Remove(filepath.Join(w.dir, "allow.d/dup.yaml"))
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nallow:\n  - api.example.test:443\n  - 198.51.100.20:443\n", uidA))
	w.eventually(uidA, "tcp", "198.51.100.20:443", okConnected, 3*time.Second)
}

func TestKillAndRestartNeverOpens(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.start()
	p := w.probe(uidA, "198.51.100.20:4444")

	w.daemon.Process.Signal(syscall.SIGKILL) //nolint:errcheck
	<-w.done
	w.daemon = nil
	// Enforcement stays without the daemon.
	w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)
	w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)
	// The restart rebuilds the table in one transaction while the prober runs.
	w.start()
	w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)
	tries, leaks := p.finish()
	if leaks > 0 || tries < 10 {
		t.Fatalf("denied destination reachable %d times in %d tries across kill and restart", leaks, tries)
	}
	t.Logf("%d probes across SIGKILL and restart, none reached the denied destination", tries)
}

func TestStopOnExit(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.start()
	w.stop(syscall.SIGTERM) // on_exit: keep (default)
	w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)

	w.write("egressd.yaml", mainConfig+"on_exit: remove\n")
	w.start()
	w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)
	w.stop(syscall.SIGTERM)
	w.expect(uidA, "tcp", "198.51.100.20:4444", okConnected)
}

// run --once exit codes: 0 applied, 1 names failed, 2 config invalid.
func TestRunOnceExitCodes(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	once := func() (int, string) {
		cmd := exec.Command(egressd, w.tw.RunArgs("--once")...)
		var out strings.Builder
		cmd.Stderr = &out
		if err := w.ns.Start(cmd); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), out.String()
		}
		return 0, out.String()
	}
	if code, out := once(); code != 0 {
		t.Fatalf("exit %d, want 0:\n%s", code, out)
	}
	w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)
	w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)

	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nallow: [api.example.test:443, missing.example.test:443]\n", uidA))
	if code, out := once(); code != 1 {
		t.Fatalf("exit %d, want 1 (a name failed):\n%s", code, out)
	}
	w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)

	w.write("allow.d/billing.yaml", "user: [\n")
	code, out := once()
	if code != 2 || !strings.Contains(out, "billing.yaml:") {
		t.Fatalf("exit %d, want 2 with the file named:\n%s", code, out)
	}
	w.expect(uidA, "tcp", "192.0.2.10:443", okConnected) // nothing changed
}

// An allowlist whose user does not exist yet is reported, does not break the
// others, and is enforced as soon as the user appears.
func TestUserAppearsLater(t *testing.T) {
	w := newWorld(t)
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Skip("useradd not installed")
	}
	const name, uid = "egressd-it-late", 61004
	exec.Command("userdel", name).Run() //nolint:errcheck // leftover of an interrupted run
	w.standardConfig()
	w.write("allow.d/late.yaml", fmt.Sprintf("user: %s\nallow: [192.0.2.12:443]\n", name))
	w.start()
	if _, err := w.waitEvent(event.UserMissing, 0, time.Second); err != nil {
		t.Fatal(err)
	}
	w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused) // the others are enforced
	w.expect(uid, "tcp", "198.51.100.20:4444", okConnected)

	out, err := exec.Command("useradd", "--uid", fmt.Sprint(uid), "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput()
	if err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("userdel", name).Run() }) //nolint:errcheck
	took := w.eventually(uid, "tcp", "198.51.100.20:4444", okRefused, 7*time.Second)
	t.Logf("user enforced %v after it was created", took)
	w.expect(uid, "tcp", "192.0.2.12:443", okConnected)
}

// The allow directory deleted keeps the last good configuration (a deleted
// directory must not lift every restriction); recreated, it is watched again.
func TestAllowDirRecreated(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.start()
	p := w.probe(uidA, "198.51.100.20:4444")
	m := w.mark()
	if err := os.RemoveAll(filepath.Join(w.dir, "allow.d")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.waitEvent(event.ConfigRejected, m, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if tries, leaks := p.finish(); leaks > 0 || tries == 0 {
		t.Fatalf("denied destination reachable %d times in %d tries after the directory was deleted", leaks, tries)
	}
	w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nallow: [192.0.2.12:443]\n", uidA))
	w.eventually(uidA, "tcp", "192.0.2.12:443", okConnected, 3*time.Second)
	w.expect(uidA, "tcp", "192.0.2.10:443", okRefused)
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nallow: [198.51.100.20:4444]\n", uidA))
	w.eventually(uidA, "tcp", "198.51.100.20:4444", okConnected, 3*time.Second)
}

// Two daemons started at once: the second refuses with a clear error (a
// lock under the runtime directory) and changes nothing.
func TestSecondDaemonRefuses(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.start()
	code, _, errs := w.egressdCmd(w.tw.RunArgs()...)
	if code != 1 || !strings.Contains(errs, "another egressd is running (pid ") {
		t.Fatalf("second daemon: exit %d, stderr:\n%s", code, errs)
	}
	code, _, errs = w.egressdCmd(w.tw.RunArgs("--once")...)
	if code != 1 || !strings.Contains(errs, "another egressd is running") {
		t.Fatalf("run --once beside the daemon: exit %d, stderr:\n%s", code, errs)
	}
	w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)
	w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)
}
