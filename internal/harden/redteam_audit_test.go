//go:build linux

package harden

// Red-team findings (second round): `harden --audit` says a service cannot
// modify its code paths when it can. Each test FAILS while the hole is open.
//
//	go test -tags redteam ./internal/harden -run TestRedteam -count=1 -v

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/egressd/egressd/internal/systest"
	"golang.org/x/sys/unix"
)

const rtUID, rtGID = 61234, 61235

func rtDir(t *testing.T) string {
	systest.Require(t) // chown needs root
	root := t.TempDir()
	os.Chmod(root, 0o755) //nolint:errcheck
	return root
}

func findingsFor(fs []Finding) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString(f.Kind + " " + f.Target + "\n")
	}
	return b.String()
}

// ExecStart=/opt/bin/server where server is a root-owned symlink into a
// directory the service user owns (a common deploy layout: a "current"
// release link). checkPath lstat()s the link and walks the link's own
// parents; the target, which the user can replace at will (persistence,
// the very thing the ownership check is for), is never looked at.
func TestRedteamAuditFollowsSymlinkedCode(t *testing.T) {
	root := rtDir(t)
	for _, d := range []string{"opt/bin", "srv/app"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	app := filepath.Join(root, "srv/app")
	target := filepath.Join(app, "server")
	if err := os.WriteFile(target, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{app, target} {
		if err := os.Chown(p, rtUID, rtGID); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(root, "opt/bin/server")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	// Control: the target named directly is reported.
	direct := OwnershipFindings([]string{target}, nil, rtUID, map[uint64]string{rtGID: "svc"}, "svc")
	if !strings.Contains(findingsFor(direct), "owned_by_user "+target) {
		t.Fatalf("control: the user's own binary not reported:\n%s", findingsFor(direct))
	}
	got := OwnershipFindings([]string{link}, nil, rtUID, map[uint64]string{rtGID: "svc"}, "svc")
	if !strings.Contains(findingsFor(got), "owned_by_user") {
		t.Errorf("ExecStart=%s -> %s (owned by the service user): no owned_by_user finding; audit says:\n%s", link, target, findingsFor(got))
	}
}

// A POSIX ACL entry user:svc:rwx on the service's binary (setfacl is how
// many deploy pipelines grant a user write). The mode reads 0775 root:root
// (the group bits mirror the ACL mask) and root's group is not the user's,
// so checkPath finds nothing; config/trust.go reads ACLs, the audit does not.
func TestRedteamAuditSeesACLWriter(t *testing.T) {
	root := rtDir(t)
	bin := filepath.Join(root, "server")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// user::rwx user:61234:rwx group::r-x mask::rwx other::r-x
	b := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range [][3]uint32{{0x01, 7, 0}, {0x02, 7, rtUID}, {0x04, 5, 0}, {0x10, 7, 0}, {0x20, 5, 0}} {
		b = binary.LittleEndian.AppendUint16(b, uint16(e[0]))
		b = binary.LittleEndian.AppendUint16(b, uint16(e[1]))
		b = binary.LittleEndian.AppendUint32(b, e[2])
	}
	if err := unix.Setxattr(bin, "system.posix_acl_access", b, 0); err != nil {
		t.Skipf("no POSIX ACLs here: %v", err)
	}
	// The service user can really write it: the kernel's view, not ours.
	os.Chmod(filepath.Dir(root), 0o755) //nolint:errcheck // t.TempDir's own parent
	cmd := exec.Command("/bin/sh", "-c", `echo '# modified' >> "$1"`, "sh", bin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: rtUID, Gid: rtGID}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("control: uid %d cannot write %s through its ACL entry: %v %s", rtUID, bin, err, out)
	}
	got := OwnershipFindings([]string{bin}, nil, rtUID, map[uint64]string{rtGID: "svc"}, "svc")
	if len(got) == 0 {
		t.Errorf("%s has an ACL entry user:%d:rwx, the audit reports nothing", bin, rtUID)
	}
}

// The start gate exists to keep a service from starting unrestricted, and
// the audit reports a unit without one ("ordering"). But it accepts any
// ExecStartPre= whose binary is egressd and whose verb is wait: with the
// "-" prefix systemd ignores the gate's exit code (the service starts
// whether or not egressd enforces its user), and a gate that waits for
// another user (a copy from another unit) gates nothing. Both pass the
// audit without a finding today.
func TestRedteamAuditIgnoredOrForeignGate(t *testing.T) {
	dir := t.TempDir()
	unit := filepath.Join(dir, "svc.service")
	out, err := Generate(Options{User: "svc", PrivateUsers: true, Listen: []Listen{{"tcp", 80}}})
	if err != nil {
		t.Fatal(err)
	}
	gate := ""
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "ExecStartPre=+") && strings.Contains(l, " wait ") {
			gate = l
		}
	}
	if gate == "" {
		t.Fatalf("no gate in the generated drop-in:\n%s", out)
	}
	env := Env{BPF: FeatureYes, AllowlistFor: func(string) (string, bool, error) { return "svc", true, nil }, Exists: func(string) bool { return true }}
	gateFindings := func(body string) []Finding {
		t.Helper()
		if err := os.WriteFile(unit, []byte("[Service]\nExecStart=/usr/bin/sleep infinity\n\n"+body), 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := Audit(unit, env)
		if err != nil {
			t.Fatal(err)
		}
		var fs []Finding
		for _, f := range r.Findings {
			if f.Kind == "ordering" && f.Target == "ExecStartPre" {
				fs = append(fs, f)
			}
		}
		return fs
	}
	if fs := gateFindings(out); len(fs) != 0 {
		t.Fatalf("control: the generated gate is reported: %v", fs)
	}
	for what, line := range map[string]string{
		"exit code ignored (-)": strings.Replace(gate, "ExecStartPre=+", "ExecStartPre=-+", 1),
		"another user's gate":   strings.Replace(gate, "--user svc", "--user othersvc", 1),
	} {
		if line == gate {
			t.Fatalf("%s: could not derive it from %q", what, gate)
		}
		if fs := gateFindings(strings.Replace(out, gate, line, 1)); len(fs) == 0 {
			t.Errorf("%s: %s: the audit reports nothing", what, line)
		}
	}
}
