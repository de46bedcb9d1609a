//go:build linux

package integration

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/cgroup"
)

// unitCgroups is a test-owned part of the host's cgroup2 hierarchy:
// ROOT/egressdtest-PID.slice, holding cgroups named like units. The daemon
// follows the host's real hierarchy; the unit names are unique to the test.
type unitCgroups struct {
	t     *testing.T
	root  string
	slice string
}

func newUnitCgroups(t *testing.T) *unitCgroups {
	t.Helper()
	root, err := cgroup.Root()
	if err != nil {
		t.Fatalf("unit allowlists need cgroup v2: %v", err)
	}
	u := &unitCgroups{t: t, root: root, slice: fmt.Sprintf("egressdtest-%d.slice", os.Getpid())}
	if err := os.Mkdir(u.dir(""), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		var dirs []string
		filepath.WalkDir(u.dir(""), func(p string, d os.DirEntry, err error) error { //nolint:errcheck
			if err == nil && d.IsDir() {
				dirs = append([]string{p}, dirs...)
			}
			return nil
		})
		for _, d := range dirs {
			os.Remove(d) //nolint:errcheck
		}
	})
	return u
}

func (u *unitCgroups) dir(name string) string { return filepath.Join(u.root, u.slice, name) }

func (u *unitCgroups) make(name string) string {
	u.t.Helper()
	if err := os.MkdirAll(u.dir(name), 0o755); err != nil {
		u.t.Fatal(err)
	}
	return u.dir(name)
}

// inCgroup makes cmd start inside the cgroup dir (clone3 CLONE_INTO_CGROUP);
// the returned function closes the directory once cmd has started.
func inCgroup(t *testing.T, cmd *exec.Cmd, dir string) func() {
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, int(f.Fd())
	return func() { f.Close() }
}

// connectIn runs the client as uid inside the cgroup dir and the namespace.
func (w *world) connectIn(dir string, uid int, proto, addr string) int {
	w.t.Helper()
	cmd := exec.Command(clientBin)
	cmd.Env = []string{"EGRESSD_TEST_CLIENT=" + proto, "EGRESSD_TEST_ADDR=" + addr}
	done := inCgroup(w.t, cmd, dir)
	defer done()
	code, err := w.tw.RunAs(uid, cmd)
	w.must(err)
	return code
}

func (w *world) expectIn(dir string, uid int, proto, addr string, want int) {
	w.t.Helper()
	if got := w.connectIn(dir, uid, proto, addr); got != want {
		w.t.Errorf("%s: uid %d %s %s: %s, want %s", filepath.Base(dir), uid, proto, addr, resultName[got], resultName[want])
	}
}

// gate runs `egressd wait --unit` as root inside the cgroup dir and the
// namespace, as systemd runs ExecStartPre=+: its exit code and output.
func (w *world) gate(dir, unit string, timeout time.Duration) (int, string) {
	w.t.Helper()
	return w.runWait(dir, "--unit", unit, "--timeout", timeout.String())
}

// runWait runs `egressd wait ARGS...` as root in the namespace (as systemd
// runs ExecStartPre=+), inside the cgroup dir unless dir is "", and returns
// its exit status and output.
func (w *world) runWait(dir string, args ...string) (int, string) {
	w.t.Helper()
	cmd := exec.Command(egressd, append([]string{"wait"}, args...)...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if dir != "" {
		done := inCgroup(w.t, cmd, dir)
		defer done()
	}
	w.must(w.tw.NS.Start(cmd))
	err := cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), out.String()
	}
	w.must(err)
	return 0, out.String()
}

// A unit allowlist binds every process in the unit's cgroup, whatever its
// uid, and nothing outside it; the daemon follows the unit's cgroup across a
// restart, and the start gate holds the new cgroup until it is restricted.
func TestUnitAllowlist(t *testing.T) {
	w := newWorld(t)
	cg := newUnitCgroups(t)
	unit := fmt.Sprintf("egressdtest%d-shop.service", os.Getpid())
	w.standardConfig()
	w.write("allow.d/shop.yaml", "unit: "+unit+"\nallow:\n  - 192.0.2.12:443\ndns: none\n")
	shop := cg.make(unit)
	neighbour := cg.make(fmt.Sprintf("egressdtest%d-neighbour.service", os.Getpid()))
	w.start()

	w.expectIn(shop, uidNone, "tcp", "192.0.2.12:443", okConnected)
	m0 := w.mark()
	w.expectIn(shop, uidNone, "tcp", "192.0.2.10:443", okRefused)
	// The deny event names the unit and its allowlist, whatever the uid.
	if ev, err := w.waitEvent("deny", m0, 5*time.Second); err != nil {
		t.Errorf("no deny event for the unit: %v", err)
	} else if ev["allowlist"] != "shop" || ev["unit"] != unit || ev["dst"] != "192.0.2.10" || ev["uid"] != float64(uidNone) {
		t.Errorf("deny event %v, want allowlist shop, unit %s, dst 192.0.2.10, uid %d", ev, unit, uidNone)
	}
	w.expectIn(shop, 0, "tcp", "198.51.100.20:4444", okRefused)
	w.expectIn(shop, uidNone, "udp", "203.0.113.5:5353", okRefused)
	// Two units of one user: only the restricted one is.
	w.expectIn(neighbour, uidNone, "tcp", "192.0.2.10:443", okConnected)
	w.expect(uidNone, "tcp", "192.0.2.10:443", okConnected)
	// A restricted user inside a restricted unit passes both lists.
	w.expectIn(shop, uidB, "tcp", "192.0.2.12:443", okConnected) // web's and shop's
	w.expectIn(shop, uidA, "tcp", "192.0.2.12:443", okRefused)   // shop's, not billing's
	w.expectIn(shop, uidA, "tcp", "192.0.2.10:443", okRefused)   // billing's, not shop's

	if code, out := w.check(); code != 0 || !strings.Contains(out, unit) {
		t.Errorf("check: exit %d, want 0 and the unit named:\n%s", code, out)
	}
	// plan, like check and the daemon, maps the running unit's cgroup: the
	// kernel the daemon applied is no difference (issue 23: plan showed
	// "users_differ unitchains: 0 cgroups missing, 1 not in the plan").
	if code, out, errs := w.plan(); code != 0 || !strings.Contains(out, "# none: the kernel holds this ruleset") {
		_, diff, _ := strings.Cut(out, "# difference with the kernel:")
		t.Errorf("plan with the unit running: exit %d, want no difference:\n%s%s", code, diff, errs)
	}
	if code, out := w.check("--explain", unit, "192.0.2.10:443"); code != 1 || !strings.Contains(out, "DENIED: unit "+unit) || !strings.Contains(out, "allowlist: shop") {
		t.Errorf("check --explain %s 192.0.2.10:443: exit %d, want 1:\n%s", unit, code, out)
	}
	if code, out := w.check("--explain", unit, "192.0.2.12:443"); code != 0 || !strings.Contains(out, "ALLOWED: unit "+unit) || !strings.Contains(out, "192.0.2.12:443 (") {
		t.Errorf("check --explain %s 192.0.2.12:443: exit %d, want 0:\n%s", unit, code, out)
	}
	if code, out := w.check("--explain", "other.service", "192.0.2.10:443"); code != 0 || !strings.Contains(out, "UNRESTRICTED") {
		t.Errorf("check --explain other.service: exit %d, want 0 (unrestricted):\n%s", code, out)
	}

	// A gate outside the unit refuses: it would vouch for another cgroup.
	if code, out := w.gate(neighbour, unit, time.Second); code != 1 {
		t.Errorf("gate in another unit: exit %d, want 1:\n%s", code, out)
	}

	// Restart: the cgroup goes and comes back with a new id. The gate,
	// the first process in it, returns once the new id is restricted.
	m := w.mark()
	if err := os.Remove(shop); err != nil {
		t.Fatal(err)
	}
	if _, err := w.waitEvent("unit_cgroup", m, 5*time.Second); err != nil {
		t.Fatalf("no unit_cgroup event for the removed cgroup: %v", err)
	}
	shop = cg.make(unit)
	if code, out := w.gate(shop, unit, 10*time.Second); code != 0 {
		t.Fatalf("gate in the restarted unit: exit %d:\n%s", code, out)
	}
	w.expectIn(shop, uidNone, "tcp", "192.0.2.10:443", okRefused)
	w.expectIn(shop, uidNone, "tcp", "192.0.2.12:443", okConnected)
	if evs := w.eventsSince("unit_cgroup", m); len(evs) < 2 || evs[len(evs)-1]["change"] != "added" || evs[len(evs)-1]["unit"] != unit {
		t.Errorf("unit_cgroup events: %v", evs)
	}
}
