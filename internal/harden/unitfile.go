package harden

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// UnitDirs are where systemd looks for system units, in priority order.
var UnitDirs = []string{"/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"}

// FindUnitFile returns the unit file of name in dirs: the first dir that
// has it, or its template (foo@.service for foo@bar.service).
func FindUnitFile(name string, dirs []string) (string, error) {
	cands := []string{name}
	if at := strings.Index(name, "@"); at > 0 {
		cands = append(cands, name[:at+1]+name[strings.LastIndex(name, "."):])
	}
	for _, c := range cands {
		for _, d := range dirs {
			p := filepath.Join(d, c)
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("no unit file for %s in %s", name, strings.Join(dirs, ", "))
}

// OwnStartPre returns the ExecStartPre= lines unit file path and the
// drop-ins of name (NAME.d/*.conf in dirs, ordered by file name as systemd
// orders them; a file name in an earlier dir hides the same in a later one)
// leave in force, without egressd's start gates: what a unit allowlist's
// drop-in lists again after its gate.
func OwnStartPre(path, name string, dirs []string) ([]string, error) {
	u := &Unit{values: map[string][]string{}}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	u.parse(b)
	byName := map[string]string{}
	for _, d := range dirs {
		for _, n := range []string{name, filepath.Base(path)} {
			drop, _ := filepath.Glob(filepath.Join(d, n+".d", "*.conf"))
			for _, f := range drop {
				if _, ok := byName[filepath.Base(f)]; !ok {
					byName[filepath.Base(f)] = f
				}
			}
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		b, err := os.ReadFile(byName[n])
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		u.parse(b)
	}
	var out []string
	for _, v := range u.Get("Service", "ExecStartPre") {
		f := strings.Fields(v)
		if v == "" || (len(f) >= 2 && filepath.Base(strings.TrimLeft(f[0], "@-:+!|")) == "egressd" && f[1] == "wait") {
			continue
		}
		out = append(out, v)
	}
	return out, nil
}
