package config

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/egressd/egressd/internal/syspath"
	"golang.org/x/sys/unix"
)

// Trust decides which configuration paths egressd believes, like sshd's
// StrictModes: a service must never be able to edit the allowlist it is
// restricted by. Every path egressd reads its configuration through — the
// file, each symlink on the way and its target, every directory up to / —
// must be owned by a trusted user and writable by nobody else: no group or
// other write bit (a sticky, world-writable directory such as /tmp is refused
// too: anyone may add files there), and no POSIX ACL entry granting write to
// another user or group.
type Trust struct {
	// Owners are the uids that may own configuration paths. Empty means
	// root and egressd's own effective uid.
	Owners []uint32
	// Above, when set, is a directory whose ancestors are not checked (the
	// directory itself still is). Only tests set it: their temporary
	// directories live under the world-writable /tmp. Empty checks up to /.
	Above string
}

// ReadFile reads path if every component of it passes the trust rules (the
// hosts file: its answers open destinations like allowlist entries do).
func (t Trust) ReadFile(path string) ([]byte, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	return t.walker().readTrusted(abs)
}

func (t Trust) owners() []uint32 {
	if len(t.Owners) > 0 {
		return t.Owners
	}
	return []uint32{0, uint32(os.Geteuid())}
}

func (t Trust) trusted(uid uint32) bool {
	for _, o := range t.owners() {
		if o == uid {
			return true
		}
	}
	return false
}

// UntrustedError says why a configuration path is refused, with the fix.
type UntrustedError struct {
	Path   string
	UID    uint32
	Mode   fs.FileMode
	Reason string
	Fix    string
}

func (e *UntrustedError) Error() string {
	return fmt.Sprintf("refused: %s is owned by %s, mode %s: %s (egressd reads only configuration that root or egressd alone can change)",
		e.Path, ownerName(e.UID), modeString(e.Mode), e.Reason)
}

func ownerName(uid uint32) string {
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		return fmt.Sprintf("%s (uid %d)", u.Username, uid)
	}
	return fmt.Sprintf("uid %d", uid)
}

func modeString(m fs.FileMode) string {
	s := fmt.Sprintf("%04o", uint32(m.Perm()))
	if m&fs.ModeSticky != 0 {
		s = fmt.Sprintf("%04o", uint32(m.Perm())|0o1000)
	}
	return s
}

// fileInfo is what the walk needs from lstat.
type fileInfo struct {
	mode fs.FileMode
	uid  uint32
	dev  uint64
	ino  uint64
}

func lstat(p string) (fileInfo, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return fileInfo{}, &fs.PathError{Op: "lstat", Path: p, Err: err}
	}
	return infoOf(&st), nil
}

func infoOf(st *unix.Stat_t) fileInfo {
	m := fs.FileMode(st.Mode & 0o777)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		m |= fs.ModeDir
	case unix.S_IFLNK:
		m |= fs.ModeSymlink
	case unix.S_IFREG:
	default:
		m |= fs.ModeIrregular
	}
	if st.Mode&unix.S_ISVTX != 0 {
		m |= fs.ModeSticky
	}
	return fileInfo{mode: m, uid: st.Uid, dev: uint64(st.Dev), ino: st.Ino}
}

// checkOne checks one path's owner, mode and ACL. Symlinks are checked for
// their owner only: their mode means nothing and they cannot be changed in
// place (replacing one needs write access to its directory, checked too).
func (t Trust) checkOne(p string, fi fileInfo, acl func() ([]byte, error)) error {
	fail := func(reason, fix string) error {
		if fi.mode.IsDir() && syspath.Shared(p, fi.mode&fs.ModeSticky != 0, fi.uid) {
			fix = sharedDirFix(p)
		}
		return &UntrustedError{Path: p, UID: fi.uid, Mode: fi.mode, Reason: reason, Fix: fix}
	}
	chown := "chown root:root " + p
	if !t.trusted(fi.uid) {
		fix := chown
		if fi.mode&fs.ModeSymlink == 0 && fi.mode.Perm()&0o022 != 0 {
			fix += " && chmod go-w " + p
		}
		if fi.mode&fs.ModeSymlink != 0 {
			fix = "chown -h root:root " + p
		}
		return fail("its owner is neither root nor egressd's own user", fix)
	}
	if fi.mode&fs.ModeSymlink != 0 {
		return nil
	}
	if fi.mode.Perm()&0o022 != 0 {
		who := "its group"
		if fi.mode.Perm()&0o002 != 0 {
			who = "every user"
		}
		reason := "writable by " + who
		if fi.mode&fs.ModeSticky != 0 && fi.mode.Perm()&0o002 != 0 {
			reason += " (the sticky bit does not help: anyone may add files there; keep configuration out of /tmp-like directories)"
		}
		return fail(reason, "chmod go-w "+p)
	}
	if acl != nil {
		b, err := acl()
		if err == nil {
			if who := t.aclWriter(b); who != "" {
				return fail("a POSIX ACL lets "+who+" write it", "setfacl -b "+p+" (or remove the entry granting write)")
			}
		}
	}
	return nil
}

// sharedDirFix is the fix for a refused directory that the whole system
// shares (/tmp, /home, a user's home): changing its owner or mode would
// break the host, so the configuration moves instead.
func sharedDirFix(p string) string {
	if p == "/" || p == "/etc" {
		return p + " is a system directory: do not change it for egressd; find out who changed its owner or mode from the distribution's"
	}
	return "move the configuration to a directory root alone can write (e.g. /etc/egressd) and point --config at it; leave " + p + " as it is: other programs rely on it"
}

// POSIX ACL xattr layout (linux/posix_acl_xattr.h): a 4-byte version (2),
// then 8-byte entries: tag uint16, perm uint16, id uint32, little-endian.
const (
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20
	aclWrite    = 0x02
)

// ACLEntry is one entry of a POSIX access ACL (system.posix_acl_access).
type ACLEntry struct {
	Tag, Perm uint16
	ID        uint32
}

// ACL tags and the write permission, as the kernel stores them.
const (
	ACLUser  = aclUser
	ACLGroup = aclGroup
)

// ParseACL decodes a system.posix_acl_access value; mask is the ACL mask
// (7 when there is none). ok is false for a value that is not version 2.
func ParseACL(b []byte) (ents []ACLEntry, mask uint16, ok bool) {
	if len(b) < 4 || binary.LittleEndian.Uint32(b) != 2 {
		return nil, 0, false
	}
	mask = 0o7
	for i := 4; i+8 <= len(b); i += 8 {
		e := ACLEntry{binary.LittleEndian.Uint16(b[i:]), binary.LittleEndian.Uint16(b[i+2:]), binary.LittleEndian.Uint32(b[i+4:])}
		if e.Tag == aclMask {
			mask = e.Perm
		}
		ents = append(ents, e)
	}
	return ents, mask, true
}

// Writes reports whether the entry grants write after the mask (which does
// not limit the owner and other entries).
func (e ACLEntry) Writes(mask uint16) bool {
	if e.Tag == aclUserObj || e.Tag == aclOther {
		return e.Perm&aclWrite != 0
	}
	return e.Perm&mask&aclWrite != 0
}

// aclWriter returns who, other than a trusted owner, an access ACL lets
// write, or "". Named user and group entries (and the owning group) are
// limited by the mask, as the kernel applies them.
func (t Trust) aclWriter(b []byte) string {
	ents, mask, ok := ParseACL(b)
	if !ok {
		return ""
	}
	for _, e := range ents {
		if !e.Writes(mask) {
			continue
		}
		switch e.Tag {
		case aclUser:
			if !t.trusted(e.ID) {
				return ownerName(e.ID)
			}
		case aclGroup:
			return fmt.Sprintf("group %d", e.ID)
		case aclGroupObj:
			return "the owning group"
		case aclOther:
			return "every user"
		}
	}
	return ""
}

func xattrACL(p string) func() ([]byte, error) {
	return func() ([]byte, error) {
		buf := make([]byte, 1024)
		n, err := unix.Lgetxattr(p, "system.posix_acl_access", buf)
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// walker checks paths, remembering directories already found trustworthy.
type walker struct {
	t    Trust
	seen map[string]bool
}

func (t Trust) walker() *walker { return &walker{t: t, seen: map[string]bool{}} }

// resolve walks p from / one component at a time with lstat, checking each
// directory, each symlink and, through the symlinks, each target. It
// returns the real path of the final object and what lstat said about it.
// A missing final component is fs.ErrNotExist (wrapped).
func (w *walker) resolve(p string) (string, fileInfo, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fileInfo{}, err
	}
	rest := strings.Split(strings.TrimPrefix(filepath.Clean(abs), "/"), "/")
	cur := "/"
	if err := w.dir(cur); err != nil {
		return "", fileInfo{}, err
	}
	hops := 0
	var fi fileInfo
	up := false // the last component was "..": fi is not cur's
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		if c == "" || c == "." {
			continue
		}
		if c == ".." {
			cur, up = filepath.Dir(cur), true
			continue
		}
		up = false
		next := filepath.Join(cur, c)
		fi, err = lstat(next)
		if err != nil {
			return "", fileInfo{}, err
		}
		if fi.mode&fs.ModeSymlink != 0 {
			if err := w.check(next, fi, nil); err != nil {
				return "", fileInfo{}, err
			}
			if hops++; hops > 40 {
				return "", fileInfo{}, &fs.PathError{Op: "resolve", Path: p, Err: syscall.ELOOP}
			}
			target, err := os.Readlink(next)
			if err != nil {
				return "", fileInfo{}, err
			}
			if filepath.IsAbs(target) {
				cur = "/"
			}
			rest = append(strings.Split(target, "/"), rest...)
			continue
		}
		if fi.mode.IsDir() {
			if err := w.dir(next); err != nil {
				return "", fileInfo{}, err
			}
		} else if len(rest) > 0 {
			return "", fileInfo{}, &fs.PathError{Op: "resolve", Path: next, Err: syscall.ENOTDIR}
		} else if err := w.check(next, fi, xattrACL(next)); err != nil {
			return "", fileInfo{}, err
		}
		cur = next
	}
	if cur == "/" || up {
		if fi, err = lstat(cur); err != nil {
			return "", fileInfo{}, err
		}
	}
	return cur, fi, nil
}

// CheckDir checks the directory p and every directory and symlink on the
// way to it by the rules of configuration paths: a directory in which
// egressd puts what others connect to (the metrics socket) must not be
// replaceable by another user, here or above.
func (t Trust) CheckDir(p string) error {
	_, fi, err := t.walker().resolve(p)
	if err != nil {
		return err
	}
	if !fi.mode.IsDir() {
		return &fs.PathError{Op: "check", Path: p, Err: syscall.ENOTDIR}
	}
	return nil
}

func (w *walker) dir(p string) error {
	if w.seen[p] {
		return nil
	}
	if w.t.Above != "" && isAncestor(p, filepath.Clean(w.t.Above)) {
		w.seen[p] = true
		return nil
	}
	fi, err := lstat(p)
	if err != nil {
		return err
	}
	if err := w.t.checkOne(p, fi, xattrACL(p)); err != nil {
		return err
	}
	w.seen[p] = true
	return nil
}

func (w *walker) check(p string, fi fileInfo, acl func() ([]byte, error)) error {
	return w.t.checkOne(p, fi, acl)
}

// isAncestor reports whether a is a proper ancestor of b (both clean, absolute).
func isAncestor(a, b string) bool {
	if a == b {
		return false
	}
	return a == "/" || strings.HasPrefix(b, a+"/")
}

// readTrusted reads a configuration file after checking the whole path to
// it. It opens the real path it checked without following symlinks and
// compares the opened file with the one the walk checked, so that a file
// swapped in between is noticed rather than read.
func (w *walker) readTrusted(p string) ([]byte, error) {
	real, fi, err := w.resolve(p)
	if err != nil {
		return nil, err
	}
	if !fi.mode.IsRegular() {
		return nil, &fs.PathError{Op: "read", Path: p, Err: errors.New("not a regular file")}
	}
	fd, err := unix.Open(real, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: real, Err: err}
	}
	f := os.NewFile(uintptr(fd), real)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &fs.PathError{Op: "fstat", Path: real, Err: err}
	}
	got := infoOf(&st)
	if got.dev != fi.dev || got.ino != fi.ino {
		return nil, &fs.PathError{Op: "read", Path: real, Err: errChanged}
	}
	if err := w.t.checkOne(real, got, func() ([]byte, error) {
		buf := make([]byte, 1024)
		n, err := unix.Fgetxattr(fd, "system.posix_acl_access", buf)
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}); err != nil {
		return nil, err
	}
	return io.ReadAll(f)
}

// trustError turns an untrusted path into a configuration error with the fix.
func trustError(err error) (*Error, bool) {
	var ue *UntrustedError
	if !errors.As(err, &ue) {
		return nil, false
	}
	return &Error{Pos: Pos{File: ue.Path}, Msg: ue.Error(), Fix: ue.Fix}, true
}

// TrustedTempDir makes a new directory for a throwaway configuration (the
// demo, tests, benchmarks) where the trust rules accept it: under /run,
// which root alone may write, rather than under the world-writable /tmp.
func TrustedTempDir(prefix string) (string, error) {
	return os.MkdirTemp("/run", prefix)
}
