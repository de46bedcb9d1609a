package metrics

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/egressd/egressd/config"
)

// Listen opens the metrics endpoint: a TCP address (every local user can
// connect), or unix:PATH, a socket with the given mode and group (gid; -1
// keeps the daemon's), so that the operator chooses who may read which
// services are denied, and when. A socket left at PATH by an earlier run is
// replaced; anything else there is an error, and so is a directory on the
// way that another user could write (trust).
func Listen(addr string, mode os.FileMode, gid int, trust config.Trust) (net.Listener, error) {
	path, unix := strings.CutPrefix(addr, "unix:")
	if !unix {
		return net.Listen("tcp", addr)
	}
	// Whoever may write the directory, or one above it, could put their
	// own socket in place of egressd's: every directory on the way must be
	// root's or egressd's alone (trust: the configuration's rules).
	dir := filepath.Dir(path)
	if err := trust.CheckDir(dir); err != nil {
		return nil, fmt.Errorf("metrics socket %s: %w; every directory on the way to it must be writable by root or egressd alone (for example /run/egressd)", path, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket; not replacing it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	}
	// Bound in a directory of its own (0700) and given its group and mode
	// there, then renamed into place: never connectable with the umask's
	// mode, whatever the umask.
	tmp, err := os.MkdirTemp(dir, ".metrics-")
	if err != nil {
		return nil, fmt.Errorf("metrics socket: %w", err)
	}
	defer os.RemoveAll(tmp) //nolint:errcheck // empty once the socket is renamed
	bound := filepath.Join(tmp, "sock")
	ln, err := net.Listen("unix", bound)
	if err != nil {
		return nil, err
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		ln.Close()
		return nil, err
	}
	if err := os.Lchown(bound, -1, gid); err != nil {
		return fail(fmt.Errorf("metrics socket: group %d: %w (under the unit, egressd must be a member of the group: SupplementaryGroups=)", gid, err))
	}
	if err := os.Chmod(bound, mode); err != nil {
		return fail(fmt.Errorf("metrics socket: %w", err))
	}
	if err := os.Rename(bound, path); err != nil {
		return fail(fmt.Errorf("metrics socket: %w", err))
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(fmt.Errorf("metrics socket: %w", err))
	}
	return &unixListener{Listener: ln, path: path, fi: fi}, nil
}

// unixListener removes its socket when it closes (a moved metrics_listen,
// a stop): a socket left behind refuses scrapers' connections as if egressd
// were down. Only the socket it bound: whatever took the path since (a new
// listener on the same path) stays.
type unixListener struct {
	net.Listener
	path string
	fi   os.FileInfo
}

func (l *unixListener) Close() error {
	err := l.Listener.Close()
	if fi, e := os.Lstat(l.path); e == nil && os.SameFile(fi, l.fi) {
		os.Remove(l.path) //nolint:errcheck // gone already is fine
	}
	return err
}
