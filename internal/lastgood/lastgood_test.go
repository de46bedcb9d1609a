package lastgood

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/egressd/egressd/config"
)

func write(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSaveLoad(t *testing.T) {
	etc, state := t.TempDir(), t.TempDir()
	main := filepath.Join(etc, "egressd.yaml")
	write(t, main, "resolvers: [\"127.0.0.1:53\"]\nallow_dir: "+filepath.Join(etc, "lists")+"\n")
	write(t, filepath.Join(etc, "lists/billing.yaml"), "user: \"1001\"\nallow: [192.0.2.1:443]\n")
	cfg, err := config.LoadTrusted(main, true, config.Trust{Above: etc})
	if err != nil {
		t.Fatal(err)
	}
	// Dir is a symlink, as DynamicUser= makes /var/lib/egressd.
	if err := os.Mkdir(filepath.Join(state, "private"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("private", filepath.Join(state, "egressd")); err != nil {
		t.Fatal(err)
	}
	state = filepath.Join(state, "egressd")
	s := &Store{Dir: state, Trust: config.Trust{Above: state}}
	if _, err := s.Load(); err == nil {
		t.Fatal("Load with nothing saved succeeded: the daemon would start on nothing")
	}
	if err := s.Save(cfg); err != nil {
		t.Fatal(err)
	}
	// The live files break: the snapshot is what counts, not allow_dir.
	write(t, filepath.Join(etc, "lists/billing.yaml"), "user: \"1001\"\nallow: [ this is not yaml\n")
	if _, err := config.LoadTrusted(main, true, config.Trust{Above: etc}); err == nil {
		t.Fatal("the broken file loads")
	}
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Allowlists) != 1 || got.Allowlists[0].Name != "billing" || len(got.Allowlists[0].Entries) != 1 || !s.Owns(got.File) {
		t.Fatalf("last good: %+v", got)
	}
	if err := s.Save(got); err != nil { // a configuration from the store is not saved again
		t.Fatal(err)
	}
	// Edited (invalid) between load and save: not saved; the previous stays.
	if err := s.Save(cfg); err == nil {
		t.Error("saved files that no longer load")
	}
	if again, err := s.Load(); err != nil || len(again.Allowlists) != 1 {
		t.Errorf("previous snapshot lost: %v %v", again, err)
	}
	snaps, _ := filepath.Glob(filepath.Join(state, "snap-*"))
	if len(snaps) != 1 {
		t.Errorf("%d snapshots kept, want 1: %v", len(snaps), snaps)
	}
}

// A snapshot keeps the shared lists its allowlists include: the fallback
// enforces the same entries, not fewer.
func TestSaveLoadWithIncludes(t *testing.T) {
	etc, state := t.TempDir(), t.TempDir()
	main := filepath.Join(etc, "egressd.yaml")
	write(t, main, "resolvers: [\"127.0.0.1:53\"]\n")
	write(t, filepath.Join(etc, "allow.d/billing.yaml"), "user: \"1001\"\ninclude: [ntp]\nallow: [192.0.2.1:443]\n")
	write(t, filepath.Join(etc, "lists/ntp.yaml"), "allow: [\"192.0.2.123:123/udp\"]\n")
	cfg, err := config.LoadTrusted(main, true, config.Trust{Above: etc})
	if err != nil {
		t.Fatal(err)
	}
	s := &Store{Dir: state, Trust: config.Trust{Above: state}}
	if err := s.Save(cfg); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(etc, "lists")) //nolint:errcheck // the live list is gone
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Allowlists) != 1 || len(got.Allowlists[0].Entries) != 2 {
		t.Fatalf("last good with an include: %+v", got.Allowlists[0])
	}
}
