//go:build linux

package sdnotify

import (
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// manager is systemd's side of the notify socket.
func manager(t *testing.T, name string) (*net.UnixConn, string) {
	t.Helper()
	path := name
	if name == "" {
		path = filepath.Join(t.TempDir(), "notify")
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, path
}

func receive(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(2 * time.Second)) //nolint:errcheck
	n, err := c.Read(buf)
	if err != nil {
		return "(nothing: " + err.Error() + ")"
	}
	return string(buf[:n])
}

// exhaust fills the descriptor table, as a local user's connection flood
// does to the daemon, until release is called.
func exhaust(t *testing.T) (release func()) {
	t.Helper()
	var fds []int
	release = func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
		fds = nil
	}
	for {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
			return release
		}
		if err != nil {
			release()
			t.Fatal(err)
		}
		if len(fds) > 1<<20 {
			release()
			t.Skip("could not reach the descriptor limit")
		}
		fds = append(fds, fd)
	}
}

// lowLimit lowers this process's descriptor limit for the test, so that
// exhausting it is quick.
func lowLimit(t *testing.T) {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	soft := min(old.Cur, 4096)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: soft, Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_NOFILE, &old) }) //nolint:errcheck
}

// At the descriptor limit the heartbeat still reaches systemd: the socket
// was opened at start. The old path (go-systemd's SdNotify, a socket per
// message) fails there, which is what the control shows.
func TestHeartbeatAtTheDescriptorLimit(t *testing.T) {
	lowLimit(t)
	m, path := manager(t, "")
	n, err := open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	t.Setenv("NOTIFY_SOCKET", path)

	release := exhaust(t)
	sent := n.Send("WATCHDOG=1")
	_, goSystemd := daemon.SdNotify(false, daemon.SdNotifyWatchdog)
	release()

	if sent != nil {
		t.Fatalf("at the descriptor limit: %v", sent)
	}
	if got := receive(t, m); got != "WATCHDOG=1" {
		t.Errorf("systemd received %q, want WATCHDOG=1", got)
	}
	if goSystemd == nil {
		t.Errorf("control: a socket per message worked at the descriptor limit; this test no longer shows the problem")
	}
	// Once descriptors are free again, both work.
	if err := n.Send("STATUS=ok"); err != nil || receive(t, m) != "STATUS=ok" {
		t.Errorf("after the limit: %v", err)
	}
}

func TestAbstractAndUnset(t *testing.T) {
	name := "@egressd-sdnotify-test-" + filepath.Base(t.TempDir())
	m, _ := manager(t, name)
	n, err := open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if err := n.Send("READY=1"); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, m); got != "READY=1" {
		t.Errorf("abstract socket: got %q", got)
	}

	none, err := open("")
	if none != nil || err != nil {
		t.Errorf("unset NOTIFY_SOCKET: %v, %v", none, err)
	}
	if err := none.Send("WATCHDOG=1"); err != nil {
		t.Errorf("nil notifier: %v", err)
	}
	if _, err := open("vsock:2:1234"); err == nil {
		t.Error("an unsupported NOTIFY_SOCKET was accepted")
	}
	// A manager that went away is an error the caller can log, not silence.
	gone, err := open(filepath.Join(t.TempDir(), "gone"))
	if err != nil {
		t.Fatal(err)
	}
	defer gone.Close()
	if err := gone.Send("WATCHDOG=1"); err == nil {
		t.Error("sending to a missing socket reported success")
	}
}
