package harden

import (
	"bufio"
	"bytes"
	"fmt"
	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/syspath"
	"golang.org/x/sys/unix"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// Unit is a parsed unit file with its drop-ins: every assignment, in order.
type Unit struct {
	Files  []string
	values map[string][]string // "Section.Key" -> values in order; an empty assignment resets
}

// LoadUnit reads path and the drop-ins in path.d/*.conf, in name order.
func LoadUnit(path string) (*Unit, error) {
	u := &Unit{values: map[string][]string{}}
	files := []string{path}
	drop, _ := filepath.Glob(path + ".d/*.conf")
	sort.Strings(drop)
	files = append(files, drop...)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		u.Files = append(u.Files, f)
		u.parse(b)
	}
	return u, nil
}

func (u *Unit) parse(b []byte) {
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	var cont string
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasSuffix(line, "\\") {
			cont += strings.TrimSuffix(line, "\\") + " "
			continue
		}
		line, cont = cont+line, ""
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' && strings.HasSuffix(line, "]") {
			section = line[1 : len(line)-1]
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		key := section + "." + strings.TrimSpace(k)
		v = strings.TrimSpace(v)
		if v == "" {
			u.values[key] = []string{""} // reset, but remember it was set (e.g. CapabilityBoundingSet=)
			continue
		}
		if len(u.values[key]) == 1 && u.values[key][0] == "" {
			u.values[key] = nil
		}
		u.values[key] = append(u.values[key], v)
	}
}

// Get returns the values of a [Service] or [Unit] key.
func (u *Unit) Get(section, key string) []string { return u.values[section+"."+key] }

// Last returns the last value of a key, and whether it was set.
func (u *Unit) Last(section, key string) (string, bool) {
	vs := u.Get(section, key)
	if len(vs) == 0 {
		return "", false
	}
	return vs[len(vs)-1], true
}

// Finding is one audit result.
type Finding struct {
	Kind   string `json:"kind"` // missing, weakened, ordering, runs_as_root, owned_by_user, group_writable, world_writable
	Target string `json:"target"`
	Detail string `json:"detail"`
	Fix    string `json:"fix"`
}

// Report is the audit of one unit.
type Report struct {
	Unit      string    `json:"unit"`
	Files     []string  `json:"files"`
	Score     float64   `json:"exposure"` // systemd-analyze security; -1 when unknown
	ScoreNote string    `json:"exposure_note,omitempty"`
	Findings  []Finding `json:"findings"`
	// Notes are facts that are not problems (what egressd enforces).
	Notes []string `json:"notes,omitempty"`
}

var falseRE = regexp.MustCompile(`^(no|false|0|off)$`)

// Env is what the audit knows beyond the unit files.
type Env struct {
	// BPF: whether this host's systemd enforces SocketBindAllow=/Deny=.
	BPF Feature
	// AllowlistFor names the egressd allowlist that restricts a user; nil
	// leaves egress unchecked. An error says the configuration cannot be read.
	AllowlistFor func(user string) (name string, ok bool, err error)
	// Exists reports whether a path exists; default os.Stat.
	Exists func(path string) bool
	// Egressd is the binary a suggested start gate runs; default DefaultEgressd.
	Egressd string
	// ListenFor finds the listen: rules that hold the unit's processes: the
	// unit allowlist's and the user allowlist's, each when it has a listen:
	// key (both apply: a bind must pass both). None: listening unrestricted.
	// nil leaves listen: unchecked.
	ListenFor func(unit, user string) ([]ListenRule, error)
}

// ListenRule is one allowlist's listen: key as the audit sees it.
type ListenRule struct {
	Allowlist string
	Unit      bool     // a unit allowlist's (its cgroup), else a user's (its uid)
	Listen    []string // canonical entries, e.g. tcp:8080; empty: no port
}

// Audit inspects a unit file and its drop-ins.
func Audit(path string, env Env) (*Report, error) {
	if env.Exists == nil {
		env.Exists = func(p string) bool { _, err := os.Stat(p); return err == nil }
	}
	u, err := LoadUnit(path)
	if err != nil {
		return nil, err
	}
	r := &Report{Unit: path, Files: u.Files, Score: -1, Findings: []Finding{}}
	r.Score, r.ScoreNote = exposure(u)

	// Protections, compared with what the generator writes.
	ref := Options{User: "x", PrivateUsers: true}
	for _, l := range ref.lines() {
		if l.key == "User" || l.key == "Group" || l.key == "SocketBindDeny" || l.key == "ExecStartPre" || l.section == "Unit" {
			continue
		}
		v, ok := u.Last(l.section, l.key)
		fix := fmt.Sprintf("add %s=%s   # %s", l.key, l.value, l.why)
		switch {
		case !ok:
			r.Findings = append(r.Findings, Finding{"missing", l.key, "not set", fix})
		case l.key == "PrivateUsers" && falseRE.MatchString(v) && strings.Contains(strings.Join(u.Get("Service", "AmbientCapabilities"), " "), "CAP_NET_BIND_SERVICE"):
			// Needed: the capability must hold in the user namespace that owns the network namespace.
		case l.value == "yes" && falseRE.MatchString(v):
			r.Findings = append(r.Findings, Finding{"weakened", l.key, "set to " + v, fix})
		case l.key == "SystemCallArchitectures":
			if a := architectures(u.Get(l.section, l.key)); a != "native" {
				r.Findings = append(r.Findings, Finding{"weakened", l.key, "allows " + a + ": 32-bit system calls dodge the syscall filter and the cgroup setsockopt program (listen:)", fix})
			}
		}
	}
	userName, hasUser := u.Last("Service", "User")
	r.listen(u, path, userName, env)
	r.Findings = append(r.Findings, ordering(u, userName, env.Egressd, env.Exists)...)
	r.Findings = append(r.Findings, rootSockets(u, path)...)
	for _, v := range u.Get("Service", "ReadWritePaths") {
		for _, p := range strings.Fields(v) {
			if strings.HasPrefix(p, "-") {
				continue // optional: ignored when missing
			}
			p = strings.TrimLeft(p, "+")
			if !env.Exists(p) {
				r.Findings = append(r.Findings, Finding{"path_missing", p, "ReadWritePaths= names a path that does not exist: the service fails to start (226/NAMESPACE)",
					fmt.Sprintf("create it (install -d -o %s %s), or for a path under /var/lib, /var/cache, /var/log use StateDirectory=, CacheDirectory=, LogsDirectory=", orDefault(userName, "USER"), p)})
			}
		}
	}
	if hasUser && env.AllowlistFor != nil {
		_, ok, err := env.AllowlistFor(userName)
		switch {
		case err != nil:
			r.Findings = append(r.Findings, Finding{"egress_unknown", userName, "cannot read egressd's configuration: " + err.Error(), "fix the configuration (egressd check), then audit again"})
		case !ok:
			r.Findings = append(r.Findings, Finding{"not_restricted", userName, "no egressd allowlist for user " + userName + ": its egress is not restricted at all (and the start gate, if present, refuses to start it)",
				fmt.Sprintf("write /etc/egressd/allow.d/NAME.yaml with user: %s and the destinations it needs", userName)})
		}
	}

	if dyn, _ := u.Last("Service", "DynamicUser"); !hasUser && !regexp.MustCompile(`^(yes|true|1|on)$`).MatchString(dyn) {
		r.Findings = append(r.Findings, Finding{"runs_as_root", "User", "no User=: the service runs as root",
			"add User= and Group= naming a user of its own"})
		return r, nil
	}
	if hasUser {
		r.Findings = append(r.Findings, ownership(u, userName)...)
	}
	return r, nil
}

// listen reports on listening ports: systemd's SocketBind* and egressd's
// listen: rules for the allowlists that restrict the unit and its user.
func (r *Report) listen(u *Unit, path, userName string, env Env) {
	var rules []ListenRule
	if env.ListenFor != nil {
		var err error
		if rules, err = env.ListenFor(filepath.Base(path), userName); err != nil {
			r.Findings = append(r.Findings, Finding{"listen_unknown", "listen", "cannot read egressd's configuration: " + err.Error(), "fix the configuration (egressd check), then audit again"})
		}
	}
	has := len(rules) > 0
	_, deny := u.Last("Service", "SocketBindDeny")
	for _, rule := range rules {
		whose := "user"
		if rule.Unit {
			whose = "unit"
		}
		r.Notes = append(r.Notes, fmt.Sprintf("listen: egressd enforces %s allowlist %s's listen: [%s] (cgroup BPF, on any systemd): any other bind() of the service fails with EPERM", whose, rule.Allowlist, strings.Join(rule.Listen, ", ")))
	}
	if len(rules) > 1 {
		r.Notes = append(r.Notes, fmt.Sprintf("listen: both rules apply: the service may listen only on [%s]", strings.Join(sortedKeys(effectiveListen(rules)), ", ")))
	}
	switch {
	case !deny && has:
		r.Notes = append(r.Notes, "SocketBindDeny= is not set: systemd's own layer is missing (egressd enforces listen:)")
	case !deny:
		r.Findings = append(r.Findings, Finding{"missing", "SocketBindDeny", "the service may listen on any port",
			"add listen: [tcp:PORT] to its egressd allowlist, and SocketBindAllow=tcp:PORT with SocketBindDeny=any   # bind a shell, listen"})
	case env.BPF == FeatureNo && has:
		r.Notes = append(r.Notes, "this host's systemd is built -BPF_FRAMEWORK and ignores SocketBindAllow=/SocketBindDeny= (egressd enforces listen:)")
	case env.BPF == FeatureNo:
		r.Findings = append(r.Findings, Finding{"not_enforced", "SocketBindDeny", "this host's systemd is built -BPF_FRAMEWORK and ignores SocketBindAllow=/SocketBindDeny=: the service may listen on any port",
			"add listen: [tcp:PORT] to its egressd allowlist: egressd enforces it on any systemd"})
	}
	for _, rule := range rules {
		if v, ok := u.Last("Service", "FileDescriptorStoreMax"); ok && rule.Unit && strings.TrimSpace(v) != "" && strings.TrimSpace(v) != "0" {
			r.Findings = append(r.Findings, Finding{"fdstore_listen", "FileDescriptorStoreMax",
				fmt.Sprintf("FileDescriptorStoreMax=%s: a socket kept in the fd store across a restart keeps the old run's cgroup, which unit allowlist %s's listen: no longer holds: listen() on it accepts connections on any port", v, rule.Allowlist),
				"add FileDescriptorStoreMax=0 (egressd harden --allowlist " + rule.Allowlist + " writes it)"})
			break
		}
	}
	if has && deny {
		allow := socketBindAllow(u.Get("Service", "SocketBindAllow"))
		if mine := effectiveListen(rules); !sameSet(allow, mine) {
			names := make([]string, 0, len(rules))
			for _, rule := range rules {
				names = append(names, fmt.Sprintf("allowlist %s's listen: [%s]", rule.Allowlist, strings.Join(rule.Listen, ", ")))
			}
			r.Findings = append(r.Findings, Finding{"listen_mismatch", "SocketBindAllow",
				fmt.Sprintf("SocketBindAllow= allows [%s], %s: the service may bind only what all allow", strings.Join(sortedKeys(allow), ", "), strings.Join(names, " and ")),
				"make them name the same ports (egressd harden --listen ... writes both)"})
		}
	}
}

// effectiveListen is what every rule allows, one string per port.
func effectiveListen(rules []ListenRule) map[string]bool {
	if len(rules) == 0 {
		return nil
	}
	out := expandListen(rules[0].Listen)
	for _, rule := range rules[1:] {
		other := expandListen(rule.Listen)
		for k := range out {
			if !other[k] {
				delete(out, k)
			}
		}
	}
	return out
}

// socketBindAllow expands SocketBindAllow= values ([ipv4:|ipv6:][tcp:|udp:]PORT[-PORT],
// no protocol: both) into tcp:PORT / udp:PORT strings.
func socketBindAllow(values []string) map[string]bool {
	out := map[string]bool{}
	for _, v := range values {
		for _, f := range strings.Fields(v) {
			f = strings.TrimPrefix(strings.TrimPrefix(f, "ipv4:"), "ipv6:")
			protos := []string{"tcp", "udp"}
			if p, rest, ok := strings.Cut(f, ":"); ok {
				protos, f = []string{p}, rest
			}
			for _, p := range protos {
				for k := range expandListen([]string{p + ":" + f}) {
					out[k] = true
				}
			}
		}
	}
	return out
}

// expandListen expands listen: entries into one string per port (a
// malformed entry is kept as written, so that it shows as a difference).
func expandListen(entries []string) map[string]bool {
	out := map[string]bool{}
	for _, e := range entries {
		l, err := config.ParseListen(e)
		if err != nil {
			out[e] = true
			continue
		}
		for p := int(l.From); p <= int(l.To); p++ {
			out[fmt.Sprintf("%s:%d", l.Proto, p)] = true
		}
	}
	return out
}

func sameSet(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// ordering checks the dependency model on egressd: After= and Wants=, never
// a dependency that stops or restarts the service with egressd, and the
// start gate (ExecStartPre=+… egressd wait) that keeps it from starting
// before its user is restricted in the kernel.
func ordering(u *Unit, userName, egressd string, exists func(string) bool) []Finding {
	var out []Finding
	has := func(key string) bool {
		for _, v := range u.Get("Unit", key) {
			for _, f := range strings.Fields(v) {
				if f == "egressd.service" {
					return true
				}
			}
		}
		return false
	}
	for _, key := range []string{"Requires", "BindsTo", "Requisite", "PartOf"} {
		if has(key) {
			out = append(out, Finding{"bounces", key, key + "=egressd.service: restarting egressd (an upgrade, a deny_log change) or a crash of egressd stops or restarts this service, though the kernel keeps enforcing meanwhile",
				"replace it with Wants=egressd.service; the start gate keeps the service from starting unprotected"})
		}
	}
	if !has("After") || !(has("Wants") || has("Requires")) {
		out = append(out, Finding{"ordering", "[Unit]", "not ordered after egressd.service with Wants=: at boot the service may start before its allowlist is in the kernel",
			"add After=egressd.service and Wants=egressd.service in [Unit]"})
	}
	gate := false
	for _, v := range u.Get("Service", "ExecStartPre") {
		f := strings.Fields(v)
		if len(f) >= 2 && filepath.Base(strings.TrimLeft(f[0], "@-:+!|")) == "egressd" && f[1] == "wait" {
			gate = true // reported below if it gates nothing
			bin := strings.TrimLeft(f[0], "@-:+!|")
			prefix := f[0][:len(f[0])-len(bin)]
			if filepath.IsAbs(bin) && !exists(bin) {
				// Moved from a source install (/usr/local/bin) to the
				// package (/usr/bin), or the other way: the gate fails (203/EXEC)
				// and the service does not start.
				self := orDefault(egressd, DefaultEgressd)
				out = append(out, Finding{"gate_missing", bin, "the start gate runs " + bin + ", which does not exist: the service fails to start (status 203/EXEC) at its next start",
					fmt.Sprintf("point the gate at this egressd: ExecStartPre=%s%s %s (or run egressd harden again and install its drop-in), then systemctl daemon-reload",
						prefix, self, strings.Join(f[1:], " "))})
			}
			switch {
			case strings.Contains(prefix, "-"):
				out = append(out, Finding{"ordering", "ExecStartPre", "the start gate's failure is ignored (the - prefix): the service starts unprotected when the gate times out",
					"drop the -: ExecStartPre=+" + strings.TrimLeft(v, "@-:!|+")})
			case !strings.Contains(prefix, "+"):
				out = append(out, Finding{"ordering", "ExecStartPre", "the start gate runs without the + prefix: without CAP_NET_ADMIN it cannot read nf_tables and never lets the service start",
					"prefix it with +: ExecStartPre=+" + strings.TrimLeft(v, "@-:!|")})
			case userName != "" && gateUser(f) != "" && gateUser(f) != userName:
				out = append(out, Finding{"ordering", "ExecStartPre", fmt.Sprintf("the start gate waits for user %q, but the service runs as %q: it gates nothing", gateUser(f), userName),
					fmt.Sprintf("wait for the service's own user: --user %s", userName)})
			}
		}
	}
	if !gate {
		out = append(out, Finding{"ordering", "ExecStartPre", "no start gate: if egressd is not running or failed, the service starts unprotected",
			fmt.Sprintf("add ExecStartPre=+%s wait --user %s --timeout %s", orDefault(egressd, DefaultEgressd), orDefault(userName, "USER"), DefaultGateTimeout)})
	}
	return out
}

var overallRE = regexp.MustCompile(`Overall exposure level for .*: ([0-9]+\.[0-9]+)`)

// exposure runs systemd-analyze security --offline on the unit with its
// drop-ins merged into one file (offline mode reads only the file given).
func exposure(u *Unit) (float64, string) {
	bin, err := exec.LookPath("systemd-analyze")
	if err != nil {
		return -1, "systemd-analyze not found"
	}
	dir, err := os.MkdirTemp("", "egressd-audit-")
	if err != nil {
		return -1, err.Error()
	}
	defer os.RemoveAll(dir)
	merged := filepath.Join(dir, filepath.Base(u.Files[0]))
	if !strings.HasSuffix(merged, ".service") {
		merged += ".service"
	}
	var all bytes.Buffer
	for _, f := range u.Files {
		b, err := os.ReadFile(f)
		if err != nil {
			return -1, err.Error()
		}
		all.Write(b)
		all.WriteString("\n")
	}
	if err := os.WriteFile(merged, all.Bytes(), 0o644); err != nil {
		return -1, err.Error()
	}
	score, _, err := Analyze(bin, merged)
	if err != nil {
		return -1, err.Error()
	}
	return score, ""
}

// Analyze runs `systemd-analyze security --offline=yes FILE` (no shell: the
// path is one argument) and returns the overall exposure and the output.
func Analyze(bin, file string) (float64, string, error) {
	out, err := exec.Command(bin, "security", "--offline=yes", "--no-pager", file).CombinedOutput()
	m := overallRE.FindSubmatch(out)
	if m == nil {
		return -1, string(out), fmt.Errorf("systemd-analyze security: %v: %s", err, lastLine(out))
	}
	f, _ := strconv.ParseFloat(string(m[1]), 64)
	return f, string(out), nil
}

func lastLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// Paths the unit declares writable by the service user.
func writablePaths(u *Unit) []string {
	var out []string
	strip := func(p string) string { return strings.TrimLeft(p, "-+") }
	for _, v := range u.Get("Service", "ReadWritePaths") {
		for _, p := range strings.Fields(v) {
			out = append(out, filepath.Clean(strip(p)))
		}
	}
	for key, base := range map[string]string{"StateDirectory": "/var/lib", "CacheDirectory": "/var/cache", "LogsDirectory": "/var/log", "RuntimeDirectory": "/run"} {
		for _, v := range u.Get("Service", key) {
			for _, d := range strings.Fields(v) {
				d, _, _ = strings.Cut(d, ":")
				out = append(out, filepath.Join(base, d))
			}
		}
	}
	return out
}

// codePaths are the paths whose modification by the service would let an
// exploit persist or escalate: its binary, the files its command line names,
// its working directory, environment and configuration files.
func codePaths(u *Unit) []string {
	var out []string
	for _, key := range []string{"ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload"} {
		for _, v := range u.Get("Service", key) {
			fields := strings.Fields(v)
			for i, f := range fields {
				if i == 0 {
					f = strings.TrimLeft(f, "@-:+!|")
				}
				if _, val, ok := strings.Cut(f, "="); ok && strings.HasPrefix(val, "/") {
					f = val // --config=/etc/x.yaml
				}
				if strings.HasPrefix(f, "/") {
					if _, err := os.Stat(f); err == nil || i == 0 {
						out = append(out, filepath.Clean(f))
					}
				}
			}
		}
	}
	for _, key := range []string{"WorkingDirectory", "EnvironmentFile"} {
		for _, v := range u.Get("Service", key) {
			p := strings.TrimLeft(v, "-~!")
			if strings.HasPrefix(p, "/") {
				out = append(out, filepath.Clean(p))
			}
		}
	}
	for _, v := range u.Get("Service", "ConfigurationDirectory") {
		for _, d := range strings.Fields(v) {
			out = append(out, filepath.Join("/etc", d))
		}
	}
	return out
}

func under(p string, dirs []string) bool {
	for _, d := range dirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

// ownership walks every code and configuration path up to / and reports
// what the service user could modify: by owning it, through a group it is
// in, or because it is world-writable.
func ownership(u *Unit, userName string) []Finding {
	usr, err := user.Lookup(userName)
	if err != nil {
		return []Finding{{"user_unknown", userName, "the service user does not exist here: ownership not checked", "create the user, then audit again"}}
	}
	uid, _ := strconv.ParseUint(usr.Uid, 10, 32)
	groups := map[uint64]string{}
	gids, _ := usr.GroupIds()
	gids = append(gids, usr.Gid)
	for _, g := range gids {
		n, _ := strconv.ParseUint(g, 10, 32)
		name := g
		if gr, err := user.LookupGroupId(g); err == nil {
			name = gr.Name
		}
		groups[n] = name
	}
	return OwnershipFindings(codePaths(u), writablePaths(u), uint32(uid), groups, userName)
}

// OwnershipFindings checks paths (walking up to /) against a uid and its groups.
func OwnershipFindings(paths, writable []string, uid uint32, groups map[uint64]string, userName string) []Finding {
	var out []Finding
	seen := map[string]bool{}
	// A symlinked path is checked where it leads too: the target, and every
	// directory above it, are what the service runs.
	all := append([]string(nil), paths...)
	for _, p := range paths {
		if r, err := filepath.EvalSymlinks(p); err == nil && r != p {
			all = append(all, r)
		}
	}
	for _, p := range all {
		for q := p; ; q = filepath.Dir(q) {
			if !seen[q] && !under(q, writable) {
				seen[q] = true
				out = append(out, checkPath(q, uid, groups, userName)...)
			}
			if q == "/" || q == "." {
				break
			}
		}
	}
	return out
}

func checkPath(p string, uid uint32, groups map[uint64]string, userName string) []Finding {
	fi, err := os.Lstat(p)
	if err != nil {
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	var out []Finding
	mode := fi.Mode()
	fix := func(cmd string) string {
		if fi.IsDir() && syspath.Shared(p, mode&os.ModeSticky != 0, st.Uid) {
			// Never a command that changes a directory the system shares.
			return "move the service's files to a directory root alone can write (e.g. /opt/SERVICE or /usr/local/lib/SERVICE); leave " + p + " as it is"
		}
		return cmd
	}
	if st.Uid == uid {
		out = append(out, Finding{"owned_by_user", p, fmt.Sprintf("owned by %s, the service user: it can change it", userName),
			fix(fmt.Sprintf("chown root: %s", p))})
	}
	if g, in := groups[uint64(st.Gid)]; in && mode.Perm()&0o020 != 0 {
		out = append(out, Finding{"group_writable", p, fmt.Sprintf("writable by group %s, which %s belongs to", g, userName),
			fix(fmt.Sprintf("chmod g-w %s", p))})
	}
	sticky := fi.IsDir() && mode&os.ModeSticky != 0
	if mode.Perm()&0o002 != 0 && !sticky && mode&os.ModeSymlink == 0 {
		out = append(out, Finding{"world_writable", p, "writable by every user", fix(fmt.Sprintf("chmod o-w %s", p))})
	}
	if mode&os.ModeSymlink == 0 {
		if who := aclWriter(p, uid, groups); who != "" {
			out = append(out, Finding{"acl_writable", p, fmt.Sprintf("a POSIX ACL entry lets %s (%s) write it", who, userName),
				fix(fmt.Sprintf("setfacl -b %s (or remove the entry for %s)", p, who))})
		}
	}
	return out
}

// aclWriter names the ACL entry (user:UID or group:NAME) that gives uid,
// or a group it is in, write access to p after the mask; "" when none.
func aclWriter(p string, uid uint32, groups map[uint64]string) string {
	buf := make([]byte, 4096)
	n, err := unix.Getxattr(p, "system.posix_acl_access", buf)
	if err != nil {
		return ""
	}
	ents, mask, ok := config.ParseACL(buf[:n])
	if !ok {
		return ""
	}
	for _, e := range ents {
		if !e.Writes(mask) {
			continue
		}
		switch {
		case e.Tag == config.ACLUser && e.ID == uid:
			return fmt.Sprintf("user:%d", e.ID)
		case e.Tag == config.ACLGroup:
			if g, in := groups[uint64(e.ID)]; in {
				return "group:" + g
			}
		}
	}
	return ""
}

// WriteText prints the audit for people.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "egressd harden --audit %s\n", r.Unit)
	if len(r.Files) > 1 {
		fmt.Fprintf(w, "  drop-ins: %s\n", strings.Join(r.Files[1:], ", "))
	}
	if r.Score >= 0 {
		fmt.Fprintf(w, "  exposure (systemd-analyze security): %.1f\n", r.Score)
	} else {
		fmt.Fprintf(w, "  exposure: unknown (%s)\n", r.ScoreNote)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	if len(r.Findings) == 0 {
		fmt.Fprintln(w, "  nothing found")
		return
	}
	for _, f := range r.Findings {
		fmt.Fprintf(w, "  %-15s %s: %s\n      → %s\n", f.Kind, f.Target, f.Detail, f.Fix)
	}
}

// rootSockets reports sockets that systemd creates as root and hands to the
// service (socket activation): egressd matches the uid of a socket's
// creator, so those sockets are not restricted (docs/security.md).
func rootSockets(u *Unit, path string) []Finding {
	var socks []string
	for _, v := range u.Get("Unit", "Sockets") {
		socks = append(socks, strings.Fields(v)...)
	}
	base := strings.TrimSuffix(filepath.Base(path), ".service")
	if _, err := os.Stat(filepath.Join(filepath.Dir(path), base+".socket")); err == nil {
		socks = append(socks, base+".socket")
	}
	if len(socks) == 0 {
		return nil
	}
	return []Finding{{"not_restricted", strings.Join(socks, " "),
		"socket activation: systemd creates these sockets as root and passes them to the service; egressd matches the uid of a socket's creator, so a datagram socket among them sends anywhere, and a listening socket can be disconnected and connect anywhere",
		"let the service open its sockets itself, as its User= (no socket activation for a service whose egress must be restricted)"}}
}

// gateUser is the --user of an `egressd wait` command line, or "".
func gateUser(f []string) string {
	for i, a := range f {
		if a == "--user" && i+1 < len(f) {
			return f[i+1]
		}
		if v, ok := strings.CutPrefix(a, "--user="); ok {
			return v
		}
	}
	return ""
}

// architectures is the effective SystemCallArchitectures= list of the
// assignments vals, in order: each adds its words, an empty one resets the
// list (then every architecture is allowed, "any").
func architectures(vals []string) string {
	var list []string
	for _, v := range vals {
		f := strings.Fields(v)
		if len(f) == 0 {
			list = nil
			continue
		}
		for _, a := range f {
			if !slices.Contains(list, a) {
				list = append(list, a)
			}
		}
	}
	if len(list) == 0 {
		return "any"
	}
	return strings.Join(list, " ")
}
