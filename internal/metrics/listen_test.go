package metrics

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/egressd/egressd/config"
)

func TestListenUnix(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "metrics.sock")
	// A socket left by an earlier run that did not close it.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	gid := os.Getegid() // a group this process may give the socket
	ln, err := Listen("unix:"+path, 0o660, gid, config.Trust{Above: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 || int(st.Gid) != gid {
		t.Errorf("socket %v gid %d (want srw-rw---- gid %d)", fi.Mode(), st.Gid, gid)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	// A second listener on the same path (metrics_listen reloaded) takes
	// it; the first one's close leaves the second's socket alone, and the
	// second's close removes it.
	ln2, err := Listen("unix:"+path, 0o660, gid, config.Trust{Above: dir})
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if c, err := net.Dial("unix", path); err != nil {
		t.Errorf("the first listener's close removed the second's socket: %v", err)
	} else {
		c.Close()
	}
	ln2.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("the socket is left after its listener closed: %v", err)
	}

	// Not a socket: left alone.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep"), 0o644) //nolint:errcheck
	if _, err := Listen("unix:"+file, 0o600, -1, config.Trust{Above: dir}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("a regular file in the way: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Error("the regular file was replaced")
	}
	// A directory other users may write: someone could swap the socket.
	open := filepath.Join(dir, "open")
	os.Mkdir(open, 0o777)  //nolint:errcheck
	os.Chmod(open, 0o1777) //nolint:errcheck
	if _, err := Listen("unix:"+filepath.Join(open, "m.sock"), 0o600, -1, config.Trust{Above: dir}); err == nil {
		t.Error("a socket in a world-writable directory was accepted")
	}
}

// Red team of issue 27: another local user (here nobody) has put something
// of their own where the metrics socket goes, before egressd starts, to be
// the socket scrapers connect to or to make egressd chmod their file.
// Every case is refused and leaves their object alone.
func TestListenUnixPathTakenByAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (files owned by another user)")
	}
	const nobody = 65534
	base := t.TempDir()
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	mine := func(p string) {
		if err := os.Lchown(p, nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
	// Their own directory, and a socket of theirs in it.
	theirs := filepath.Join(base, "theirs")
	os.Mkdir(theirs, 0o755) //nolint:errcheck
	mine(theirs)
	theirSock := filepath.Join(theirs, "fake.sock")
	fake, err := net.Listen("unix", theirSock)
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	os.Chmod(theirSock, 0o600) //nolint:errcheck
	mine(theirSock)

	// egressd's directory (root's, 0755), with their objects at the path.
	run := filepath.Join(base, "run")
	os.Mkdir(run, 0o755) //nolint:errcheck
	link := filepath.Join(run, "link.sock")
	os.Symlink(theirSock, link) //nolint:errcheck
	mine(link)
	dir := filepath.Join(run, "dir.sock")
	os.Mkdir(dir, 0o755) //nolint:errcheck
	mine(dir)
	// The socket's directory is a symlink to their directory.
	dirLink := filepath.Join(run, "dirlink")
	os.Symlink(theirs, dirLink) //nolint:errcheck

	// A root-owned directory in one every user may write (no sticky
	// bit): they rename it away and put their own in its place, with their
	// socket at the path scrapers connect to.
	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o777) //nolint:errcheck
	os.Chmod(open, 0o777) //nolint:errcheck
	inOpen := filepath.Join(open, "egressd")
	os.Mkdir(inOpen, 0o755) //nolint:errcheck

	for _, tc := range []struct{ name, path string }{
		{"below a directory every user may write", filepath.Join(inOpen, "metrics.sock")},
		{"in their directory", filepath.Join(theirs, "metrics.sock")},
		{"through a symlink to their directory", filepath.Join(dirLink, "metrics.sock")},
		{"a symlink to their socket", link},
		{"their directory", dir},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := Listen("unix:"+tc.path, 0o666, -1, config.Trust{Above: base})
			if err == nil {
				ln.Close()
				t.Fatalf("Listen(%s) was accepted", tc.path)
			}
			t.Logf("refused: %v", err)
		})
	}
	// Their objects are as they were.
	for _, p := range []string{theirSock, link, dir} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != nobody {
			t.Errorf("%s: now owned by uid %d", p, st.Uid)
		}
	}
	if fi, _ := os.Stat(theirSock); fi == nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("their socket's mode changed: %v", fi)
	}
	if _, err := os.Stat(filepath.Join(theirs, "metrics.sock")); err == nil {
		t.Error("a socket was created in their directory")
	}
}
