//go:build linux

package state

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	release, err := Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, LockFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("lock file: %v %v, want mode 0600", st.Mode(), err)
	}
	if pid, held, err := Holder(dir); err != nil || !held || pid != os.Getpid() {
		t.Errorf("Holder while locked: pid %d held %v err %v", pid, held, err)
	}
	if _, err := Lock(dir); !errors.Is(err, ErrLocked) {
		t.Errorf("second Lock: %v, want ErrLocked", err)
	}
	release()
	if _, held, err := Holder(dir); err != nil || held {
		t.Errorf("Holder after release: held %v err %v", held, err)
	}

	// An old 0644 lock file is replaced by a fresh 0600 one.
	os.Chmod(filepath.Join(dir, LockFile), 0o644) //nolint:errcheck
	release, err = Lock(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(dir, LockFile)); st.Mode().Perm() != 0o600 {
		t.Errorf("old lock file kept with mode %v", st.Mode())
	}
	release()

	// A symlink in its place is refused, not followed.
	os.Remove(filepath.Join(dir, LockFile))
	os.Symlink("/etc/passwd", filepath.Join(dir, LockFile)) //nolint:errcheck
	if _, err := Lock(dir); !errors.Is(err, ErrUntrusted) {
		t.Errorf("symlinked lock: %v, want ErrUntrusted", err)
	}
	os.Remove(filepath.Join(dir, LockFile))

	// A runtime directory others can write is refused.
	os.Chmod(dir, 0o777) //nolint:errcheck
	if _, err := Lock(dir); !errors.Is(err, ErrUntrusted) {
		t.Errorf("world-writable runtime dir: %v, want ErrUntrusted", err)
	}
}

// A runtime directory the system shares is refused with advice that leaves
// it alone; egressd's own directory gets the direct fix.
func TestSafeDirFix(t *testing.T) {
	if st, err := os.Stat("/tmp"); err != nil || st.Mode()&os.ModeSticky == 0 || st.Mode()&0o002 == 0 {
		t.Skip("/tmp is not sticky and world-writable here")
	}
	err := SafeDir("/tmp", false)
	if err == nil || strings.Contains(err.Error(), "chmod") || !strings.Contains(err.Error(), "--runtime-dir") {
		t.Errorf("SafeDir(/tmp): %v, want a refusal that suggests another runtime directory and no chmod", err)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := SafeDir(dir, false); err == nil || !strings.Contains(err.Error(), "chmod go-w "+dir) {
		t.Errorf("SafeDir(%s, mode 0777): %v, want the chmod fix", dir, err)
	}
}
