//go:build linux

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/bindguard"
	"golang.org/x/sys/unix"
)

// newListenRigAt is newListenRig with the programs attached to dir (a
// test-owned cgroup that holds the units' cgroups), not a cgroup of its own.
func newListenRigAt(t *testing.T, dir string) *listenRig {
	t.Helper()
	fs, err := os.MkdirTemp("/run", "egressdtest-bpffs-")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", fs, "bpf", 0, "mode=0700"); err != nil {
		os.Remove(fs)
		t.Fatal(err)
	}
	r := &listenRig{cg: dir, pins: filepath.Join(fs, "egressd")}
	t.Cleanup(func() {
		if err := bindguard.Remove(r.pins); err != nil {
			t.Errorf("remove pins: %v", err)
		}
		unix.Unmount(fs, 0) //nolint:errcheck
		os.Remove(fs)
	})
	return r
}

// listenIn runs the listen child as uid inside the cgroup dir.
func (w *world) listenIn(dir string, uid int, network, addr string) int {
	w.t.Helper()
	cmd := exec.Command(clientBin)
	cmd.Env = []string{"EGRESSD_TEST_CLIENT=listen", "EGRESSD_TEST_ADDR=" + network + " " + addr}
	done := inCgroup(w.t, cmd, dir)
	defer done()
	code, err := w.tw.RunAs(uid, cmd)
	w.must(err)
	return code
}

func (w *world) expectListenIn(dir string, uid int, network, addr string, want int) {
	w.t.Helper()
	if got := w.listenIn(dir, uid, network, addr); got != want {
		w.t.Errorf("%s: uid %d listen %s %s: %s, want %s", filepath.Base(dir), uid, network, addr, resultName[got], resultName[want])
	}
}

// gateListen is gate with the test's configuration and pins.
func (w *world) gateListen(dir, unit, pins string, timeout time.Duration) (int, string) {
	w.t.Helper()
	return w.runWait(dir, "--unit", unit, "--config", filepath.Join(w.dir, "egressd.yaml"), "--bpf-dir", pins, "--timeout", timeout.String())
}

// listen: in a unit allowlist: every process of the unit (its cgroup and a
// sub-cgroup), whatever its uid, may bind only the listed ports; the unit's
// neighbour is not restricted; the restriction follows the unit across its
// restarts (the start gate holds the new cgroup until it is in the listen
// restriction) and across egressd's.
func TestUnitListen(t *testing.T) {
	w := newWorld(t)
	cg := newUnitCgroups(t)
	r := newListenRigAt(t, cg.dir(""))
	unit := fmt.Sprintf("egressdtest%d-shop.service", os.Getpid())
	w.standardConfig()
	w.write("allow.d/shop.yaml", "unit: "+unit+"\nallow: []\ndns: none\nlisten: [tcp:8080, udp:5353]\n")
	shop := cg.make(unit)
	child := cg.make(unit + "/child")
	neighbour := cg.make(fmt.Sprintf("egressdtest%d-neighbour.service", os.Getpid()))
	w.start(r.args()...)
	if code, out := w.gateListen(shop, unit, r.pins, 10*time.Second); code != 0 {
		t.Fatalf("gate in the running unit: exit %d:\n%s", code, out)
	}

	w.expectListenIn(shop, uidNone, "tcp4", "127.0.0.1:8080", okConnected)
	w.expectListenIn(shop, uidNone, "udp4", "127.0.0.1:5353", okConnected)
	since := w.mark()
	w.expectListenIn(shop, uidNone, "tcp4", "127.0.0.1:9999", okRefused)
	w.expectListenIn(shop, 0, "tcp6", "[::]:9999", okRefused)
	w.expectListenIn(shop, uidNone, "udp4", "127.0.0.1:9999", okRefused)
	w.expectListenIn(child, uidNone, "tcp4", "127.0.0.1:9999", okRefused)
	w.expectListenIn(child, uidNone, "tcp4", "127.0.0.1:8080", okConnected)
	w.expectListenIn(neighbour, uidNone, "tcp4", "127.0.0.1:9999", okConnected)
	ev, err := w.waitEvent("bind_denied", since, 5*time.Second)
	if err != nil {
		t.Fatalf("no bind_denied event: %v\n%s", err, w.logText())
	}
	if ev["allowlist"] != "shop" || ev["unit"] != unit || ev["port"] != float64(9999) || ev["uid"] != float64(uidNone) {
		t.Errorf("bind_denied %v, want allowlist shop, unit %s, port 9999", ev, unit)
	}
	if code, out := w.check(); code != 0 {
		t.Errorf("check: exit %d:\n%s", code, out)
	}
	if code, out := w.check("--explain", unit, "listen", "tcp:9999"); code != 1 || !strings.Contains(out, "DENIED") {
		t.Errorf("check --explain %s listen tcp:9999: exit %d, want 1:\n%s", unit, code, out)
	}
	if code, out := w.check("--explain", unit, "listen", "tcp:8080"); code != 0 || !strings.Contains(out, "allowed by listen: tcp:8080 (") {
		t.Errorf("check --explain %s listen tcp:8080: exit %d, want 0:\n%s", unit, code, out)
	}

	// Restart of the unit: a new cgroup, a new id. The gate returns once it
	// is in the listen restriction; then it is restricted.
	m := w.mark()
	os.Remove(child) //nolint:errcheck
	if err := os.Remove(shop); err != nil {
		t.Fatal(err)
	}
	if _, err := w.waitEvent("unit_cgroup", m, 5*time.Second); err != nil {
		t.Fatalf("no unit_cgroup event for the removed cgroup: %v", err)
	}
	shop = cg.make(unit)
	if code, out := w.gateListen(shop, unit, r.pins, 10*time.Second); code != 0 {
		t.Fatalf("gate in the restarted unit: exit %d:\n%s", code, out)
	}
	w.expectListenIn(shop, uidNone, "tcp4", "127.0.0.1:9999", okRefused)
	w.expectListenIn(shop, uidNone, "tcp4", "127.0.0.1:8080", okConnected)
	// Fail closed: a gate that cannot find the listen restriction (pins
	// elsewhere) does not let the unit start, though nftables maps it.
	if code, out := w.gateListen(shop, unit, filepath.Join(r.pins, "nothing"), time.Second); code != 1 || !strings.Contains(out, "listen: restriction") {
		t.Errorf("gate without the listen restriction: exit %d, want 1:\n%s", code, out)
	}

	// A configuration the gate cannot read (the daemon keeps its last good
	// one): the kernel says unit rules are expected, so the gate still
	// waits for the unit's cgroup in the listen restriction.
	w.write("allow.d/broken.yaml", "user: [\n")
	m = w.mark()
	if err := os.Remove(shop); err != nil {
		t.Fatal(err)
	}
	if _, err := w.waitEvent("unit_cgroup", m, 5*time.Second); err != nil {
		t.Fatalf("no unit_cgroup event for the removed cgroup: %v", err)
	}
	shop = cg.make(unit)
	if code, out := w.gateListen(shop, unit, r.pins, 10*time.Second); code != 0 {
		t.Fatalf("gate with an unreadable configuration: exit %d:\n%s", code, out)
	}
	w.expectListenIn(shop, uidNone, "tcp4", "127.0.0.1:9999", okRefused)
	if err := os.Remove(filepath.Join(w.dir, "allow.d", "broken.yaml")); err != nil {
		t.Fatal(err)
	}

	// Restart of egressd: the pins keep the restriction meanwhile.
	w.stop(syscall.SIGTERM)
	w.expectListenIn(shop, uidNone, "tcp4", "127.0.0.1:9999", okRefused)
	w.start(r.args()...)
	w.expectListenIn(shop, uidNone, "tcp4", "127.0.0.1:9999", okRefused)
	w.expectListenIn(shop, uidNone, "tcp4", "127.0.0.1:8080", okConnected)
	w.stop(syscall.SIGTERM)
}
