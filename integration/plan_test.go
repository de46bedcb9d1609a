//go:build linux

package integration

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func (w *world) plan() (int, string, string) {
	w.t.Helper()
	return w.egressdCmd("plan", "--config", filepath.Join(w.dir, "egressd.yaml"), "--runtime-dir", w.runDir())
}

// egressd plan prints the ruleset and how the kernel differs from it: no
// table, then nothing against a running daemon, then an element deleted
// from the kernel behind the daemon's back. It changes nothing: the
// deleted element is still missing after it ran.
func TestPlanShowsTheKernelDifference(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	code, out, errs := w.plan()
	if code != 0 || !strings.Contains(out, "table inet egressd {") || !strings.Contains(out, "the kernel has no table") {
		t.Fatalf("no table: exit %d\n%s%s", code, out, errs)
	}
	if !strings.Contains(out, fmt.Sprintf("%d . tcp . 192.0.2.10 . 443", uidA)) || !strings.Contains(out, fmt.Sprintf("%d . tcp . 2001:db8::20 . 443", uidB)) {
		t.Errorf("the plan lacks the allowlists' elements:\n%s", out)
	}

	w.unowned = true // an owned table refuses the deletion below
	w.start()
	code, out, errs = w.plan()
	if code != 0 || !strings.Contains(out, "# none: the kernel holds this ruleset") {
		t.Fatalf("against the running daemon: exit %d\n%s%s", code, out, errs)
	}

	// Stopped, so that it does not repair the kernel before plan reads it.
	w.daemon.Process.Signal(syscall.SIGSTOP)       //nolint:errcheck
	defer w.daemon.Process.Signal(syscall.SIGCONT) //nolint:errcheck
	var removed drift
	for _, d := range w.drifts() {
		if d.name == "element removed" {
			removed = d
		}
	}
	if err := removed.do(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // the second run shows that the first changed nothing
		code, out, errs = w.plan()
		diff := out[strings.Index(out, "# difference with the kernel:"):]
		if code != 0 || !strings.Contains(diff, "add element inet egressd allow4 {") || strings.Contains(diff, "# none") {
			t.Fatalf("element deleted (run %d): exit %d\n%s%s", i+1, code, diff, errs)
		}
		t.Logf("plan's difference, an element deleted:\n%s", diff)
	}
}

// Without CAP_NET_ADMIN plan prints the plan, says that the difference
// needs the capability, and exits 0.
func TestPlanNotRoot(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	cmd := exec.Command(egressd, "plan", "--config", filepath.Join(w.dir, "egressd.yaml"), "--runtime-dir", w.runDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uidNone, Gid: uidNone}}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := w.ns.Start(cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil || !strings.Contains(out.String(), "table inet egressd {") || !strings.Contains(errb.String(), "CAP_NET_ADMIN") {
		t.Fatalf("plan as an unprivileged user: %v\n%s%s", err, out.String(), errb.String())
	}
}
