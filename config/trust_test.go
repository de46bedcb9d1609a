package config

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func acl(ents ...[3]uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range ents {
		b = binary.LittleEndian.AppendUint16(b, uint16(e[0]))
		b = binary.LittleEndian.AppendUint16(b, uint16(e[1]))
		b = binary.LittleEndian.AppendUint32(b, e[2])
	}
	return b
}

func TestACLWriter(t *testing.T) {
	tr := Trust{Owners: []uint32{0, 990}}
	base := [][3]uint32{{aclUserObj, 7, 0}, {aclGroupObj, 5, 0}, {aclOther, 5, 0}}
	cases := []struct {
		name  string
		ents  [][3]uint32
		wants bool
	}{
		{"plain", base, false},
		{"named user with write", append(base, [3]uint32{aclUser, 6, 61001}, [3]uint32{aclMask, 7, 0}), true},
		{"trusted named user", append(base, [3]uint32{aclUser, 6, 990}, [3]uint32{aclMask, 7, 0}), false},
		{"masked named user", append(base, [3]uint32{aclUser, 6, 61001}, [3]uint32{aclMask, 5, 0}), false},
		{"named group with write", append(base, [3]uint32{aclGroup, 2, 100}, [3]uint32{aclMask, 7, 0}), true},
		{"read-only named group", append(base, [3]uint32{aclGroup, 4, 100}, [3]uint32{aclMask, 7, 0}), false},
		{"other write", [][3]uint32{{aclUserObj, 7, 0}, {aclOther, 2, 0}}, true},
	}
	for _, c := range cases {
		if got := tr.aclWriter(acl(c.ents...)) != ""; got != c.wants {
			t.Errorf("%s: writer found = %v, want %v", c.name, got, c.wants)
		}
	}
	if tr.aclWriter([]byte{1, 2}) != "" {
		t.Error("a truncated ACL was read as granting write")
	}
}

func TestCheckOne(t *testing.T) {
	tr := Trust{Owners: []uint32{0}}
	cases := []struct {
		fi     fileInfo
		reason string // "" = trusted
	}{
		{fileInfo{mode: 0o644}, ""},
		{fileInfo{mode: fs.ModeDir | 0o755}, ""},
		{fileInfo{mode: 0o644, uid: 61001}, "owner is neither root nor"},
		{fileInfo{mode: 0o664}, "writable by its group"},
		{fileInfo{mode: 0o646}, "writable by every user"},
		{fileInfo{mode: fs.ModeDir | fs.ModeSticky | 0o777}, "sticky bit does not help"},
		{fileInfo{mode: fs.ModeSymlink | 0o777}, ""},
		{fileInfo{mode: fs.ModeSymlink | 0o777, uid: 61001}, "owner is neither root nor"},
	}
	for _, c := range cases {
		err := tr.checkOne("/x", c.fi, nil)
		var ue *UntrustedError
		switch {
		case c.reason == "" && err != nil:
			t.Errorf("%v: refused: %v", c.fi.mode, err)
		case c.reason != "" && (!errors.As(err, &ue) || !strings.Contains(err.Error(), c.reason) || ue.Fix == ""):
			t.Errorf("%v uid %d: error %v, want one saying %q with a fix", c.fi.mode, c.fi.uid, err, c.reason)
		}
	}
}

// A service must not be able to edit its own allowlist: every path to it
// is checked, through symlinks, up to the trusted top.
func TestLoadRefusesUntrustedPaths(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("egressd.yaml", "resolvers: [192.0.2.53]\n", 0o644)
	write("allow.d/billing.yaml", "user: 1001\nallow: [b.example:443]\n", 0o644)
	main := filepath.Join(dir, "egressd.yaml")
	tr := Trust{Above: dir}
	if _, err := LoadTrusted(main, true, tr); err != nil {
		t.Fatalf("trusted configuration refused: %v", err)
	}
	expectRefused := func(what, path, reason string) {
		t.Helper()
		_, err := LoadTrusted(main, true, tr)
		var ce Errors
		if !errors.As(err, &ce) || len(ce) == 0 || ce[0].Fix == "" || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), reason) {
			t.Errorf("%s: error %v, want a refusal naming %s (%s) with a fix", what, err, path, reason)
		}
	}
	// Group-writable allowlist.
	os.Chmod(filepath.Join(dir, "allow.d/billing.yaml"), 0o664)
	expectRefused("group-writable allowlist", "billing.yaml", "writable by its group")
	os.Chmod(filepath.Join(dir, "allow.d/billing.yaml"), 0o644)
	// World-writable allow directory.
	os.Chmod(filepath.Join(dir, "allow.d"), 0o777)
	expectRefused("world-writable allow dir", "allow.d", "writable by every user")
	os.Chmod(filepath.Join(dir, "allow.d"), 0o755)
	// Sticky, world-writable config directory (like /tmp).
	os.Chmod(dir, 0o777|os.ModeSticky)
	expectRefused("sticky config dir", dir, "sticky")
	os.Chmod(dir, 0o755)
	// A symlink to a file in a directory the service controls.
	write("svc/billing.yaml", "user: 1001\nallow: [0.0.0.0/0:1-65535]\n", 0o644)
	os.Chmod(filepath.Join(dir, "svc"), 0o777)
	os.Remove(filepath.Join(dir, "allow.d/billing.yaml"))
	if err := os.Symlink("../svc/billing.yaml", filepath.Join(dir, "allow.d/billing.yaml")); err != nil {
		t.Fatal(err)
	}
	expectRefused("symlink into an untrusted directory", "svc", "writable by every user")
	os.Chmod(filepath.Join(dir, "svc"), 0o755)
	if _, err := LoadTrusted(main, true, tr); err != nil {
		t.Fatalf("symlink to a trusted file refused: %v", err)
	}
	// Owned by someone else (the owners are injected: no root needed).
	_, err := LoadTrusted(main, true, Trust{Above: dir, Owners: []uint32{uint32(os.Geteuid()) + 1}})
	var ce Errors
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "owner is neither root nor") || !strings.Contains(ce[0].Fix, "chown root:root") {
		t.Errorf("foreign owner: error %v", err)
	}
	// Without Above, the walk reaches the temporary directory's parents.
	if os.TempDir() == "/tmp" {
		if st, err := os.Stat("/tmp"); err == nil && st.Mode()&0o002 != 0 {
			if _, err := LoadTrusted(main, true, Trust{}); err == nil || !strings.Contains(err.Error(), "/tmp") {
				t.Errorf("a configuration under the world-writable /tmp was accepted: %v", err)
			}
		}
	}
}

// A POSIX ACL granting another user write is refused like a mode bit.
func TestLoadRefusesACLWriter(t *testing.T) {
	dir, main, file := billingFixture(t)
	// user::rw- user:61001:rw- group::r-- mask::r-- other::r-- : masked, fine.
	masked := acl([3]uint32{aclUserObj, 6, 0}, [3]uint32{aclUser, 6, 61001}, [3]uint32{aclGroupObj, 4, 0}, [3]uint32{aclMask, 4, 0}, [3]uint32{aclOther, 4, 0})
	if err := unixSetxattr(file, masked); err != nil {
		t.Skipf("no POSIX ACLs here: %v", err)
	}
	if _, err := LoadTrusted(main, true, Trust{Above: dir}); err != nil {
		t.Fatalf("an ACL whose mask removes write was refused: %v", err)
	}
	open := acl([3]uint32{aclUserObj, 6, 0}, [3]uint32{aclUser, 6, 61001}, [3]uint32{aclGroupObj, 4, 0}, [3]uint32{aclMask, 6, 0}, [3]uint32{aclOther, 4, 0})
	if err := unixSetxattr(file, open); err != nil {
		t.Fatal(err)
	}
	// The kernel mirrors the ACL mask in the group mode bits, so the mode
	// check may name it first; either way the file is refused.
	_, err := LoadTrusted(main, true, Trust{Above: dir})
	if err == nil || !strings.Contains(err.Error(), "refused: "+file) {
		t.Fatalf("an ACL granting uid 61001 write: error %v", err)
	}
}

func unixSetxattr(p string, b []byte) error { return unix.Setxattr(p, "system.posix_acl_access", b, 0) }

// Symlink chains (absolute, relative, ConfigMap-style ..data) are followed
// component by component: every directory on the way to the real file is
// checked, and resolve returns the real file.
func TestResolveSymlinkChain(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"real/..2026", "allow.d"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	real := filepath.Join(dir, "real/..2026/billing.yaml")
	os.WriteFile(real, []byte("user: 1\n"), 0o644)                                                             //nolint:errcheck
	os.Symlink("..2026", filepath.Join(dir, "real/..data"))                                                    //nolint:errcheck
	os.Symlink(filepath.Join(dir, "real/..data/../..data/billing.yaml"), filepath.Join(dir, "allow.d/b.yaml")) //nolint:errcheck
	w := Trust{Above: dir}.walker()
	got, fi, err := w.resolve(filepath.Join(dir, "allow.d/b.yaml"))
	if err != nil || got != real || !fi.mode.IsRegular() {
		t.Fatalf("resolve = %q %v %v, want %q", got, fi.mode, err, real)
	}
	os.Chmod(filepath.Join(dir, "real/..2026"), 0o777) //nolint:errcheck
	_, _, err = Trust{Above: dir}.walker().resolve(filepath.Join(dir, "allow.d/b.yaml"))
	if err == nil || !strings.Contains(err.Error(), "..2026") {
		t.Fatalf("a writable directory behind a symlink chain: %v", err)
	}
	// A loop ends.
	os.Symlink("loop2", filepath.Join(dir, "allow.d/loop1")) //nolint:errcheck
	os.Symlink("loop1", filepath.Join(dir, "allow.d/loop2")) //nolint:errcheck
	if _, _, err := (Trust{Above: dir}).walker().resolve(filepath.Join(dir, "allow.d/loop1")); err == nil {
		t.Fatal("a symlink loop resolved")
	}
}

// billingFixture is a main file and one allowlist, allow.d/billing.yaml,
// in a fresh directory: the files whose ACLs the trust tests change.
func billingFixture(t *testing.T) (dir, main, file string) {
	t.Helper()
	dir = t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "allow.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	main = filepath.Join(dir, "egressd.yaml")
	file = filepath.Join(dir, "allow.d/billing.yaml")
	os.WriteFile(main, []byte("resolvers: [192.0.2.53]\n"), 0o644)            //nolint:errcheck
	os.WriteFile(file, []byte("user: 1001\nallow: [b.example:443]\n"), 0o644) //nolint:errcheck
	return dir, main, file
}

// No fix ever changes a directory the whole system shares: "chmod go-w /tmp"
// or "chown root:root /home/alice" would break the host. The configuration
// moves instead. egressd's own directories keep the direct fix.
func TestFixNeverChangesSharedDirs(t *testing.T) {
	tr := Trust{Owners: []uint32{0}}
	bad := []fileInfo{
		{mode: fs.ModeDir | fs.ModeSticky | 0o777},
		{mode: fs.ModeDir | 0o775},
		{mode: fs.ModeDir | 0o757},
		{mode: fs.ModeDir | 0o755, uid: 61001},
		{mode: fs.ModeDir | 0o777, uid: 61001},
	}
	for _, p := range []string{"/", "/tmp", "/var/tmp", "/dev/shm", "/etc", "/home", "/home/alice", "/run/user/1000", "/srv", "/opt"} {
		for _, fi := range bad {
			err := tr.checkOne(p, fi, nil)
			var ue *UntrustedError
			if !errors.As(err, &ue) {
				t.Fatalf("%s %v uid %d: accepted", p, fi.mode, fi.uid)
			}
			for _, cmd := range []string{"chmod", "chown", "setfacl"} {
				if strings.Contains(ue.Fix, cmd) {
					t.Errorf("%s %v uid %d: fix %q changes a shared directory", p, fi.mode, fi.uid, ue.Fix)
				}
			}
		}
		writable := acl([3]uint32{aclUserObj, 7, 0}, [3]uint32{aclUser, 7, 61001}, [3]uint32{aclGroupObj, 5, 0}, [3]uint32{aclMask, 7, 0}, [3]uint32{aclOther, 5, 0})
		err := tr.checkOne(p, fileInfo{mode: fs.ModeDir | 0o755}, func() ([]byte, error) { return writable, nil })
		var ue *UntrustedError
		if !errors.As(err, &ue) || strings.Contains(ue.Fix, "setfacl") {
			t.Errorf("%s with a writing ACL entry: %v (fix %q)", p, err, ue.Fix)
		}
	}
	if err := tr.checkOne("/tmp", bad[0], nil); !strings.Contains(err.(*UntrustedError).Fix, "move the configuration to a directory root alone can write (e.g. /etc/egressd)") {
		t.Errorf("/tmp: fix %q, want one that moves the configuration", err.(*UntrustedError).Fix)
	}
	// The control: egressd's own directory and file get the direct fix.
	for _, c := range []struct {
		p   string
		fi  fileInfo
		fix string
	}{
		{"/etc/egressd", fileInfo{mode: fs.ModeDir | 0o775}, "chmod go-w /etc/egressd"},
		{"/etc/egressd/allow.d/billing.yaml", fileInfo{mode: 0o644, uid: 61001}, "chown root:root /etc/egressd/allow.d/billing.yaml"},
	} {
		var ue *UntrustedError
		if err := tr.checkOne(c.p, c.fi, nil); !errors.As(err, &ue) || ue.Fix != c.fix {
			t.Errorf("%s: %v, want the fix %q", c.p, err, c.fix)
		}
	}
}

// The operator's case: a configuration put under the real /tmp is refused
// with a fix that moves it, not one that changes /tmp.
func TestConfigUnderTmpFix(t *testing.T) {
	st, err := os.Stat("/tmp")
	if err != nil || st.Mode()&0o002 == 0 || st.Mode()&os.ModeSticky == 0 {
		t.Skip("/tmp is not the usual sticky, world-writable directory here")
	}
	dir, err := os.MkdirTemp("/tmp", "egressd-fix-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	main := filepath.Join(dir, "egressd.yaml")
	if err := os.WriteFile(main, []byte("allow_dir: allow.d\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = LoadTrusted(main, true, Trust{})
	var ce Errors
	if !errors.As(err, &ce) || ce[0].Pos.File != "/tmp" {
		t.Fatalf("a configuration under /tmp: %v, want /tmp refused", err)
	}
	if strings.Contains(ce[0].Fix, "chmod") || !strings.Contains(ce[0].Fix, "move the configuration") {
		t.Errorf("fix %q, want one that moves the configuration and leaves /tmp alone", ce[0].Fix)
	}
}
