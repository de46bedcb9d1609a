//go:build linux

package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// LockFile is the daemon's lock inside the runtime directory.
const LockFile = "egressd.lock"

// ErrLocked means another egressd holds the lock.
var ErrLocked = errors.New("another egressd is running")

// Lock takes the runtime directory's lock so that two daemons (or a daemon
// and run --once) never fight over the table. The lock is released when the
// process exits, however it exits; release drops it earlier.
func Lock(dir string) (release func(), err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	p := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(p)
		f.Close()
		holder := strings.TrimSpace(string(b))
		if _, perr := strconv.Atoi(holder); perr != nil {
			holder = "unknown"
		}
		return nil, fmt.Errorf("%w (pid %s holds %s)", ErrLocked, holder, p)
	}
	f.Truncate(0)                                        //nolint:errcheck
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0) //nolint:errcheck
	return func() { f.Close() }, nil
}
