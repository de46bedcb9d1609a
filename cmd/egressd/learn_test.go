package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/state"
)

// learn names the cause it detects (issue 25: with the daemon on another
// runtime directory it advised mode: audit).
func TestLearnNamesTheCause(t *testing.T) {
	dir, err := config.TrustedTempDir("egressd-learn-")
	if err != nil {
		t.Skipf("a trusted directory under /run: %v", err)
	}
	defer os.RemoveAll(dir)
	if err := os.MkdirAll(filepath.Join(dir, "allow.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	main := filepath.Join(dir, "egressd.yaml")
	for p, body := range map[string]string{main: "", filepath.Join(dir, "allow.d/web.yaml"): "user: 64101\nallow: [192.0.2.1:443]\n"} {
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rt, sd := filepath.Join(dir, "run"), filepath.Join(dir, "state")
	learnErr := func() string {
		var out, errb bytes.Buffer
		if code := cmdLearn([]string{"web", "--config", main, "--runtime-dir", rt, "--state-dir", sd}, &out, &errb); code != 2 {
			t.Errorf("learn with nothing to learn from: exit %d", code)
		}
		return errb.String()
	}
	if e := learnErr(); !strings.Contains(e, "no egressd daemon runs with runtime directory "+rt) || strings.Contains(e, "mode: audit") {
		t.Errorf("no daemon at the runtime directory:\n%s", e)
	}
	release, err := state.Lock(rt) // a daemon runs there
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if e := learnErr(); !strings.Contains(e, "has observed nothing yet") || !strings.Contains(e, "put allowlist web in mode: audit") {
		t.Errorf("a daemon that observed nothing:\n%s", e)
	}
	if err := os.WriteFile(main, []byte("deny_log: {mode: kernel}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if e := learnErr(); !strings.Contains(e, "deny_log.mode is kernel") {
		t.Errorf("deny_log.mode: kernel:\n%s", e)
	}
}
