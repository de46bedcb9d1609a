//go:build linux

package sdnotify

import (
	"testing"
)

// Open reads $NOTIFY_SOCKET; after Close, Send is an error (never a
// silent success) and Close again is harmless; a nil notifier closes too.
func TestOpenFromEnvironmentAndClose(t *testing.T) {
	m, path := manager(t, "")
	t.Setenv("NOTIFY_SOCKET", path)
	n, err := Open()
	if err != nil || n == nil {
		t.Fatalf("Open with NOTIFY_SOCKET=%s: %v, %v", path, n, err)
	}
	if err := n.Send("STATUS=testing"); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, m); got != "STATUS=testing" {
		t.Errorf("got %q", got)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Send("WATCHDOG=1"); err == nil {
		t.Error("Send after Close reported success")
	}
	if err := n.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	var none *Notifier
	if err := none.Close(); err != nil {
		t.Errorf("nil Close: %v", err)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if n, err := Open(); n != nil || err != nil {
		t.Errorf("Open without NOTIFY_SOCKET: %v, %v", n, err)
	}
}
