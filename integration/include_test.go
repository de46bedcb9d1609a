//go:build linux

package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/event"
)

// An allowlist's include: of a shared list is enforced with the allowlist's
// own settings; a list edit applies live; a bad list is rejected at its own
// position and the last good configuration stays; an unknown list is named
// at the including allowlist's line.
func TestSharedListInclude(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.write("lists/updates.yaml", "# shared by billing and web\nallow:\n  - 198.51.100.20:443\n")
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\ninclude: [updates]\nallow:\n  - api.example.test:443\n", uidA))
	w.write("allow.d/web.yaml", fmt.Sprintf("user: %d\ninclude: [updates]\nallow:\n  - 192.0.2.12:443\ndns: none\n", uidB))
	w.start()

	w.expect(uidA, "tcp", "198.51.100.20:443", okConnected)
	w.expect(uidB, "tcp", "198.51.100.20:443", okConnected)
	w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)
	w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)
	w.expect(uidB, "udp", "192.0.2.53:53", okRefused) // web's dns: none holds with the include

	// A list edit applies to every allowlist that includes it.
	w.write("lists/updates.yaml", "allow:\n  - 198.51.100.20:443\n  - 198.51.100.20:4444\n")
	w.eventually(uidA, "tcp", "198.51.100.20:4444", okConnected, 3*time.Second)
	w.eventually(uidB, "tcp", "198.51.100.20:4444", okConnected, 3*time.Second)

	// A bad list: rejected at its own line and column; nothing changes.
	p := w.probe(uidA, "192.0.2.11:443")
	m := w.mark()
	w.write("lists/updates.yaml", "allow:\n  - 198.51.100.20:443\n  - 192.0.2.11:443\n  - 198.51.100.7/24:80\n")
	ev, err := w.waitEvent(event.ConfigRejected, m, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(fmt.Sprint(ev["file"]), "lists/updates.yaml") || ev["line"] != float64(4) || ev["column"] != float64(5) ||
		!strings.Contains(fmt.Sprint(ev["error"]), "host bits set") {
		t.Errorf("config_rejected event = %v", ev)
	}
	time.Sleep(500 * time.Millisecond)
	w.expect(uidA, "tcp", "198.51.100.20:4444", okConnected) // the last good list stays
	w.expect(uidB, "tcp", "198.51.100.20:4444", okConnected)
	if tries, leaks := p.finish(); leaks > 0 || tries == 0 {
		t.Errorf("an address of the rejected list was reachable %d times in %d tries", leaks, tries)
	}

	// An unknown list: named at the include line of the allowlist.
	w.write("lists/updates.yaml", "allow:\n  - 198.51.100.20:443\n  - 198.51.100.20:4444\n")
	m = w.mark()
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\ninclude:\n  - nope\nallow:\n  - api.example.test:443\n", uidA))
	ev, err = w.waitEvent(event.ConfigRejected, m, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(fmt.Sprint(ev["file"]), "allow.d/billing.yaml") || ev["line"] != float64(3) || !strings.Contains(fmt.Sprint(ev["error"]), `no shared list "nope"`) {
		t.Errorf("config_rejected event = %v", ev)
	}
	w.expect(uidA, "tcp", "198.51.100.20:4444", okConnected)
}
