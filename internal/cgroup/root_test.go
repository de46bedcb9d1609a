package cgroup

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egressd/egressd/config"
)

// Root and Self agree with the kernel: this process's cgroup is a
// directory of the hierarchy Root finds (unified or hybrid host), and its
// id is that directory's inode.
func TestRootAndSelf(t *testing.T) {
	root, err := Root()
	if err != nil {
		if strings.Contains(err.Error(), "no cgroup2") {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	self, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(root, self)
	st, err := os.Stat(p)
	if err != nil || !st.IsDir() {
		t.Fatalf("Root %s + Self %s = %s: %v, want this process's cgroup directory", root, self, p, err)
	}
	procs, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains("\n"+string(procs), "\n"+itoa(os.Getpid())+"\n") {
		t.Errorf("%s/cgroup.procs does not list this process (%d)", p, os.Getpid())
	}
	if id, err := ID(p); err != nil || id == 0 {
		t.Errorf("ID(%s) = %d, %v", p, id, err)
	}
}

func itoa(n int) string {
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// Mount points in /proc/self/mountinfo are octal-escaped.
func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{`/sys/fs/cgroup`: "/sys/fs/cgroup", `/mnt/with\040space`: "/mnt/with space", `/a\011b\012c\134d`: "/a\tb\nc\\d"} {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

// A hierarchy that cannot be read is an error, not "no unit runs"; a
// configuration without unit allowlists does not look at all.
func TestRestrictedErrors(t *testing.T) {
	cfg := &config.Config{Allowlists: []*config.Allowlist{{Name: "shop", Unit: "shop.service"}}}
	if _, err := Restricted(filepath.Join(t.TempDir(), "missing"), cfg); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing root: %v", err)
	}
	users := &config.Config{Allowlists: []*config.Allowlist{{Name: "u", User: "x"}}}
	if found, err := Restricted(filepath.Join(t.TempDir(), "missing"), users); err != nil || found != nil {
		t.Errorf("no unit allowlists: %v, %v", found, err)
	}
	if _, err := ID(filepath.Join(t.TempDir(), "gone")); err == nil {
		t.Error("ID of a missing cgroup")
	}
}

// Files in the tree are not cgroups; a slice deeper than MaxLevel is not
// searched.
func TestFindDepthAndFiles(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"system.slice/web.service", strings.Repeat("a.slice/", MaxLevel) + "deep.service"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "system.slice", "cgroup.procs"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	found, err := Find(root, map[string]bool{"web.service": true, "deep.service": true, "cgroup.procs": true}, MaxLevel)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0].Path != "system.slice/web.service" {
		t.Errorf("found %+v, want system.slice/web.service alone", found)
	}
}

// A slice that cannot be read is an error naming it: the units under it
// would otherwise go unrestricted unnoticed.
func TestFindUnreadableSlice(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads a directory of mode 0")
	}
	root := t.TempDir()
	locked := filepath.Join(root, "locked.slice")
	if err := os.Mkdir(locked, 0); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(locked, 0o755) //nolint:errcheck // so that TempDir can remove it
	if _, err := Find(root, map[string]bool{"web.service": true}, MaxLevel); err == nil || !strings.Contains(err.Error(), "locked.slice") {
		t.Errorf("an unreadable slice: %v", err)
	}
}

// Restricted("") looks under the hierarchy Root finds; a unit that does
// not run there has no cgroup (not an error).
func TestRestrictedOnThisHost(t *testing.T) {
	if _, err := Root(); err != nil {
		t.Skip(err)
	}
	cfg := &config.Config{Allowlists: []*config.Allowlist{{Name: "x", Unit: "egressd-test-not-running.service"}}}
	found, err := Restricted("", cfg)
	if err != nil || len(found) != 0 {
		t.Errorf("Restricted(\"\") = %v, %v; want nothing found", found, err)
	}
}
