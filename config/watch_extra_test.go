package config

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// The hosts file (a file elsewhere) and the lists directory (a directory of
// files) are watched too; an atomic replace of the hosts file is seen.
func TestWatcherHostsAndListsDir(t *testing.T) {
	dir := t.TempDir()
	etc := filepath.Join(dir, "etc")
	lists := filepath.Join(dir, "lists")
	for _, d := range []string{etc, lists, filepath.Join(dir, "allow.d")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	hosts := filepath.Join(etc, "hosts")
	w, err := NewWatcher(filepath.Join(dir, "egressd.yaml"), filepath.Join(dir, "allow.d"), 50*time.Millisecond, zaptest.NewLogger(t), hosts, lists, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)
	expect := func(what string, want bool) {
		t.Helper()
		select {
		case <-w.C:
			if !want {
				t.Fatalf("%s: unexpected change notice", what)
			}
		case <-time.After(map[bool]time.Duration{true: 3 * time.Second, false: 300 * time.Millisecond}[want]):
			if want {
				t.Fatalf("%s: no change notice", what)
			}
		}
	}
	write := func(p string) {
		t.Helper()
		if err := os.WriteFile(p, []byte("x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(lists, "ntp.yaml"))
	expect("a list file", true)
	write(hosts + ".tmp")
	if err := os.Rename(hosts+".tmp", hosts); err != nil {
		t.Fatal(err)
	}
	expect("hosts replaced", true)
	write(filepath.Join(etc, "motd"))
	expect("another file beside the hosts file", false)
}
