package metrics

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
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
	ln, err := Listen("unix:"+path, 0o660, gid)
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

	// Not a socket: left alone.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep"), 0o644) //nolint:errcheck
	if _, err := Listen("unix:"+file, 0o600, -1); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("a regular file in the way: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Error("the regular file was replaced")
	}
	// A directory other users may write: someone could swap the socket.
	open := filepath.Join(dir, "open")
	os.Mkdir(open, 0o777)  //nolint:errcheck
	os.Chmod(open, 0o1777) //nolint:errcheck
	if _, err := Listen("unix:"+filepath.Join(open, "m.sock"), 0o600, -1); err == nil {
		t.Error("a socket in a world-writable directory was accepted")
	}
}
