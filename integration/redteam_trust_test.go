//go:build linux && redteam

package integration

// Red-team findings (second round) on egressd's trust in its own inputs and
// state: each test FAILS while the hole is open. Run with
//
//	go test -tags redteam ./integration -run TestRedteam -count=1 -v

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// The typo protection ("an edit that changes user: to a name that does not
// exist keeps the uid in force ... also across a restart of the daemon")
// reads the previous uids back from RUNTIME_DIR/state.json. The shipped
// egressd.service declares RuntimeDirectory=egressd without
// RuntimeDirectoryPreserve=, so systemd deletes /run/egressd whenever the
// unit stops, `systemctl restart egressd` (an upgrade, an operator) included.
// This test plays exactly that: stop the daemon, delete its runtime
// directory, start it again. The uid the typo left in force must still be
// restricted; today it is not, and every process the user still runs may
// connect anywhere.
func TestRedteamTypoUserAcrossUnitRestart(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.start()
	w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)
	m := w.mark()
	w.write("allow.d/billing.yaml", "user: billingg\nallow:\n  - api.example.test:443\n  - 203.0.113.5:5353/udp\n")
	if _, err := w.waitEvent("user_missing", m, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)
	time.Sleep(1100 * time.Millisecond) // the state file is written at most once a second
	if _, err := os.Stat(w.runDir() + "/state.json"); err != nil {
		t.Fatalf("no state file to lose: %v", err)
	}
	// Control: a restart that keeps the runtime directory keeps the uid.
	w.stop(syscall.SIGTERM)
	w.start()
	w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)
	time.Sleep(1100 * time.Millisecond)
	// systemctl restart egressd: SIGTERM, then systemd removes
	// RuntimeDirectory= (RuntimeDirectoryPreserve=no, the default), then
	// starts the unit again, which recreates the directory empty.
	w.stop(syscall.SIGTERM)
	if err := os.RemoveAll(w.runDir()); err != nil {
		t.Fatal(err)
	}
	w.start()
	w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)
}
