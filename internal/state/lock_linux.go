//go:build linux

package state

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/egressd/egressd/internal/syspath"
	"golang.org/x/sys/unix"
)

// LockFile is the daemon's lock inside the runtime directory.
const LockFile = "egressd.lock"

// ErrLocked means another egressd holds the lock.
var ErrLocked = errors.New("another egressd is running")

// Lock takes the runtime directory's lock so that two daemons (or a daemon
// and run --once) never fight over the table. The lock is released when the
// process exits, however it exits; release drops it earlier.
//
// Nobody else may be able to take it: the directory must belong to egressd
// (or root) and be writable by its owner alone, and the lock file is
// 0600, opened without following symlinks. A lock file that belongs to
// another user is refused (fail closed), one that others could open (the
// 0644 of earlier versions) is replaced by a fresh one.
func Lock(dir string) (release func(), err error) {
	if err := SafeDir(dir, true); err != nil {
		return nil, err
	}
	p := filepath.Join(dir, LockFile)
	for range 3 {
		f, err := openLock(p)
		if err != nil {
			return nil, err
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			holder := readPID(f)
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, fmt.Errorf("%w (pid %s holds %s)", ErrLocked, holder, p)
			}
			return nil, fmt.Errorf("lock %s: %w", p, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			f.Close()
			return nil, err
		}
		if st.Mode&0o077 != 0 || st.Nlink == 0 {
			// Others could open it (and may hold an open descriptor already):
			// retire this inode, held, and lock a fresh one in its place.
			if st.Nlink != 0 {
				os.Remove(p) //nolint:errcheck
			}
			f.Close()
			continue
		}
		f.Truncate(0)                                        //nolint:errcheck
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0) //nolint:errcheck
		return func() { f.Close() }, nil
	}
	return nil, fmt.Errorf("%w: %s keeps being replaced", ErrUntrusted, p)
}

// openLock opens (or creates, 0600) the lock file without following a
// symlink, and refuses one that is not a regular file owned by egressd or root.
func openLock(p string) (*os.File, error) {
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0o600)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("%w: %s is a symlink; remove it (egressd creates its lock file itself)", ErrUntrusted, p)
		}
		return nil, &fs.PathError{Op: "open", Path: p, Err: err}
	}
	f := os.NewFile(uintptr(fd), p)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, fmt.Errorf("%w: %s is not a regular file; remove it", ErrUntrusted, p)
	}
	if !trustedOwner(st.Uid) {
		f.Close()
		return nil, fmt.Errorf("%w: %s is owned by %s, not by egressd or root: another user could hold it to keep egressd from starting; remove it (rm %s) after finding out who created it",
			ErrUntrusted, p, owner(st.Uid), p)
	}
	return f, nil
}

func trustedOwner(uid uint32) bool { return uid == 0 || uid == uint32(os.Geteuid()) }

func owner(uid uint32) string {
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		return fmt.Sprintf("%s (uid %d)", u.Username, uid)
	}
	return fmt.Sprintf("uid %d", uid)
}

// SafeDir checks that the runtime directory belongs to egressd (or root)
// and is writable by its owner alone, so that no other user can plant or
// replace the lock or the state file. create makes it (0755) when missing.
func SafeDir(dir string, create bool) error {
	if create {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return &fs.PathError{Op: "lstat", Path: dir, Err: err}
	}
	mode := st.Mode & 0o7777
	if st.Mode&unix.S_IFMT == unix.S_IFDIR && (!trustedOwner(st.Uid) || mode&0o022 != 0) &&
		syspath.Shared(dir, mode&unix.S_ISVTX != 0, st.Uid) {
		// Never suggest changing a directory the system shares (/tmp, /run/user/N).
		return fmt.Errorf("%w: %s is owned by %s, mode %04o: other users can change it; use a runtime directory root alone can write (the default /run/egressd, or --runtime-dir) and leave %s as it is",
			ErrUntrusted, dir, owner(st.Uid), mode, dir)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("%w: %s is not a directory (a symlink?); remove it", ErrUntrusted, dir)
	case !trustedOwner(st.Uid):
		return fmt.Errorf("%w: %s is owned by %s, mode %04o; it must belong to egressd or root: chown root:root %s && chmod 0755 %s",
			ErrUntrusted, dir, owner(st.Uid), mode, dir, dir)
	case mode&0o022 != 0:
		return fmt.Errorf("%w: %s is writable by other users (owner %s, mode %04o): chmod go-w %s",
			ErrUntrusted, dir, owner(st.Uid), mode, dir)
	}
	return nil
}

func readPID(f *os.File) string {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	holder := strings.TrimSpace(string(b[:n]))
	if _, err := strconv.Atoi(holder); err != nil {
		return "unknown"
	}
	return holder
}

// Holder reports whether a daemon holds the runtime directory's lock, and
// its pid (0 when the lock file does not say). It takes nothing: a shared
// lock is tried and dropped at once.
func Holder(dir string) (pid int, held bool, err error) {
	p := filepath.Join(dir, LockFile)
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if errors.Is(err, unix.ENOENT) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, &fs.PathError{Op: "open", Path: p, Err: err}
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	if err := unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			pid, _ := strconv.Atoi(readPID(f))
			return pid, true, nil
		}
		return 0, false, fmt.Errorf("lock %s: %w", p, err)
	}
	return 0, false, nil
}
