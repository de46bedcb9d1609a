package harden

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// directives returns the drop-in's KEY=VALUE lines, with the comment above each.
func directives(t *testing.T, o Options) (lines []string, why map[string]string) {
	t.Helper()
	out, err := Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	why = map[string]string{}
	prev := ""
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "=") && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
			why[l] = prev
		}
		prev = l
	}
	return lines, why
}

func contains(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

// Finding 1: egressd restarting or crashing must never stop or restart a
// protected service; the start gate keeps it from starting unprotected.
func TestGenerateDependencyModel(t *testing.T) {
	lines, why := directives(t, typical(252))
	for _, l := range lines {
		for _, bad := range []string{"Requires=", "BindsTo=", "Requisite=", "PartOf="} {
			if strings.HasPrefix(l, bad) {
				t.Errorf("drop-in has %s: an egressd restart would stop or restart the service", l)
			}
		}
	}
	for _, want := range []string{"After=egressd.service", "Wants=egressd.service",
		"ExecStartPre=+/usr/local/bin/egressd wait --user billing --timeout 30s"} {
		if !contains(lines, want) {
			t.Errorf("drop-in lacks %s:\n%s", want, strings.Join(lines, "\n"))
		}
	}
	if w := why["ExecStartPre=+/usr/local/bin/egressd wait --user billing --timeout 30s"]; !strings.Contains(w, "CAP_NET_ADMIN") {
		t.Errorf("the gate's comment does not say why it runs with +: %q", w)
	}
	o := typical(252)
	o.Egressd, o.GateTimeout = "/opt/egressd/bin/egressd", 5e9
	if lines, _ := directives(t, o); !contains(lines, "ExecStartPre=+/opt/egressd/bin/egressd wait --user billing --timeout 5s") {
		t.Errorf("--egressd / --gate-timeout not used:\n%s", strings.Join(lines, "\n"))
	}
	o.Egressd = "/opt/egressd/bin/egressd --user root"
	if _, err := Generate(o); err == nil {
		t.Error("an --egressd path with spaces was accepted")
	}
}

// Finding 3: a port below 1024 needs CAP_NET_BIND_SERVICE in the user
// namespace that owns the network namespace: not with PrivateUsers=yes.
func TestPrivilegedPortWithoutPrivateUsers(t *testing.T) {
	o := typical(252)
	o.Listen = []Listen{{"tcp", 80}}
	lines, why := directives(t, o)
	if !contains(lines, "AmbientCapabilities=CAP_NET_BIND_SERVICE") || !contains(lines, "PrivateUsers=no") || contains(lines, "PrivateUsers=yes") {
		t.Fatalf("tcp:80: want CAP_NET_BIND_SERVICE with PrivateUsers=no:\n%s", strings.Join(lines, "\n"))
	}
	if w := why["PrivateUsers=no"]; !strings.Contains(w, "tcp:80") || !strings.Contains(w, "user namespace") {
		t.Errorf("PrivateUsers=no comment does not say why: %q", w)
	}
	if lines, _ := directives(t, typical(252)); !contains(lines, "PrivateUsers=yes") {
		t.Error("tcp:8080 lost PrivateUsers=yes")
	}
}

// Finding 4: no promise of SocketBind* a -BPF_FRAMEWORK systemd ignores.
func TestSocketBindNeedsBPF(t *testing.T) {
	for _, c := range []struct {
		bpf      Feature
		promise  bool
		warnings int
	}{{FeatureYes, true, 0}, {FeatureNo, false, 1}, {FeatureUnknown, false, 1}} {
		o := typical(252)
		o.BPF = c.bpf
		_, why := directives(t, o)
		for _, l := range []string{"SocketBindDeny=any", "SocketBindAllow=tcp:8080"} {
			w := why[l]
			promised := !strings.Contains(w, "NOT ENFORCED") && !strings.Contains(w, "enforced only by")
			if promised != c.promise {
				t.Errorf("BPF %v: %s comment %q: promise %v, want %v", c.bpf, l, w, promised, c.promise)
			}
		}
		if n := len(o.Warnings(nil)); n != c.warnings {
			t.Errorf("BPF %v: %d warnings, want %d: %v", c.bpf, n, c.warnings, o.Warnings(nil))
		}
	}
	v, f := ParseSystemctlVersion("systemd 252 (252.39-1~deb12u2)\n+PAM +AUDIT -GNUTLS +ZSTD -BPF_FRAMEWORK -XKBCOMMON +UTMP\n")
	if v != 252 || f != FeatureNo {
		t.Errorf("ParseSystemctlVersion: %d %v", v, f)
	}
	if _, f := ParseSystemctlVersion("systemd 255 (255.4-1ubuntu8)\n+PAM +BPF_FRAMEWORK\n"); f != FeatureYes {
		t.Errorf("+BPF_FRAMEWORK read as %v", f)
	}
}

// Finding 5: paths under /var/lib, /var/cache, /var/log become directories
// systemd creates; other paths must exist, or a warning says so.
func TestWritableDirectories(t *testing.T) {
	o := typical(252)
	o.Writable = []string{"/var/lib/billing", "/var/cache/billing", "/var/log/billing", "/srv/billing"}
	lines, _ := directives(t, o)
	for _, want := range []string{"StateDirectory=billing", "CacheDirectory=billing", "LogsDirectory=billing", "ReadWritePaths=/srv/billing"} {
		if !contains(lines, want) {
			t.Errorf("lacks %s:\n%s", want, strings.Join(lines, "\n"))
		}
	}
	w := o.Warnings(func(p string) bool { return p != "/srv/billing" })
	if len(w) != 1 || !strings.Contains(w[0], "/srv/billing") || !strings.Contains(w[0], "226/NAMESPACE") {
		t.Errorf("warnings for a missing --writable: %v", w)
	}
	if w := o.Warnings(func(string) bool { return true }); len(w) != 0 {
		t.Errorf("warnings with every path present: %v", w)
	}
	old := o
	old.SystemdVersion = 232 // before StateDirectory=
	if lines, _ := directives(t, old); !contains(lines, "ReadWritePaths=/var/lib/billing /var/cache/billing /var/log/billing /srv/billing") {
		t.Errorf("systemd 232: want every path in ReadWritePaths:\n%s", strings.Join(lines, "\n"))
	}
}

// Findings 1, 4, 5, 6 in the audit.
func TestAuditDependencyEgressAndTarget(t *testing.T) {
	dir := t.TempDir()
	unit := filepath.Join(dir, "svc.service")
	o := Options{User: "svc", PrivateUsers: true, Writable: []string{"/srv/svc-missing"}, Listen: []Listen{{"tcp", 80}}}
	out, err := Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	// An old-style drop-in would have Requires=; add it to the unit itself.
	if err := os.WriteFile(unit, []byte("[Unit]\nRequires=egressd.service\n[Service]\nExecStart=/usr/bin/sleep infinity\n\n"+out), 0o644); err != nil {
		t.Fatal(err)
	}
	noAllowlist := func(string) (string, bool, error) { return "", false, nil }
	r, err := Audit(unit, Env{BPF: FeatureNo, AllowlistFor: noAllowlist, Exists: func(p string) bool { return p != "/srv/svc-missing" }})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, f := range r.Findings {
		kinds[f.Kind+":"+f.Target] = true
	}
	for _, k := range []string{"bounces:Requires", "not_enforced:SocketBindDeny", "path_missing:/srv/svc-missing", "not_restricted:svc"} {
		if !kinds[k] {
			t.Errorf("audit lacks %s: %v", k, r.Findings)
		}
	}
	for _, k := range []string{"weakened:PrivateUsers", "ordering:ExecStartPre", "ordering:[Unit]"} {
		if kinds[k] {
			t.Errorf("audit reports %s for a generated drop-in: %v", k, r.Findings)
		}
	}
	// The same unit, fixed: no Requires=, the path present, an allowlist, BPF enforced.
	os.WriteFile(unit, []byte("[Service]\nExecStart=/usr/bin/sleep infinity\n\n"+out), 0o644) //nolint:errcheck
	r, err = Audit(unit, Env{BPF: FeatureYes, AllowlistFor: func(string) (string, bool, error) { return "svc", true, nil }, Exists: func(string) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range r.Findings {
		if f.Kind != "runs_as_root" && f.Kind != "user_unknown" && f.Kind != "owned_by_user" && f.Kind != "group_writable" && f.Kind != "world_writable" {
			t.Errorf("fixed unit: %v", f)
		}
	}
	r, _ = Audit(unit, Env{AllowlistFor: func(string) (string, bool, error) { return "", false, errors.New("allow.d/x.yaml:3:1: bad") }})
	unknown := false
	for _, f := range r.Findings {
		unknown = unknown || f.Kind == "egress_unknown"
	}
	if !unknown {
		t.Errorf("unreadable configuration not reported: %v", r.Findings)
	}
	// A gate without + can never read nf_tables.
	os.WriteFile(unit, []byte("[Unit]\nAfter=egressd.service\nWants=egressd.service\n[Service]\nUser=svc\nExecStartPre=/usr/local/bin/egressd wait --user svc\nExecStart=/usr/bin/sleep infinity\n"), 0o644) //nolint:errcheck
	r, _ = Audit(unit, Env{})
	found := false
	for _, f := range r.Findings {
		found = found || (f.Kind == "ordering" && f.Target == "ExecStartPre" && strings.Contains(f.Fix, "ExecStartPre=+"))
	}
	if !found {
		t.Errorf("a gate without + not reported: %v", r.Findings)
	}
}

// A socket-activated unit's sockets are created by systemd as root: egressd
// cannot restrict them, and the audit says so (red team R1).
func TestAuditSocketActivation(t *testing.T) {
	dir := t.TempDir()
	unit := filepath.Join(dir, "svc.service")
	os.WriteFile(unit, []byte("[Unit]\nAfter=egressd.service\nWants=egressd.service\n[Service]\nUser=svc\nExecStart=/usr/bin/sleep infinity\n"), 0o644) //nolint:errcheck
	has := func() bool {
		r, err := Audit(unit, Env{})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range r.Findings {
			if f.Kind == "not_restricted" && strings.Contains(f.Detail, "socket activation") {
				return true
			}
		}
		return false
	}
	if has() {
		t.Fatal("socket activation reported for a unit without sockets")
	}
	os.WriteFile(filepath.Join(dir, "svc.socket"), []byte("[Socket]\nListenDatagram=5353\n"), 0o644) //nolint:errcheck
	if !has() {
		t.Fatal("svc.socket beside svc.service not reported")
	}
}

// Issue 22: moving from a source install (/usr/local/bin/egressd) to the
// package (/usr/bin/egressd) leaves every hardened service with a start
// gate that runs a binary that is gone: the service fails at its next
// start. The audit names it, with the fix; a gate whose binary is there
// is not reported (control).
func TestAuditGateBinaryMissing(t *testing.T) {
	dir := t.TempDir()
	unit := filepath.Join(dir, "svc.service")
	body := "[Unit]\nAfter=egressd.service\nWants=egressd.service\n[Service]\nUser=svc\nExecStartPre=+/usr/local/bin/egressd wait --user svc --timeout 90s\nExecStart=/usr/bin/sleep infinity\n"
	if err := os.WriteFile(unit, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		present string
		want    bool
	}{{"binary gone", "/usr/bin/egressd", true}, {"binary there (control)", "/usr/local/bin/egressd", false}} {
		r, err := Audit(unit, Env{Egressd: "/usr/bin/egressd", Exists: func(p string) bool { return p == c.present }})
		if err != nil {
			t.Fatal(err)
		}
		var got *Finding
		for i, f := range r.Findings {
			if f.Kind == "gate_missing" {
				got = &r.Findings[i]
			}
		}
		if (got != nil) != c.want {
			t.Errorf("%s: gate_missing %v, want %v: %v", c.name, got, c.want, r.Findings)
			continue
		}
		if got != nil && (got.Target != "/usr/local/bin/egressd" || !strings.Contains(got.Fix, "ExecStartPre=+/usr/bin/egressd wait --user svc --timeout 90s")) {
			t.Errorf("%s: %+v: want the missing binary named and the gate rewritten to this egressd", c.name, *got)
		}
	}
}

// The audit knows listen:: a note that egressd enforces the allowlist's
// list (so an unenforced or missing SocketBindDeny= is no hole), and a
// finding when SocketBindAllow= and listen: name different ports.
func TestAuditListen(t *testing.T) {
	dir := t.TempDir()
	unit := filepath.Join(dir, "svc.service")
	o := Options{User: "svc", PrivateUsers: true, Listen: []Listen{{"tcp", 8080}}}
	out, err := Generate(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(unit, []byte("[Service]\nExecStart=/usr/bin/sleep infinity\n\n"+out), 0o644); err != nil {
		t.Fatal(err)
	}
	withListen := func(entries ...string) func(string, string) ([]ListenRule, error) {
		return func(u, user string) ([]ListenRule, error) {
			if u != "svc.service" || user != "svc" {
				t.Errorf("ListenFor(%q, %q)", u, user)
			}
			if entries == nil {
				return nil, nil
			}
			return []ListenRule{{Allowlist: "svc", Listen: entries}}, nil
		}
	}
	kinds := func(r *Report) string {
		var k []string
		for _, f := range r.Findings {
			if strings.Contains(f.Target, "SocketBind") {
				k = append(k, f.Kind+":"+f.Target)
			}
		}
		return strings.Join(k, " ")
	}
	for _, c := range []struct {
		name    string
		bpf     Feature
		listen  []string
		want    string
		note    string
		noNotes bool
	}{
		{"no listen:, systemd ignores SocketBind*", FeatureNo, nil, "not_enforced:SocketBindDeny", "", true},
		{"listen: matches, systemd ignores SocketBind*", FeatureNo, []string{"tcp:8080"}, "", "egressd enforces user allowlist svc's listen: [tcp:8080]", false},
		{"listen: matches, systemd enforces", FeatureYes, []string{"tcp:8080"}, "", "egressd enforces user allowlist svc's listen: [tcp:8080]", false},
		{"listen: differs", FeatureYes, []string{"tcp:9090"}, "listen_mismatch:SocketBindAllow", "egressd enforces user allowlist svc's listen: [tcp:9090]", false},
	} {
		r, err := Audit(unit, Env{BPF: c.bpf, ListenFor: withListen(c.listen...), Exists: func(string) bool { return true }})
		if err != nil {
			t.Fatal(err)
		}
		if got := kinds(r); got != c.want {
			t.Errorf("%s: SocketBind findings %q, want %q (%v)", c.name, got, c.want, r.Findings)
		}
		notes := strings.Join(r.Notes, "\n")
		if (c.note != "" && !strings.Contains(notes, c.note)) || (c.noNotes && notes != "") {
			t.Errorf("%s: notes %q, want %q", c.name, notes, c.note)
		}
	}
}

// A unit allowlist's listen: and its user's both apply: the audit names
// both, and compares SocketBindAllow= with what both allow.
func TestAuditListenUnitAndUser(t *testing.T) {
	dir := t.TempDir()
	unit := filepath.Join(dir, "svc.service")
	out, err := Generate(Options{User: "svc", PrivateUsers: true, Listen: []Listen{{"tcp", 8080}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(unit, []byte("[Service]\nExecStart=/usr/bin/sleep infinity\n\n"+out), 0o644); err != nil {
		t.Fatal(err)
	}
	rules := func(unitListen ...string) func(string, string) ([]ListenRule, error) {
		return func(string, string) ([]ListenRule, error) {
			return []ListenRule{{Allowlist: "svc", Unit: true, Listen: unitListen}, {Allowlist: "svcuser", Listen: []string{"tcp:8080"}}}, nil
		}
	}
	for _, c := range []struct {
		name     string
		unit     []string
		mismatch bool
		both     string
	}{
		{"both allow 8080 (the unit more)", []string{"tcp:8080", "tcp:9090"}, false, "[tcp:8080]"},
		{"the unit allows none", []string{}, true, "[]"},
	} {
		r, err := Audit(unit, Env{BPF: FeatureNo, ListenFor: rules(c.unit...), Exists: func(string) bool { return true }})
		if err != nil {
			t.Fatal(err)
		}
		notes := strings.Join(r.Notes, "\n")
		for _, want := range []string{"unit allowlist svc's listen:", "user allowlist svcuser's listen: [tcp:8080]", "both rules apply: the service may listen only on " + c.both} {
			if !strings.Contains(notes, want) {
				t.Errorf("%s: notes %q, want %q", c.name, notes, want)
			}
		}
		mismatch := false
		for _, f := range r.Findings {
			if f.Target == "SocketBindDeny" {
				t.Errorf("%s: %v though listen: is enforced", c.name, f)
			}
			mismatch = mismatch || f.Kind == "listen_mismatch"
		}
		if mismatch != c.mismatch {
			t.Errorf("%s: listen_mismatch %v, want %v (%v)", c.name, mismatch, c.mismatch, r.Findings)
		}
	}
}

// A unit allowlist with listen: and a file descriptor store: a socket kept
// there across a restart listens on any port (fdstore_listen). The store of
// a unit held only by its user's listen: (the socket keeps its uid), or
// switched off, is no finding.
func TestAuditFDStoreListen(t *testing.T) {
	dir := t.TempDir()
	unit := filepath.Join(dir, "vault.service")
	for _, c := range []struct {
		name  string
		store string
		unit  bool
		want  bool
	}{
		{"unit listen:, store on", "FileDescriptorStoreMax=1\n", true, true},
		{"unit listen:, store off", "FileDescriptorStoreMax=0\n", true, false},
		{"unit listen:, store on then off (drop-in)", "FileDescriptorStoreMax=4\nFileDescriptorStoreMax=0\n", true, false},
		{"unit listen:, no store", "", true, false},
		{"user listen:, store on", "FileDescriptorStoreMax=1\n", false, false},
	} {
		if err := os.WriteFile(unit, []byte("[Service]\nUser=vault\nExecStart=/usr/bin/sleep infinity\n"+c.store), 0o644); err != nil {
			t.Fatal(err)
		}
		listen := func(string, string) ([]ListenRule, error) {
			return []ListenRule{{Allowlist: "vault", Unit: c.unit, Listen: []string{"tcp:8095"}}}, nil
		}
		r, err := Audit(unit, Env{BPF: FeatureNo, ListenFor: listen, Exists: func(string) bool { return true }})
		if err != nil {
			t.Fatal(err)
		}
		got := false
		for _, f := range r.Findings {
			got = got || f.Kind == "fdstore_listen"
		}
		if got != c.want {
			t.Errorf("%s: fdstore_listen %v, want %v (%v)", c.name, got, c.want, r.Findings)
		}
	}
	// What harden writes for a unit allowlist with listen: passes.
	l := "tcp:8095"
	out, err := Generate(Options{GateUnit: "vault.service", User: "vault", AllowlistListen: &l, Listen: []Listen{{"tcp", 8095}}, PrivateUsers: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(unit, []byte("[Service]\nExecStart=/usr/bin/sleep infinity\nFileDescriptorStoreMax=1\n\n"+out), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := Audit(unit, Env{BPF: FeatureNo, ListenFor: func(string, string) ([]ListenRule, error) {
		return []ListenRule{{Allowlist: "vault", Unit: true, Listen: []string{l}}}, nil
	}, Exists: func(string) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range r.Findings {
		if f.Kind == "fdstore_listen" {
			t.Errorf("the drop-in harden writes: %v", f)
		}
	}
}

// A unit that lets 32-bit system calls back in after the generated drop-in
// (SystemCallArchitectures=native x86, or an empty assignment that resets
// the list) dodges the syscall filter and, for listen:, the cgroup
// setsockopt program (the kernel runs none for compat calls): weakened.
func TestAuditSystemCallArchitecturesWidened(t *testing.T) {
	out, err := Generate(Options{User: "svc", PrivateUsers: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		extra string
		weak  bool
	}{
		{"", false},
		{"SystemCallArchitectures=native\n", false},
		{"SystemCallArchitectures=x86\n", true},
		{"SystemCallArchitectures=native x86\n", true},
		{"SystemCallArchitectures=\n", true},
		{"SystemCallArchitectures=\nSystemCallArchitectures=native\n", false},
	} {
		unit := filepath.Join(t.TempDir(), "svc.service")
		body := "[Service]\nExecStart=/usr/bin/sleep infinity\n\n" + out + "\n[Service]\n" + c.extra
		if err := os.WriteFile(unit, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := Audit(unit, Env{AllowlistFor: func(string) (string, bool, error) { return "svc", true, nil }, Exists: func(string) bool { return true }})
		if err != nil {
			t.Fatal(err)
		}
		got := false
		for _, f := range r.Findings {
			if f.Kind == "weakened" && f.Target == "SystemCallArchitectures" {
				got = true
			}
		}
		if got != c.weak {
			t.Errorf("%q: weakened SystemCallArchitectures = %v, want %v: %v", c.extra, got, c.weak, r.Findings)
		}
	}
}
