package harden

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func unitFrom(t *testing.T, text string) *Unit {
	t.Helper()
	p := filepath.Join(t.TempDir(), "svc.service")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	u, err := LoadUnit(p)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// The paths the service may write: ReadWritePaths (its -/+ prefixes
// dropped) and the directories systemd makes for it, under their bases.
func TestWritablePaths(t *testing.T) {
	u := unitFrom(t, `[Service]
ReadWritePaths=-/srv/data/ +/var/spool/x
ReadWritePaths=/opt/app//cache
StateDirectory=app app/sub
CacheDirectory=app:shared
LogsDirectory=app
RuntimeDirectory=app
`)
	got := writablePaths(u)
	sort.Strings(got)
	want := []string{"/opt/app/cache", "/run/app", "/srv/data", "/var/cache/app", "/var/lib/app", "/var/lib/app/sub", "/var/log/app", "/var/spool/x"}
	if !slices.Equal(got, want) {
		t.Errorf("writablePaths = %v\nwant %v", got, want)
	}
}

// The paths whose change would let an exploit persist: the binaries of
// every Exec line (prefixes stripped), files its command lines name that
// exist (also as --flag=/path), the working directory, environment files
// and configuration directories.
func TestCodePaths(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "app.yaml")
	if err := os.WriteFile(conf, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	u := unitFrom(t, `[Service]
ExecStartPre=-+/usr/local/bin/prep --check
ExecStart=@/opt/app/bin/app app --config=`+conf+` /no/such/file relative
ExecReload=/bin/kill -HUP $MAINPID
WorkingDirectory=-/opt/app
EnvironmentFile=-/etc/default/app
EnvironmentFile=relative.env
ConfigurationDirectory=app other
`)
	got := codePaths(u)
	sort.Strings(got)
	want := []string{"/bin/kill", "/etc/app", "/etc/default/app", "/etc/other", "/opt/app", "/opt/app/bin/app", "/usr/local/bin/prep", conf}
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("codePaths = %v\nwant %v", got, want)
	}
}

func TestUnder(t *testing.T) {
	dirs := []string{"/var/lib/app", "/run/app"}
	for p, want := range map[string]bool{"/var/lib/app": true, "/var/lib/app/x": true, "/var/lib/apple": false, "/run": false} {
		if got := under(p, dirs); got != want {
			t.Errorf("under(%s) = %v, want %v", p, got, want)
		}
	}
}

// The service user owning its binary is a finding with the chown fix; a
// path it may write anyway (ReadWritePaths) is not one; a user that does
// not exist here is said, not taken for a clean audit.
func TestOwnership(t *testing.T) {
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir() // ours, like everything in it
	bin := filepath.Join(dir, "bin", "server")
	data := filepath.Join(dir, "data")
	for _, d := range []string{filepath.Dir(bin), data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	u := unitFrom(t, "[Service]\nExecStart="+bin+"\nReadWritePaths="+dir+"/data\nWorkingDirectory="+data+"\n")
	fs := ownership(u, me.Username)
	owned := map[string]Finding{}
	for _, f := range fs {
		if f.Kind == "owned_by_user" {
			owned[f.Target] = f
		}
	}
	f, ok := owned[bin]
	if !ok {
		t.Fatalf("no owned_by_user finding for %s: %v", bin, fs)
	}
	if f.Fix != "chown root: "+bin || !strings.Contains(f.Detail, me.Username) {
		t.Errorf("finding %+v: want the chown fix and the user named", f)
	}
	if _, ok := owned[filepath.Dir(bin)]; !ok {
		t.Errorf("the binary's directory, also the user's, is not reported: %v", fs)
	}
	if _, ok := owned[data]; ok {
		t.Errorf("%s, writable by the unit's own ReadWritePaths, is reported: %v", data, fs)
	}

	fs = ownership(u, "egressd-no-such-user")
	if len(fs) != 1 || fs[0].Kind != "user_unknown" {
		t.Errorf("ownership for a missing user: %v, want one user_unknown finding", fs)
	}
}

func TestWriteText(t *testing.T) {
	var b bytes.Buffer
	(&Report{Unit: "web.service", Files: []string{"/etc/systemd/system/web.service", "/etc/systemd/system/web.service.d/egressd.conf"},
		Score: 2.1, Findings: []Finding{{"missing", "ProtectSystem", "not set", "ProtectSystem=strict"}}}).WriteText(&b)
	want := "egressd harden --audit web.service\n" +
		"  drop-ins: /etc/systemd/system/web.service.d/egressd.conf\n" +
		"  exposure (systemd-analyze security): 2.1\n" +
		"  missing         ProtectSystem: not set\n      → ProtectSystem=strict\n"
	if b.String() != want {
		t.Errorf("WriteText:\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	(&Report{Unit: "db.service", Files: []string{"/x"}, Score: -1, ScoreNote: "systemd-analyze is missing"}).WriteText(&b)
	want = "egressd harden --audit db.service\n  exposure: unknown (systemd-analyze is missing)\n  nothing found\n"
	if b.String() != want {
		t.Errorf("WriteText without findings or score:\n%s\nwant\n%s", b.String(), want)
	}
}

func TestLastLine(t *testing.T) {
	for in, want := range map[string]string{"one\ntwo\nthree\n": "three", "only": "only", "": ""} {
		if got := lastLine([]byte(in)); got != want {
			t.Errorf("lastLine(%q) = %q, want %q", in, got, want)
		}
	}
}

// Keys is every directive the generator can write, once each, sorted: the
// audit's list of what a drop-in of ours may set.
func TestKeys(t *testing.T) {
	keys := Keys()
	if !sort.StringsAreSorted(keys) {
		t.Errorf("Keys not sorted: %v", keys)
	}
	for i := 1; i < len(keys); i++ {
		if keys[i] == keys[i-1] {
			t.Errorf("Keys lists %s twice", keys[i])
		}
	}
	for _, k := range []string{"User", "ProtectSystem", "ReadWritePaths", "SocketBindAllow", "PrivateUsers", "AppArmorProfile"} {
		if !slices.Contains(keys, k) {
			t.Errorf("Keys lacks %s: %v", k, keys)
		}
	}
}

// aclOf is a system.posix_acl_access value: version 2, then (tag, perm, id)
// entries.
func aclOf(ents ...[3]uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range ents {
		b = binary.LittleEndian.AppendUint16(b, uint16(e[0]))
		b = binary.LittleEndian.AppendUint16(b, uint16(e[1]))
		b = binary.LittleEndian.AppendUint32(b, e[2])
	}
	return b
}

// An ACL entry that lets the service user, or a group it is in, write a
// code path is named (after the mask); read-only or masked entries, and
// other users' entries, are not.
func TestACLWriter(t *testing.T) {
	const svc, svcGroup, other = 61234, 61235, 61236
	groups := map[uint64]string{svcGroup: "svc"}
	for _, c := range []struct {
		name string
		acl  [][3]uint32
		want string
	}{
		{"user entry rwx", [][3]uint32{{0x01, 7, 0}, {0x02, 7, svc}, {0x04, 5, 0}, {0x10, 7, 0}, {0x20, 5, 0}}, "user:61234"},
		{"group entry rw", [][3]uint32{{0x01, 7, 0}, {0x04, 5, 0}, {0x08, 6, svcGroup}, {0x10, 7, 0}, {0x20, 5, 0}}, "group:svc"},
		{"masked to read", [][3]uint32{{0x01, 7, 0}, {0x02, 7, svc}, {0x04, 5, 0}, {0x10, 5, 0}, {0x20, 5, 0}}, ""},
		{"read-only entry", [][3]uint32{{0x01, 7, 0}, {0x02, 5, svc}, {0x04, 5, 0}, {0x10, 7, 0}, {0x20, 5, 0}}, ""},
		{"another user's entry", [][3]uint32{{0x01, 7, 0}, {0x02, 7, other}, {0x04, 5, 0}, {0x10, 7, 0}, {0x20, 5, 0}}, ""},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "server")
			if err := os.WriteFile(p, nil, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := unix.Setxattr(p, "system.posix_acl_access", aclOf(c.acl...), 0); err != nil {
				t.Skipf("no POSIX ACLs on %s: %v", filepath.Dir(p), err)
			}
			if got := aclWriter(p, svc, groups); got != c.want {
				t.Errorf("aclWriter = %q, want %q", got, c.want)
			}
			fs := checkPath(p, svc, groups, "svc")
			if found := slices.ContainsFunc(fs, func(f Finding) bool { return f.Kind == "acl_writable" }); found != (c.want != "") {
				t.Errorf("checkPath findings %v, want acl_writable %v", fs, c.want != "")
			}
		})
	}
	if got := aclWriter(filepath.Join(t.TempDir(), "none"), svc, groups); got != "" {
		t.Errorf("a file without an ACL: %q", got)
	}
}

// Without chown (any user): a code path writable by a group the service
// user is in, or by every user, is a finding with its chmod fix; a sticky
// directory's world write bit is not (others cannot replace what is not
// theirs), nor a group the user is not in.
func TestCheckPathModes(t *testing.T) {
	const svc = 61234
	dir := t.TempDir()
	gid := uint64(os.Getgid())
	file := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kinds := func(p string, groups map[uint64]string) string {
		var out []string
		for _, f := range checkPath(p, svc, groups, "svc") {
			out = append(out, f.Kind+" "+f.Fix)
		}
		return strings.Join(out, "; ")
	}
	inGroup := map[uint64]string{gid: "deploy"}
	gw := file("gw", 0o664)
	if got, want := kinds(gw, inGroup), "group_writable chmod g-w "+gw; got != want {
		t.Errorf("group-writable, user in the group: %q, want %q", got, want)
	}
	if got := kinds(gw, nil); got != "" {
		t.Errorf("group-writable, user not in the group: %q", got)
	}
	ww := file("ww", 0o646)
	if got, want := kinds(ww, nil), "world_writable chmod o-w "+ww; got != want {
		t.Errorf("world-writable: %q, want %q", got, want)
	}
	sticky := filepath.Join(dir, "sticky")
	if err := os.Mkdir(sticky, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sticky, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	if got := kinds(sticky, nil); got != "" {
		t.Errorf("a sticky directory: %q", got)
	}
	if got := kinds(filepath.Join(dir, "missing"), inGroup); got != "" {
		t.Errorf("a missing path: %q", got)
	}
}
