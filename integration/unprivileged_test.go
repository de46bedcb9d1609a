//go:build linux

package integration

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/event"
)

// egressd.service runs the daemon as a dynamic user holding only
// CAP_NET_ADMIN as an ambient capability. This runs it the same way: an
// unprivileged uid with that one capability must enforce, log denies over
// NFLOG and publish its state.
func TestDaemonAsUnprivilegedUserWithNetAdmin(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	const daemonUID = 61999
	if err := os.MkdirAll(w.runDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(w.runDir(), daemonUID, daemonUID); err != nil {
		t.Fatal(err)
	}
	const capNetAdmin = 12
	cmd := exec.Command(egressd, w.tw.RunArgs()...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential:  &syscall.Credential{Uid: daemonUID, Gid: daemonUID},
		AmbientCaps: []uintptr{capNetAdmin},
	}
	w.startCmd(cmd)
	// CAP_NET_ADMIN is all it takes to own the table (Linux >= 6.9).
	if evs := w.eventsSince(event.TableUnowned, 0); len(evs) != 0 {
		t.Errorf("the unprivileged daemon does not own its table: %v", evs)
	}
	if out, err := w.nft("delete", "table", "inet", "egressd"); err == nil || !strings.Contains(out, "Operation not permitted") {
		t.Errorf("root deleted the unprivileged daemon's table: %v %s", err, out)
	}
	w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)
	m := w.mark()
	w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)
	if _, err := w.waitEvent(event.Deny, m, time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if code, out := w.check(); code != 0 {
		t.Fatalf("check against the unprivileged daemon: exit %d\n%s", code, out)
	}
}
