//go:build linux

package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/event"
)

// mode: audit (issue 15): an audited user reaches an unlisted destination,
// and a deny event with "audit": true says so; check shows the mode;
// switching to enforce is a reload, after which the same connect is refused.
func TestAuditMode(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	billing := fmt.Sprintf("user: %d\nallow:\n  - api.example.test:443\nmode: audit\n", uidA)
	w.write("allow.d/billing.yaml", billing)
	w.start()

	m := w.mark()
	w.expect(uidA, "tcp", "198.51.100.20:4444", okConnected) // unlisted: logged, then let through
	ev, err := w.waitEvent(event.Deny, m, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ev["audit"] != true || ev["allowlist"] != "billing" || ev["dst"] != "198.51.100.20" || ev["dport"] != float64(4444) {
		t.Errorf("audit deny event = %v", ev)
	}
	// The enforced allowlist beside it still rejects, and says audit: false.
	m = w.mark()
	w.expect(uidB, "tcp", "198.51.100.20:4444", okRefused)
	if ev, err := w.waitEvent(event.Deny, m, 2*time.Second); err != nil || ev["audit"] != false || ev["allowlist"] != "web" {
		t.Errorf("enforced deny event = %v, %v", ev, err)
	}
	code, out := w.check()
	if !strings.Contains(out, "audit") {
		t.Errorf("check does not show the audit mode (exit %d):\n%s", code, out)
	}
	code, out = w.check("--explain", fmt.Sprint(uidA), "198.51.100.20:4444")
	if code != 1 || !strings.Contains(out, "audit mode") {
		t.Errorf("--explain of an audited would-be deny: exit %d\n%s", code, out)
	}

	// audit → enforce: a reload, no restart.
	w.write("allow.d/billing.yaml", strings.Replace(billing, "mode: audit", "mode: enforce", 1))
	w.eventually(uidA, "tcp", "198.51.100.20:4444", okRefused, 5*time.Second)
	w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)
}

// egressd denies (issue 15): recent denied and audited attempts, aggregated,
// readable and as JSON; --follow shows a new denial as it happens.
func TestDeniesCommand(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.write("allow.d/web.yaml", fmt.Sprintf("user: %d\nallow:\n  - 192.0.2.12:443\ndns: none\nmode: audit\n", uidB))
	w.start()
	for i := 0; i < 3; i++ {
		w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)
	}
	w.expect(uidB, "tcp", "198.51.100.20:443", okConnected) // audited
	var out string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		_, out, _ = w.egressdCmd("denies", "--runtime-dir", w.runDir())
		if strings.Contains(out, "audited  tcp") {
			break
		}
	}
	t.Logf("egressd denies:\n%s", out)
	rows := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 9 {
			rows[strings.Join(f[2:], " ")] = true // without the date and time
		}
	}
	for _, want := range []string{"billing denied tcp 198.51.100.20 4444 3 -", "web audited tcp 198.51.100.20 443 1 -"} {
		if !rows[want] {
			t.Errorf("denies output lacks %q:\n%s", want, out)
		}
	}
	code, js, _ := w.egressdCmd("denies", "--runtime-dir", w.runDir(), "--allowlist", "web", "--json")
	var entries []map[string]any
	if err := json.Unmarshal([]byte(js), &entries); err != nil || code != 0 || len(entries) != 1 || entries[0]["audit"] != true {
		t.Errorf("denies --allowlist web --json: exit %d, %v\n%s", code, err, js)
	}

	// --follow: a new denial appears while it runs.
	cmd := exec.Command(egressd, "denies", "--runtime-dir", w.runDir(), "--follow")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.ns.Start(cmd); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }() //nolint:errcheck
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	time.Sleep(300 * time.Millisecond) // its first read is done
	start := time.Now()
	w.expect(uidA, "udp", "203.0.113.5:5354", okRefused)
	for {
		select {
		case l := <-lines:
			if strings.Contains(l, "203.0.113.5") && strings.Contains(l, "5354") {
				t.Logf("denies --follow showed the new denial %v after the attempt: %s", time.Since(start).Round(time.Millisecond), l)
				return
			}
		case <-time.After(5 * time.Second):
			t.Fatal("denies --follow did not show a new denial")
		}
	}
}

// egressd learn (issue 15): what an audited service did becomes a proposed
// allowlist that loads as it is; enforcing it allows what was observed and
// denies the rest; the observations survive a restart of the daemon.
func TestLearn(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nallow:\n  - api.example.test:443\nmode: audit\n", uidA))
	stateDir := filepath.Join(w.dir, "state")
	if err := os.Mkdir(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	startWithState := func() {
		cmd := exec.Command(egressd, w.tw.RunArgs()...)
		cmd.Env = append(cmd.Environ(), "STATE_DIRECTORY="+stateDir)
		w.startCmd(cmd)
	}
	startWithState()
	w.expect(uidA, "tcp", "198.51.100.20:443", okConnected) // audited: let through
	w.expect(uidA, "udp", "203.0.113.5:5354", okConnected)
	w.expect(uidA, "tcp", "192.0.2.10:8443", okConnected) // the allowlist's own name, another port
	// Restart: the observations come back from the state directory.
	w.stop(syscall.SIGTERM)
	startWithState()
	w.expect(uidA, "tcp", "198.51.100.20:443", okConnected)
	learnOut := func() (int, string, string) {
		return w.egressdCmd("learn", "--config", filepath.Join(w.dir, "egressd.yaml"), "--state-dir", stateDir,
			"--runtime-dir", w.runDir(), "billing")
	}
	var code int
	var out, errs string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		code, out, errs = learnOut()
		if strings.Contains(out, "198.51.100.20:443") && strings.Contains(out, "observed 2×") &&
			strings.Contains(out, "203.0.113.5:5354/udp") && strings.Contains(out, "api.example.test:8443") {
			break
		}
	}
	t.Logf("egressd learn billing (exit %d):\n%s%s", code, out, errs)
	if code != 0 || !strings.Contains(out, "observed 2×") {
		t.Fatalf("learn after a restart lacks what was observed before it (exit %d)", code)
	}
	if _, err := config.ParseAllowlist("billing.yaml", "billing", []byte(out)); err != nil {
		t.Fatalf("the proposal does not load: %v", err)
	}
	// Enforce the proposal: what was observed is allowed, the rest denied.
	w.write("allow.d/billing.yaml", strings.Replace(out, "\nmode: audit ", "\nmode: enforce ", 1))
	w.eventually(uidA, "tcp", "192.0.2.11:443", okRefused, 5*time.Second) // a listener never observed
	w.expect(uidA, "tcp", "198.51.100.20:443", okConnected)
	w.expect(uidA, "udp", "203.0.113.5:5354", okConnected)
	w.expect(uidA, "tcp", "192.0.2.10:8443", okConnected)
	w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)
}
