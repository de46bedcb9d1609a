//go:build linux

package integration

// Red-team findings (second round) on egressd's trust in its own inputs and
// state: each test FAILS while the hole is open. Run with
//
//	go test -tags redteam ./integration -run TestRedteam -count=1 -v

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
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

func init() {
	childModes["hold"] = func(string) int {
		fmt.Printf("{\"pid\":%d}\n", os.Getpid())
		io.Copy(io.Discard, os.Stdin) //nolint:errcheck
		return okConnected
	}
}

// check decides whether the daemon runs by whether /proc/PID exists for the
// pid in state.json (State.Alive), not by the lock the daemon holds
// (state.Holder, which remove uses). After a daemon dies without its
// runtime directory being removed (SIGKILL or a crash outside systemd, or
// with RuntimeDirectoryPreserve=), any process that gets the same pid — an
// unprivileged user can cycle the pid space with fork — makes check report
// "running", compare the kernel with the dead daemon's plan and exit 0,
// instead of daemon_not_running. The test gives uidNone the pid through
// ns_last_pid (root's shortcut for the fork loop).
func TestRedteamCheckFooledByPIDReuse(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.start()
	time.Sleep(1100 * time.Millisecond) // the state file is written at most once a second
	pid := w.daemon.Process.Pid
	w.kill()
	// Control: nobody has the pid: check says the daemon is gone.
	if code, m := w.checkJSON(); !strings.Contains(strings.Join(problemKinds(m), " "), "daemon_not_running") {
		t.Fatalf("control: check after the daemon died: exit %d, problems %v", code, problemKinds(m))
	}
	var got int
	for i := 0; i < 50 && got != pid; i++ {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(pid-1)), 0o644); err != nil {
			t.Skipf("cannot set ns_last_pid: %v", err)
		}
		c := w.startChild(uidNone, "hold", "")
		got = int(c.next(t, 5*time.Second)["pid"].(float64))
		if got != pid {
			c.wait(t)
		}
	}
	if got != pid {
		t.Skipf("pid %d taken by another process first", pid)
	}
	code, m := w.checkJSON()
	d, _ := m["daemon"].(map[string]any)
	if d["running"] == true || !strings.Contains(strings.Join(problemKinds(m), " "), "daemon_not_running") {
		t.Errorf("no daemon runs, uid %d holds pid %d: check exit %d, daemon %v, problems %v", uidNone, pid, code, d, problemKinds(m))
	}
}
