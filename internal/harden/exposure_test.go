package harden

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// stubAnalyze puts a systemd-analyze on PATH that prints out and exits
// with code, and records the unit file it was given (drop-ins merged).
func stubAnalyze(t *testing.T, out string, code int) (seen string) {
	t.Helper()
	bin := t.TempDir()
	seen = filepath.Join(t.TempDir(), "seen")
	script := "#!/bin/sh\n[ \"$1 $2 $3\" = 'security --offline=yes --no-pager' ] || exit 9\n/bin/cat \"$4\" > " + seen + "\nprintf '%s\\n' '" + out + "'\nexit " + strconv.Itoa(code) + "\n"
	if err := os.WriteFile(filepath.Join(bin, "systemd-analyze"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin)
	return seen
}

// The exposure score is systemd-analyze's, of the unit with its drop-ins
// merged into one file (offline mode reads only the file it is given).
func TestExposure(t *testing.T) {
	u := unitFrom(t, "[Service]\nExecStart=/usr/bin/true\n")
	drop := u.Files[0] + ".d"
	if err := os.MkdirAll(drop, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(drop, "egressd.conf"), []byte("[Service]\nProtectSystem=strict\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	u, err := LoadUnit(u.Files[0])
	if err != nil {
		t.Fatal(err)
	}
	seen := stubAnalyze(t, "→ Overall exposure level for svc.service: 4.2 OK :-)", 0)
	score, note := exposure(u)
	if score != 4.2 || note != "" {
		t.Errorf("exposure = %v %q, want 4.2", score, note)
	}
	b, _ := os.ReadFile(seen)
	if !strings.Contains(string(b), "ExecStart=/usr/bin/true") || !strings.Contains(string(b), "ProtectSystem=strict") {
		t.Errorf("systemd-analyze was given\n%s\nwant the unit and its drop-in", b)
	}

	stubAnalyze(t, "Failed to load unit: bad setting", 1)
	if score, note := exposure(u); score != -1 || !strings.Contains(note, "Failed to load unit: bad setting") {
		t.Errorf("a failing systemd-analyze: %v %q, want -1 and its last line", score, note)
	}

	t.Setenv("PATH", t.TempDir())
	if score, note := exposure(u); score != -1 || note != "systemd-analyze not found" {
		t.Errorf("no systemd-analyze: %v %q", score, note)
	}
}
