package lastgood

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egressd/egressd/config"
)

// Without a main file (every key defaulted) the snapshot holds an empty
// one and loads back with the same allowlists; an allowlist deleted between
// load and save is an error, and the previous snapshot stays current.
func TestSaveWithoutMainFileAndVanishedAllowlist(t *testing.T) {
	etc, state := t.TempDir(), t.TempDir()
	main := filepath.Join(etc, "egressd.yaml")
	write(t, filepath.Join(etc, "allow.d/billing.yaml"), "user: \"1001\"\nallow: [192.0.2.1:443]\n")
	config.ResolvConf = filepath.Join(etc, "resolv.conf")
	defer func() { config.ResolvConf = "/etc/resolv.conf" }()
	write(t, config.ResolvConf, "nameserver 192.0.2.53\n")
	cfg, err := config.LoadTrusted(main, false, config.Trust{Above: etc})
	if err != nil {
		t.Fatal(err)
	}
	s := &Store{Dir: state, Trust: config.Trust{Above: state}}
	if err := s.Save(cfg); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Allowlists) != 1 || got.Allowlists[0].Name != "billing" {
		t.Fatalf("last good without a main file: %+v", got.Allowlists)
	}
	if b, err := os.ReadFile(got.File); err != nil || len(b) != 0 {
		t.Errorf("saved main file %q, %v; want an empty one", b, err)
	}

	if err := os.Remove(filepath.Join(etc, "allow.d/billing.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(cfg); err == nil || !strings.Contains(err.Error(), "save the last good configuration") {
		t.Errorf("saving a configuration whose allowlist is gone: %v", err)
	}
	if again, err := s.Load(); err != nil || len(again.Allowlists) != 1 {
		t.Errorf("previous snapshot lost: %v %v", again, err)
	}
	if snaps, _ := filepath.Glob(filepath.Join(state, "snap-*")); len(snaps) != 1 {
		t.Errorf("%d snapshots kept, want 1: %v", len(snaps), snaps)
	}
}
