package harden

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A unit allowlist's drop-in resets ExecStartPre=, runs the gate first, then
// the unit's own lines: a drop-in's lines would otherwise run after the
// unit's, and an ExecStartPre= of the unit would connect out unrestricted.
func TestGenerateUnitGate(t *testing.T) {
	out, err := Generate(Options{Unit: "shop.service", GateUnit: "shop.service", OwnStartPre: []string{"/usr/bin/fetch-config", "-/bin/true"}, PrivateUsers: true})
	if err != nil {
		t.Fatal(err)
	}
	var pre []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "ExecStartPre=") {
			pre = append(pre, l)
		}
		if strings.HasPrefix(l, "User=") || strings.HasPrefix(l, "Group=") {
			t.Errorf("%q without --user: the unit's own User=/DynamicUser= must stay", l)
		}
	}
	want := []string{"ExecStartPre=", "ExecStartPre=+/usr/local/bin/egressd wait --unit shop.service --timeout 30s", "ExecStartPre=/usr/bin/fetch-config", "ExecStartPre=-/bin/true"}
	if strings.Join(pre, "\n") != strings.Join(want, "\n") {
		t.Fatalf("ExecStartPre lines:\n%s\nwant:\n%s", strings.Join(pre, "\n"), strings.Join(want, "\n"))
	}
	if strings.Contains(out, "\nNFTSet=") {
		t.Errorf("NFTSet= for systemd 252:\n%s", out)
	}
	if out, err := Generate(Options{GateUnit: "shop.service", SystemdVersion: 257}); err != nil || !strings.Contains(out, "\nNFTSet=cgroup:inet:egressd_units:units\n") {
		t.Errorf("no NFTSet= for systemd 257: %v\n%s", err, out)
	}
	if _, err := Generate(Options{GateUnit: "system.slice"}); err == nil {
		t.Fatal("a gate for system.slice was generated")
	}
	if out, err := Generate(Options{GateUnit: "shop.service", User: "www-data"}); err != nil || !strings.Contains(out, "\nUser=www-data\n") {
		t.Fatalf("with --user: %v\n%s", err, out)
	}
}

func TestOwnStartPre(t *testing.T) {
	etc, lib := t.TempDir(), t.TempDir()
	write := func(p, body string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(lib, "php@.service"), "[Service]\nExecStartPre=/bin/a\nExecStartPre=/bin/b\nExecStart=/bin/php\n")
	write(filepath.Join(lib, "php@shop.service.d", "10-x.conf"), "[Service]\nExecStartPre=/bin/c\n")
	// A hardening drop-in written earlier: its reset and gate are not the unit's own.
	write(filepath.Join(etc, "php@shop.service.d", "hardening.conf"), "[Service]\nExecStartPre=\nExecStartPre=+/usr/bin/egressd wait --unit php@shop.service --timeout 30s\nExecStartPre=/bin/a\nExecStartPre=/bin/b\nExecStartPre=/bin/c\n")
	dirs := []string{etc, lib}
	p, err := FindUnitFile("php@shop.service", dirs)
	if err != nil || p != filepath.Join(lib, "php@.service") {
		t.Fatalf("FindUnitFile = %q, %v", p, err)
	}
	got, err := OwnStartPre(p, "php@shop.service", dirs)
	if err != nil || strings.Join(got, ",") != "/bin/a,/bin/b,/bin/c" {
		t.Fatalf("OwnStartPre = %v, %v", got, err)
	}
	if _, err := FindUnitFile("none.service", dirs); err == nil {
		t.Fatal("found a unit file that does not exist")
	}
}

// A unit allowlist with listen: turns the unit's file descriptor store off:
// a socket kept there across a restart keeps the old run's cgroup, which
// egressd no longer restricts. Without a listen restriction, or for a user
// allowlist (the socket keeps its uid), the store is left alone.
func TestGenerateUnitFDStore(t *testing.T) {
	listen := "tcp:8095"
	for _, c := range []struct {
		name string
		o    Options
		want bool
	}{
		{"unit allowlist with listen:", Options{GateUnit: "vault.service", AllowlistListen: &listen}, true},
		{"unit with --listen", Options{GateUnit: "vault.service", Listen: []Listen{{"tcp", 8095}}}, true},
		{"unit without listen", Options{GateUnit: "vault.service"}, false},
		{"user allowlist with listen:", Options{User: "vault", AllowlistListen: &listen, Listen: []Listen{{"tcp", 8095}}}, false},
	} {
		out, err := Generate(c.o)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := strings.Contains(out, "\nFileDescriptorStoreMax=0\n"); got != c.want {
			t.Errorf("%s: FileDescriptorStoreMax=0 written: %v, want %v\n%s", c.name, got, c.want, out)
		}
	}
}
