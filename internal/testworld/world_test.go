//go:build linux

package testworld

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/internal/systest"
)

// A world serves inside its namespace only, logs what its daemon writes in
// order, and leaves nothing behind when closed.
func TestWorld(t *testing.T) {
	systest.Require(t)
	w, err := New("192.0.2.10")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if fi, err := os.Stat(w.Dir); err != nil || !strings.HasPrefix(w.Dir, "/run/") || fi.Mode().Perm() != 0o755 {
		t.Fatalf("config dir %s: %v %v, want a 0755 directory under /run", w.Dir, fi, err)
	}
	if err := w.ServeTCP("192.0.2.10:443"); err != nil {
		t.Fatal(err)
	}
	if err := w.DialAs(65534, "tcp", "192.0.2.10:443", time.Second); err != nil {
		t.Errorf("dial a served address: %v", err)
	}
	if err := w.DialAs(65534, "tcp", "192.0.2.10:444", time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial an unserved port: %v, want connection refused", err)
	}
	if code, err := w.RunAs(65534, exec.Command("sh", "-c", "exit $(id -u | cut -c1-2)")); err != nil || code != 65 {
		t.Errorf("RunAs: exit %d, %v; want 65 (the uid's first digits)", code, err)
	}
	if err := w.Write("allow.d/a.yaml", "x"); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(w.Dir, "allow.d/a.yaml")); err != nil || string(b) != "x" {
		t.Errorf("Write: %q %v", b, err)
	}

	var echoed []string
	d, err := w.Start(exec.Command("sh", "-c", `echo '{"event":"started"}' >&2; echo not-json >&2; echo '{"event":"deny"}' >&2; exec sleep 60`),
		func(l string) { echoed = append(echoed, l) }, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WaitEvent(event.Deny, 0, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	all := w.EventsSince("", 0)
	if len(all) != 3 || all[1]["event"] != "unparsed" || all[1]["line"] != "not-json" {
		t.Errorf("events %v, want started, unparsed not-json, deny", all)
	}
	if _, err := w.WaitEvents(event.Deny, 0, 2, 100*time.Millisecond); err == nil || !strings.Contains(err.Error(), "not-json") {
		t.Errorf("WaitEvents for more than were logged: %v, want an error with the log", err)
	}
	if len(echoed) != 3 {
		t.Errorf("echoed %q", echoed)
	}
	w.Close()
	select {
	case <-d.Done():
	default:
		t.Error("Close left the daemon running")
	}
	if _, err := os.Stat(w.Dir); !os.IsNotExist(err) {
		t.Errorf("Close left %s: %v", w.Dir, err)
	}
}
