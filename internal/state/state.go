// Package state is the daemon's published view, read by `egressd check`:
// a JSON document at RUNTIME_DIR/state.json (default /run/egressd),
// replaced atomically (write to a temporary file, rename) after applies.
//
// check compares the kernel with this view instead of with a fresh DNS
// resolution, so that addresses that are legitimately lingering, or served
// stale while DNS fails, are not reported as drift.
package state

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// DefaultDir is where the daemon publishes its state.
const DefaultDir = "/run/egressd"

// File is the state file's name inside the runtime directory.
const File = "state.json"

// Name is the daemon's view of one DNS name.
type Name struct {
	Addrs        []string  `json:"addrs"`
	Failing      bool      `json:"failing"`
	ServingStale bool      `json:"serving_stale"`
	LastOK       time.Time `json:"last_ok"`
	Error        string    `json:"error,omitempty"`
	// Lingering maps each address that left the DNS answers but is still
	// allowed to the time it stops being allowed (TTL + linger ran out).
	Lingering map[string]time.Time `json:"lingering,omitempty"`
}

// State is the published document (version 1).
type State struct {
	Version     int                          `json:"version"`
	PID         int                          `json:"pid"`
	Started     time.Time                    `json:"started"`
	Updated     time.Time                    `json:"updated"`
	Generation  uint64                       `json:"generation"`
	LastApply   time.Time                    `json:"last_apply"`
	ConfigFile  string                       `json:"config_file"`
	ConfigHash  string                       `json:"config_hash"`
	Plan        Plan                         `json:"plan"`
	Names       map[string]Name              `json:"names"`
	Users       map[string]uint32            `json:"users"`                  // allowlist -> uid, enforced
	MissingUser map[string]string            `json:"missing_users"`          // allowlist -> why not enforced
	ListenError string                       `json:"listen_error,omitempty"` // why allowlists' listen: is not enforced
	ListenDir   string                       `json:"listen_dir,omitempty"`   // where the listen restriction is pinned, once loaded
	Extra       map[string]map[string]string `json:"extra,omitempty"`
}

// Hash fingerprints a configuration value so check can tell whether the
// files on disk are what the daemon enforces.
func Hash(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Write replaces dir/state.json atomically, mode 0644.
func Write(dir string, s *State) error { return WriteJSON(dir, File, 0o644, s) }

// WriteMode replaces dir/state.json atomically with the given mode and
// group (gid; -1 keeps the writer's): state_mode and state_group.
func WriteMode(dir string, s *State, mode os.FileMode, gid int) error {
	return WriteJSONOwned(dir, File, mode, gid, s)
}

// WriteJSON replaces dir/name atomically with v as JSON, with the given mode.
func WriteJSON(dir, name string, mode os.FileMode, v any) error {
	return WriteJSONOwned(dir, name, mode, -1, v)
}

// WriteJSONOwned is WriteJSON with a group (gid; -1 keeps the writer's),
// set before the file takes its name: readers never see it open wider.
func WriteJSONOwned(dir, name string, mode os.FileMode, gid int, v any) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+name+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	// Streamed: the document is megabytes at 100,000 elements, and a
	// transient buffer of that size would set the daemon's memory peak.
	w := bufio.NewWriterSize(tmp, 64<<10)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		tmp.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return err
	}
	if gid >= 0 {
		if err := tmp.Chown(-1, gid); err != nil {
			tmp.Close()
			return fmt.Errorf("group %d: %w (under the unit, egressd must be a member of the group: SupplementaryGroups=)", gid, err)
		}
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, name))
}

// ErrUntrusted means the runtime directory, its lock or its state file
// could be used by another user to block or fool egressd.
var ErrUntrusted = errors.New("runtime directory not safe")

// Read loads dir/state.json. A state file that another user could have
// written (writable by group or others, owned by neither root nor the
// directory's owner, or in a directory others can write) is refused with
// ErrUntrusted: check must not be fooled into "in sync".
func Read(dir string) (*State, error) {
	var s State
	if err := ReadJSON(dir, File, &s); err != nil {
		return nil, err
	}
	if s.Version != 1 {
		return nil, fmt.Errorf("%s: unknown version %d", filepath.Join(dir, File), s.Version)
	}
	return &s, nil
}

// ReadJSON loads dir/name into v under the trust rules of Read.
func ReadJSON(dir, name string, v any) error {
	// The directory may be reached through a symlink (DynamicUser= makes
	// /var/lib/egressd one): judge the directory it leads to.
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	p := filepath.Join(dir, name)
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	var dst syscall.Stat_t
	if err := syscall.Lstat(dir, &dst); err != nil {
		return err
	}
	var fst syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &fst); err != nil {
		return err
	}
	switch {
	case dst.Mode&0o022 != 0:
		return fmt.Errorf("%w: %s is writable by other users (mode %04o)", ErrUntrusted, dir, dst.Mode&0o7777)
	case fst.Mode&0o022 != 0:
		return fmt.Errorf("%w: %s is writable by other users (mode %04o)", ErrUntrusted, p, fst.Mode&0o7777)
	case fst.Uid != 0 && fst.Uid != dst.Uid:
		return fmt.Errorf("%w: %s is owned by uid %d, neither root nor the owner of %s", ErrUntrusted, p, fst.Uid, dir)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

// Running reports whether the daemon that wrote s still runs: it holds the
// lock in dir, and the lock names its pid. A process that merely reuses the
// pid of a dead daemon does not count (it cannot hold egressd's lock).
func (s *State) Running(dir string) bool {
	pid, held, err := Holder(dir)
	return err == nil && held && (pid == 0 || pid == s.PID) && s.Alive()
}

// Alive reports whether a process with the pid that wrote s exists (not
// proof that it is egressd: see Running).
func (s *State) Alive() bool {
	if s.PID <= 0 {
		return false
	}
	_, err := os.Stat(fmt.Sprintf("/proc/%d", s.PID))
	return err == nil
}
