package state

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// Write then Read gives the document back, plan included.
func TestWriteRead(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := &State{Version: 1, PID: os.Getpid(), Started: now, Updated: now, Generation: 3, ConfigFile: "/etc/egressd/egressd.yaml",
		ConfigHash: Hash(map[string]int{"a": 1}), Plan: FromPlan(samplePlan()), Users: map[string]uint32{"billing": 1001},
		Names: map[string]Name{"api.example.test": {Addrs: []string{"192.0.2.10"}, LastOK: now}}, MissingUser: map[string]string{}}
	if err := Write(dir, s); err != nil {
		t.Fatal(err)
	}
	got, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Fatalf("read back:\n%+v\nwant\n%+v", got, s)
	}
	if !got.Alive() {
		t.Error("this process is not alive")
	}
	if (&State{PID: 0}).Alive() {
		t.Error("pid 0 alive")
	}
}

// A state file others could write is refused; so is an unknown version.
func TestReadRefuses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	if err := Write(dir, &State{Version: 1}); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, File), 0o666); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(dir); !errors.Is(err, ErrUntrusted) {
		t.Errorf("a world-writable state file: %v", err)
	}
	if err := Write(dir, &State{Version: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(dir); err == nil {
		t.Error("version 2 read")
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(dir); !errors.Is(err, ErrUntrusted) {
		t.Errorf("a world-writable directory: %v", err)
	}
}

// A state directory reached through a symlink (DynamicUser= makes
// /var/lib/egressd one) is read: its target is what is judged.
func TestReadJSONThroughSymlinkedDir(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "private", "egressd")
	if err := os.MkdirAll(real, 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "egressd")
	if err := os.Symlink("private/egressd", link); err != nil {
		t.Fatal(err)
	}
	if err := WriteJSON(link, "x.json", 0o600, map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	var got map[string]int
	if err := ReadJSON(link, "x.json", &got); err != nil || got["a"] != 1 {
		t.Fatalf("read through the link: %v %v", got, err)
	}
}
