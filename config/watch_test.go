package config

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

func TestWatcher(t *testing.T) {
	dir := t.TempDir()
	allow := filepath.Join(dir, "allow.d")
	if err := os.Mkdir(allow, 0o755); err != nil {
		t.Fatal(err)
	}
	main := filepath.Join(dir, "egressd.yaml")
	w, err := NewWatcher(main, allow, 50*time.Millisecond, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)

	expect := func(what string) {
		t.Helper()
		select {
		case <-w.C:
		case <-time.After(3 * time.Second):
			t.Fatalf("%s: no change notice", what)
		}
	}
	quiet := func(what string) {
		t.Helper()
		select {
		case <-w.C:
			t.Fatalf("%s: unexpected change notice", what)
		case <-time.After(300 * time.Millisecond):
		}
	}
	write := func(p, body string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	write(filepath.Join(allow, "a.yaml"), "user: a\n")
	expect("new allowlist")

	// Editor save: write a temporary file, rename it over the original.
	write(filepath.Join(allow, ".a.yaml.swp"), "user: b\n")
	if err := os.Rename(filepath.Join(allow, ".a.yaml.swp"), filepath.Join(allow, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	expect("rename over")

	write(main, "min_ttl: 1s\n")
	expect("main file")

	// Unrelated files next to the main file do not wake anyone.
	write(filepath.Join(dir, "unrelated.txt"), "x")
	quiet("unrelated file")

	// A burst of 50 writes is coalesced into one or two notices, not fifty.
	for i := 0; i < 50; i++ {
		write(filepath.Join(allow, "a.yaml"), "user: a\n")
		time.Sleep(5 * time.Millisecond)
	}
	expect("burst")
	n := 0
	for done := false; !done; {
		select {
		case <-w.C:
			n++
		case <-time.After(400 * time.Millisecond):
			done = true
		}
	}
	if n > 2 {
		t.Fatalf("burst produced %d extra notices", n)
	}

	// The allow directory deleted and recreated is watched again.
	if err := os.RemoveAll(allow); err != nil {
		t.Fatal(err)
	}
	expect("directory deleted")
	if err := os.Mkdir(allow, 0o755); err != nil {
		t.Fatal(err)
	}
	expect("directory recreated")
	time.Sleep(100 * time.Millisecond)
	write(filepath.Join(allow, "b.yaml"), "user: b\n")
	expect("file in the recreated directory")
}
