// Package cgroup finds systemd units' cgroups on the cgroup2 hierarchy and
// their ids, the numbers nftables' `socket cgroupv2 level N` matches.
package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/egressd/egressd/config"
	"golang.org/x/sys/unix"
)

// Root returns where the cgroup2 hierarchy is mounted: /sys/fs/cgroup on a
// unified host, /sys/fs/cgroup/unified on a hybrid one.
func Root() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	best := ""
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS... - FSTYPE SOURCE SUPEROPTS
		fields := strings.Fields(sc.Text())
		for i, fl := range fields {
			if fl == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" && len(fields) > 4 && fields[3] == "/" {
				if mp := unescape(fields[4]); best == "" || len(mp) < len(best) {
					best = mp
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if best == "" {
		return "", errors.New("no cgroup2 hierarchy is mounted (unit allowlists need cgroup v2)")
	}
	return best, nil
}

func unescape(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// ID is the id of the cgroup at path: its directory's inode number, which
// is the kernel's cgroup id on cgroup2.
func ID(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// Level is a cgroup's depth below the root: "system.slice/foo.service" is 2.
func Level(rel string) int {
	rel = strings.Trim(rel, "/")
	if rel == "" {
		return 0
	}
	return strings.Count(rel, "/") + 1
}

// Unit is one cgroup found for a unit name.
type Unit struct {
	Name      string // the unit, the directory's name
	Path      string // relative to the root, e.g. system.slice/foo.service
	ID        uint64
	Allowlist string // Restricted: the allowlist that restricts the unit
}

// Find walks the hierarchy under root down to maxLevel and returns every
// cgroup whose directory is named after one of units. It does not descend
// into a unit's cgroup (a Delegate=yes unit's sub-cgroups are matched
// through their ancestor). Directories that vanish during the walk are
// skipped.
func Find(root string, units map[string]bool, maxLevel int) ([]Unit, error) {
	var out []Unit
	var walk func(rel string, level int) error
	walk = func(rel string, level int) error {
		if level >= maxLevel {
			return nil
		}
		ents, err := os.ReadDir(filepath.Join(root, rel))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && rel != "" {
				return nil
			}
			return fmt.Errorf("read cgroup %s: %w", filepath.Join(root, rel), err)
		}
		for _, e := range ents {
			if !e.IsDir() {
				continue
			}
			p := filepath.Join(rel, e.Name())
			if units[e.Name()] {
				id, err := ID(filepath.Join(root, p))
				if err != nil {
					continue // gone
				}
				out = append(out, Unit{Name: e.Name(), Path: p, ID: id})
				continue
			}
			// Units live in slices; a non-slice cgroup holds no units
			// (a scope's or service's own sub-cgroups).
			if !strings.HasSuffix(e.Name(), ".slice") {
				continue
			}
			if err := walk(p, level+1); err != nil {
				return err
			}
		}
		return nil
	}
	return out, walk("", 0)
}

// Self is the calling process's cgroup2 path, relative to the hierarchy's
// root (from /proc/self/cgroup, the "0::" line).
func Self() (string, error) {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(l, "0::"); ok {
			return strings.TrimPrefix(rest, "/"), nil
		}
	}
	return "", errors.New("/proc/self/cgroup has no cgroup2 entry")
}

// Restricted finds the current cgroups of the configuration's unit
// allowlists under root ("" for Root()), sorted by id; Unit.Allowlist says
// whose each is.
func Restricted(root string, cfg *config.Config) ([]Unit, error) {
	units := map[string]string{}
	for _, a := range cfg.Allowlists {
		if a.IsUnit() {
			units[a.Unit] = a.Name
		}
	}
	if len(units) == 0 {
		return nil, nil
	}
	if root == "" {
		var err error
		if root, err = Root(); err != nil {
			return nil, err
		}
	}
	names := map[string]bool{}
	for n := range units {
		names[n] = true
	}
	found, err := Find(root, names, MaxLevel)
	if err != nil {
		return nil, err
	}
	for i := range found {
		found[i].Allowlist = units[found[i].Name]
	}
	sort.Slice(found, func(i, j int) bool { return found[i].ID < found[j].ID })
	return found, nil
}

// MaxLevel is the deepest level searched: ruleset.UnitLevels (a test keeps
// the two equal; this package cannot import ruleset, whose tests use it).
const MaxLevel = 8
