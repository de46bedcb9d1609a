package state

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// state_mode and state_group: the file gets its mode and group before it
// takes its name.
func TestWriteMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	gid := os.Getgid()
	if err := WriteMode(dir, &State{Version: 1, PID: 7}, 0o640, gid); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, File))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o640 || int(st.Sys().(*syscall.Stat_t).Gid) != gid {
		t.Errorf("mode %04o gid %d, want 0640 gid %d", st.Mode().Perm(), st.Sys().(*syscall.Stat_t).Gid, gid)
	}
	got, err := Read(dir)
	if err != nil || got.PID != 7 {
		t.Fatalf("read back %+v, %v", got, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
}

// A group this process may not give a file is an error that says how to
// fix the unit, and leaves no file behind.
func TestWriteModeForeignGroup(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root may give a file any group")
	}
	dir := t.TempDir()
	err := WriteMode(dir, &State{Version: 1}, 0o640, 0)
	if err == nil || !strings.Contains(err.Error(), "SupplementaryGroups=") {
		t.Fatalf("chgrp to gid 0 as uid %d: %v, want an error naming SupplementaryGroups=", os.Geteuid(), err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("files left: %v", ents)
	}
}

// A value that cannot be encoded is an error, and the old file stays.
func TestWriteJSONUnencodable(t *testing.T) {
	dir := t.TempDir()
	if err := WriteJSON(dir, "x.json", 0o600, map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	if err := WriteJSON(dir, "x.json", 0o600, func() {}); err == nil {
		t.Error("a func was encoded")
	}
	var back map[string]int
	if err := ReadJSON(dir, "x.json", &back); err != nil || back["a"] != 1 {
		t.Errorf("old file after a failed write: %v, %v", back, err)
	}
}

// Running: the lock is held and names the state's pid (this process plays
// the daemon). A state whose pid is another's, or a directory nobody
// locks, is a dead daemon's.
func TestRunning(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	s := &State{Version: 1, PID: os.Getpid()}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if s.Running(dir) {
		t.Error("running without a lock")
	}
	release, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Running(dir) {
		t.Error("not running while this process holds the lock")
	}
	if other := (&State{Version: 1, PID: os.Getpid() + 1}); other.Running(dir) {
		t.Error("a state of another pid counts as running")
	}
	pid, held, err := Holder(dir)
	if err != nil || !held || pid != os.Getpid() {
		t.Errorf("Holder = %d, %v, %v", pid, held, err)
	}
	release()
	if s.Running(dir) {
		t.Error("running after the lock was released")
	}
}

// A symlink or another file type where the lock belongs is refused, never
// followed or used.
func TestLockRefusesStrangeFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.Symlink(target, filepath.Join(dir, LockFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := Lock(dir); !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("lock through a symlink: %v", err)
	}
	if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the symlink's target was created: %v", err)
	}
	os.Remove(filepath.Join(dir, LockFile)) //nolint:errcheck
	if err := os.Mkdir(filepath.Join(dir, LockFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Lock(dir); err == nil {
		t.Error("a directory was taken for the lock file")
	}
}

// A runtime directory that is a symlink (planted where egressd's should
// be) or missing (without create) is refused; create makes it (0755).
func TestSafeDirRefusesSymlinkAndMissing(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "run")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if err := SafeDir(link, false); !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "is not a directory (a symlink?)") {
		t.Errorf("SafeDir(symlink): %v", err)
	}
	if err := SafeDir(filepath.Join(base, "missing"), false); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("SafeDir(missing): %v", err)
	}
	made := filepath.Join(base, "made", "run")
	if err := SafeDir(made, true); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(made); err != nil || !st.IsDir() || st.Mode().Perm()&0o022 != 0 {
		t.Errorf("created %v, %v; want a directory only its owner can write", st, err)
	}
}

// A damaged state file is an error naming it, not an empty state.
func TestReadDamaged(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, File), []byte("{\"version\": 1,"), 0o644); err != nil {
		t.Fatal(err)
	}
	if s, err := Read(dir); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, File)) {
		t.Errorf("Read(damaged) = %+v, %v", s, err)
	}
	if _, err := Read(t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Read(no state file): %v, want not-exist", err)
	}
}
