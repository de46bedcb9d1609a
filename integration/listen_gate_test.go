//go:build linux

package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// gateUser runs `egressd wait --user` as root in the namespace, as systemd
// runs ExecStartPre=+, with the test's configuration and pins.
func (w *world) gateUser(uid int, pins string, timeout time.Duration) (int, string) {
	w.t.Helper()
	return w.runWait("", "--user", fmt.Sprint(uid), "--config", w.tw.Config(), "--bpf-dir", pins, "--timeout", timeout.String())
}

// The start gate of a user allowlist with listen: waits for the uid's rule
// in the listen restriction too, as a unit's does: a restriction that is not
// loaded keeps the service from starting (before, the gate passed on the
// nftables users map alone and the service listened on any port).
func TestUserListenGate(t *testing.T) {
	w := newWorld(t)
	r := newListenRig(t)
	w.standardConfig()
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nallow: [api.example.test:443]\nlisten: [tcp:8080]\n", uidA))
	w.start(r.args()...)
	nothing := filepath.Join(r.pins, "nothing")

	if code, out := w.gateUser(uidA, r.pins, 10*time.Second); code != 0 {
		t.Fatalf("gate of billing (listen: loaded): exit %d:\n%s", code, out)
	}
	w.expectListen(r, uidA, "tcp4", "127.0.0.1:9999", okRefused)
	// Control: web has no listen: key; its gate needs nftables only.
	if code, out := w.gateUser(uidB, nothing, 10*time.Second); code != 0 {
		t.Errorf("gate of web (no listen:): exit %d:\n%s", code, out)
	}
	// The attack: nftables restricts uidA, the listen restriction is not
	// where the gate looks (not loaded): the service must not start.
	if code, out := w.gateUser(uidA, nothing, time.Second); code != 1 || !strings.Contains(out, "listen: restriction") {
		t.Errorf("gate of billing without the listen restriction: exit %d, want 1:\n%s", code, out)
	}

	// A configuration the gate cannot read (the daemon keeps its last good
	// one): the kernel holds a user's listen: rule, so every user's gate
	// waits for its own: billing passes, web fails closed until it is fixed.
	w.write("allow.d/broken.yaml", "user: [\n")
	if code, out := w.gateUser(uidA, r.pins, 10*time.Second); code != 0 {
		t.Errorf("gate of billing with an unreadable configuration: exit %d:\n%s", code, out)
	}
	if code, out := w.gateUser(uidB, r.pins, time.Second); code != 1 || !strings.Contains(out, "listen: restriction") {
		t.Errorf("gate of web with an unreadable configuration: exit %d, want 1:\n%s", code, out)
	}
	if err := os.Remove(filepath.Join(w.dir, "allow.d", "broken.yaml")); err != nil {
		t.Fatal(err)
	}
	if code, out := w.gateUser(uidB, r.pins, 10*time.Second); code != 0 {
		t.Errorf("gate of web once the configuration is fixed: exit %d:\n%s", code, out)
	}
}
