package harden

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// GatedUnit is a unit whose start gate (ExecStartPre=+… egressd wait)
// waits for a user or a unit allowlist, as found in a unit directory.
type GatedUnit struct {
	Name      string
	User      string // the gate's --user, or ""
	Unit      string // the gate's --unit, or ""
	SystemBus bool   // the service can reach the D-Bus system bus
	Files     []string
}

// GatedUnits lists the units in dir (/etc/systemd/system: unit files and
// NAME.d/*.conf drop-ins, as egressd harden's install hint writes them)
// that carry an egressd start gate, with what the gate waits for and
// whether their hardening closes the D-Bus system bus. Units only partly
// there (a drop-in for a unit file elsewhere) are read from what is there.
func GatedUnits(dir string) []GatedUnit {
	names := map[string]bool{}
	for _, pat := range []string{"*.service", "*.service.d"} {
		m, _ := filepath.Glob(filepath.Join(dir, pat))
		for _, p := range m {
			names[strings.TrimSuffix(filepath.Base(p), ".d")] = true
		}
	}
	var out []GatedUnit
	for name := range names {
		path := filepath.Join(dir, name)
		var files []string
		if st, err := os.Stat(path); err == nil && !st.IsDir() {
			files = append(files, path)
		}
		drop, _ := filepath.Glob(path + ".d/*.conf")
		sort.Strings(drop)
		u := &Unit{values: map[string][]string{}}
		for _, f := range append(files, drop...) {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			u.Files = append(u.Files, f)
			u.parse(b)
		}
		for _, v := range u.Get("Service", "ExecStartPre") {
			f := strings.Fields(v)
			if len(f) < 2 || filepath.Base(strings.TrimLeft(f[0], "@-:+!|")) != "egressd" || f[1] != "wait" {
				continue
			}
			out = append(out, GatedUnit{Name: name, User: gateUser(f), Unit: gateFlag(f, "--unit"), SystemBus: systemBusOpen(u), Files: u.Files})
			break
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// systemBusOpen reports whether a service of u can connect to the D-Bus
// system bus (/run/dbus/system_bus_socket): not when InaccessiblePaths=
// covers it, nor when RestrictAddressFamilies= leaves out AF_UNIX.
func systemBusOpen(u *Unit) bool {
	for _, v := range u.Get("Service", "InaccessiblePaths") {
		for _, p := range strings.Fields(v) {
			p = filepath.Clean(strings.TrimLeft(p, "-+"))
			for _, closed := range []string{"/run", "/run/dbus", "/run/dbus/system_bus_socket", "/var/run", "/var/run/dbus", "/var/run/dbus/system_bus_socket"} {
				if p == closed {
					return false
				}
			}
		}
	}
	// Lines add up (an empty one resets); when in doubt (allow and deny
	// lines mixed), open: check then says so rather than claim it closed.
	var allow, deny, unix, denyUnix bool
	for _, v := range u.Get("Service", "RestrictAddressFamilies") {
		if v == "none" {
			return false
		}
		d := strings.HasPrefix(v, "~")
		allow, deny = allow || !d, deny || d
		for _, f := range strings.Fields(strings.TrimPrefix(v, "~")) {
			if f == "AF_UNIX" {
				unix, denyUnix = unix || !d, denyUnix || d
			}
		}
	}
	if (allow && !deny && !unix) || (deny && !allow && denyUnix) {
		return false
	}
	return true
}

// gateFlag is the value of a --flag of an `egressd wait` command line, or "".
func gateFlag(f []string, flag string) string {
	for i, a := range f {
		if a == flag && i+1 < len(f) {
			return f[i+1]
		}
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}
