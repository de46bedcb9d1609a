//go:build linux

package bindguard

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/egressd/egressd/internal/cgroup"
	"golang.org/x/sys/unix"
)

// DefaultDir is where egressd pins its programs and maps.
const DefaultDir = "/sys/fs/bpf/egressd"

// Enforcer opens the Guard once a listen: restriction exists (or an earlier
// egressd left one pinned, which must then be kept current), and applies
// each policy to it. Used from the daemon's loop only.
type Enforcer struct {
	Dir    string // pins; default DefaultDir
	Cgroup string // where the programs attach; default the cgroup2 root
	// OnOpen is called once the guard is open (the daemon reads its events).
	OnOpen func(*Guard)
	guard  *Guard
	// The policies last applied (Repair compares the maps with them).
	users   Policy
	cgroups Cgroups
}

// Apply brings the kernel to p (uids) and c (unit cgroups), loading and
// attaching the programs first if needed. With nothing to restrict and
// nothing pinned, it loads nothing.
func (e *Enforcer) Apply(p Policy, c Cgroups) error {
	if e.guard == nil {
		if len(p) == 0 && len(c) == 0 && len(Pinned(e.dir())) == 0 {
			return nil
		}
		g, err := e.open()
		if err != nil {
			return err
		}
		e.guard = g
		if e.OnOpen != nil {
			e.OnOpen(g)
		}
	}
	e.users, e.cgroups = nil, nil // unknown until both are in
	if err := e.guard.Apply(p); err != nil {
		return err
	}
	if err := e.guard.ApplyCgroups(c); err != nil {
		return err
	}
	e.users, e.cgroups = p, c
	return nil
}

func (e *Enforcer) dir() string {
	if e.Dir == "" {
		return DefaultDir
	}
	return e.Dir
}

func (e *Enforcer) open() (*Guard, error) {
	cg := e.Cgroup
	if cg == "" {
		root, err := cgroup.Root()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnsupported, err)
		}
		cg = root
	}
	// The pin directory may be a bpffs (a bind of one, as egressd.service
	// makes); else its parent must be one, mounted here if need be.
	if !IsBPFFS(e.dir()) {
		if err := EnsureBPFFS(filepath.Dir(e.dir())); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnsupported, err)
		}
	}
	g, err := Open(cg, e.dir())
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EROFS) || errors.Is(err, unix.EACCES) {
		return nil, fmt.Errorf("%w (egressd needs CAP_BPF, bpf(2) and a writable /sys/fs/bpf: egressd.service as shipped grants them: check for a drop-in that takes them away)", err)
	}
	return g, err
}

// Repair puts back what another process undid of a loaded restriction
// (Guard.Repair); nothing while none is loaded.
func (e *Enforcer) Repair() ([]string, error) {
	if e.guard == nil {
		return nil, nil
	}
	found, err := e.guard.Repair()
	if err != nil || e.users == nil {
		return found, err
	}
	// Entries another process changed in the maps: written again.
	have, lerr := e.guard.Loaded()
	haveCg, cerr := e.guard.LoadedCgroups()
	if lerr != nil || cerr != nil {
		return found, errors.Join(lerr, cerr)
	}
	want := Cgroups{}
	for id, r := range e.cgroups {
		if id != Expected {
			want[id] = r
		}
	}
	if !samePolicy(have, e.users) || !sameRules(haveCg, want) {
		found = append(found, "listen policy maps changed")
		return found, e.Apply(e.users, e.cgroups)
	}
	return found, nil
}

// Remove detaches the programs and deletes the pins (on_exit: remove).
func (e *Enforcer) Remove() error {
	if e.guard != nil {
		e.guard.Close()
		e.guard = nil
	}
	return Remove(e.dir())
}

// Pinned is the pin directory once the restriction is loaded, else "".
func (e *Enforcer) Pinned() string {
	if e.guard == nil {
		return ""
	}
	return e.dir()
}

const bpffsMagic = 0xcafe4a11

// EnsureBPFFS makes sure dir is a bpffs mount, mounting one there when it is
// an empty directory that is not (a host whose init did not mount
// /sys/fs/bpf). systemd mounts /sys/fs/bpf at boot.
func EnsureBPFFS(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("bpffs at %s: %w", dir, err)
	}
	if st.Type == bpffsMagic {
		return nil
	}
	if err := unix.Mount("bpf", dir, "bpf", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0700"); err != nil {
		if errors.Is(err, unix.EPERM) {
			return fmt.Errorf("%s is not a bpffs and egressd may not mount one there (mount it at boot, as systemd does): %w", dir, err)
		}
		return fmt.Errorf("mount bpffs at %s: %w", dir, err)
	}
	return nil
}

// IsBPFFS reports whether dir is on a bpffs (check, plan).
func IsBPFFS(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == bpffsMagic
}
