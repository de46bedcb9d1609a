package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// LoadSnapshot takes the allowlists and shared lists from the saved
// copies, whatever the saved main file's allow_dir and lists_dir say.
func TestLoadSnapshot(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"snap/egressd.yaml":       "resolvers: [192.0.2.53]\nallow_dir: /etc/egressd/allow.d\nlists_dir: /etc/egressd/lists\n",
		"snap/allow/billing.yaml": "user: \"1001\"\ninclude: [ntp]\nallow: [api.example:443]\n",
		"snap/lists/ntp.yaml":     "allow: [192.0.2.123:123/udp]\n",
		// The live directories the main file names would be elsewhere.
	})
	c, err := LoadSnapshot(filepath.Join(dir, "snap/egressd.yaml"), filepath.Join(dir, "snap/allow"), filepath.Join(dir, "snap/lists"), Trust{Above: dir})
	if err != nil {
		t.Fatal(err)
	}
	if c.AllowDir != filepath.Join(dir, "snap/allow") || c.ListsDir != filepath.Join(dir, "snap/lists") {
		t.Errorf("dirs %s %s, want the snapshot's", c.AllowDir, c.ListsDir)
	}
	if len(c.Allowlists) != 1 || len(c.Allowlists[0].Entries) != 2 || c.Allowlists[0].Entries[1].Raw != "192.0.2.123:123/udp" {
		t.Fatalf("allowlists %+v", c.Allowlists)
	}
	// A snapshot whose list is gone is refused (the caller keeps no half configuration).
	os.Remove(filepath.Join(dir, "snap/lists/ntp.yaml")) //nolint:errcheck
	if _, err := LoadSnapshot(filepath.Join(dir, "snap/egressd.yaml"), filepath.Join(dir, "snap/allow"), filepath.Join(dir, "snap/lists"), Trust{Above: dir}); err == nil || !strings.Contains(err.Error(), `no shared list "ntp"`) {
		t.Errorf("snapshot without its list: %v", err)
	}
	if _, err := LoadSnapshot(filepath.Join(dir, "missing.yaml"), dir, dir, Trust{Above: dir}); err == nil {
		t.Error("a missing snapshot loaded")
	}
}

// ResolveIncludes (the exported reader: plain files) appends each list's
// entries after the allowlist's own, once, and names a missing list at its
// include line.
func TestResolveIncludesExported(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"ntp.yaml": "allow: [192.0.2.123:123/udp, api.example:443]\n"})
	a, err := ParseAllowlist("a.yaml", "a", []byte("user: \"1001\"\ninclude: [ntp]\nallow: [api.example:443]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := ResolveIncludes([]*Allowlist{a}, dir); err != nil {
		t.Fatal(err)
	}
	var raws []string
	for _, e := range a.Entries {
		raws = append(raws, e.Raw)
	}
	if want := []string{"api.example:443", "192.0.2.123:123/udp"}; !slices.Equal(raws, want) {
		t.Errorf("entries %v, want %v (an entry both allow kept once)", raws, want)
	}
	b, _ := ParseAllowlist("b.yaml", "b", []byte("user: \"1002\"\ninclude: [gone]\n"))
	err = ResolveIncludes([]*Allowlist{b}, dir)
	if err == nil || !strings.Contains(err.Error(), `b.yaml:2:11: include: no shared list "gone"`) {
		t.Errorf("missing list: %v", err)
	}
}

// trustedTemp is a temporary directory the default trust rules (root and
// this process's uid) accept, or a skip: under a world-writable /tmp they
// rightly refuse every path.
func trustedTemp(t *testing.T) string {
	t.Helper()
	if os.Geteuid() == 0 {
		d, err := TrustedTempDir("egressd-config-test-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		return d
	}
	d := t.TempDir()
	if err := (Trust{}).CheckDir(d); err != nil {
		t.Skipf("the temporary directory is not trusted by the default rules (TMPDIR=%s): %v", os.Getenv("TMPDIR"), err)
	}
	return d
}

// Load and LoadAllowDir use the default rules: root and this process's
// own uid may own every path; a group-writable directory is refused.
func TestLoadDefaultTrust(t *testing.T) {
	dir := trustedTemp(t)
	writeFiles(t, dir, map[string]string{
		"egressd.yaml":         "resolvers: [192.0.2.53]\n",
		"allow.d/billing.yaml": "user: \"1001\"\nallow: [api.example:443]\n",
		"allow.d/README":       "not an allowlist\n",
		"allow.d/.hidden.yaml": "user: \"1002\"\nallow: []\n",
	})
	c, err := Load(filepath.Join(dir, "egressd.yaml"), true)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Allowlists) != 1 || c.Allowlists[0].Name != "billing" {
		t.Errorf("allowlists %+v", c.Allowlists)
	}
	lists, err := LoadAllowDir(filepath.Join(dir, "allow.d"))
	if err != nil || len(lists) != 1 {
		t.Errorf("LoadAllowDir: %v, %v", lists, err)
	}
	if lists, err := LoadAllowDir(filepath.Join(dir, "none")); err != nil || lists != nil {
		t.Errorf("a missing allow directory: %v, %v; want no allowlists", lists, err)
	}

	if err := (Trust{}).CheckDir(filepath.Join(dir, "allow.d")); err != nil {
		t.Errorf("CheckDir of a trusted directory: %v", err)
	}
	if err := (Trust{}).CheckDir(filepath.Join(dir, "egressd.yaml")); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("CheckDir of a file: %v, want ENOTDIR", err)
	}
	if err := os.Chmod(filepath.Join(dir, "allow.d"), 0o775); err != nil {
		t.Fatal(err)
	}
	var ue *UntrustedError
	if err := (Trust{}).CheckDir(filepath.Join(dir, "allow.d")); !errors.As(err, &ue) {
		t.Errorf("CheckDir of a group-writable directory: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "egressd.yaml"), true); err == nil || !strings.Contains(err.Error(), "writable by its group") {
		t.Errorf("Load with a group-writable allow directory: %v", err)
	}
}

func TestIsAllowlistFile(t *testing.T) {
	for name, want := range map[string]bool{"web.yaml": true, "web.yml": true, ".yaml": false, "web.json": false, "web": false} {
		if got := IsAllowlistFile(name); got != want {
			t.Errorf("IsAllowlistFile(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestSmallStringers(t *testing.T) {
	if TCP.String() != "tcp" || UDP.String() != "udp" || Proto(132).String() != "132" {
		t.Errorf("Proto.String: %s %s %s", TCP, UDP, Proto(132))
	}
	if got := (Entry{PortFrom: 443, PortTo: 443}).Ports(); got != "443" {
		t.Errorf("Ports = %q", got)
	}
	if got := (Entry{PortFrom: 8000, PortTo: 8080}).Ports(); got != "8000-8080" {
		t.Errorf("Ports = %q", got)
	}
	if got := (Rate{Count: 5, Unit: "second"}).String(); got != "5/second" {
		t.Errorf("Rate = %q", got)
	}
	keys := MainKeys()
	if !slices.Contains(keys, "allow_dir") || !slices.Contains(keys, "lists_dir") {
		t.Errorf("MainKeys = %v", keys)
	}
	keys[0] = "changed"
	if MainKeys()[0] == "changed" {
		t.Error("MainKeys hands out the parser's own slice")
	}
}

// Group and user names resolve through the system's databases; a number
// is taken as it stands.
func TestGroupIDAndSystemUsers(t *testing.T) {
	for in, want := range map[string]int{"0": 0, "4242": 4242, "root": 0} {
		if got, err := GroupID(in); err != nil || got != want {
			t.Errorf("GroupID(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := GroupID("egressd-no-such-group"); err == nil {
		t.Error("an unknown group resolved")
	}
	if uid, err := SystemUsers("root"); err != nil || uid != 0 {
		t.Errorf("SystemUsers(root) = %d, %v", uid, err)
	}
	if _, err := SystemUsers("egressd-no-such-user"); err == nil {
		t.Error("an unknown user resolved")
	}
}

// The files of an allow directory are parsed in parallel; what comes out
// does not depend on it: every file's errors, in the files' order (an empty
// file is one), a directory (or a symlink to one) skipped, and the lists
// sorted by name when all are valid.
func TestLoadAllowDirParallelKeepsOrder(t *testing.T) {
	dir := trustedTemp(t)
	files := map[string]string{}
	for i := 0; i < 40; i++ {
		files[filepath.Join("allow.d", "l"+strings.Repeat("x", i%3)+string(rune('a'+i%26))+string(rune('a'+i/26))+".yaml")] = "user: \"" + string(rune('0'+i%10)) + "1" + string(rune('0'+i/10)) + "\"\nallow: [n.example:443]\n"
	}
	writeFiles(t, dir, files)
	if err := os.Mkdir(filepath.Join(dir, "allow.d", "sub.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "allow.d", "sub.yaml"), filepath.Join(dir, "allow.d", "link.yaml")); err != nil {
		t.Fatal(err)
	}
	lists, err := LoadAllowDir(filepath.Join(dir, "allow.d"))
	if err != nil || len(lists) != 40 {
		t.Fatalf("%d lists, %v", len(lists), err)
	}
	if !slices.IsSortedFunc(lists, func(a, b *Allowlist) int { return strings.Compare(a.Name, b.Name) }) {
		t.Error("lists not sorted by name")
	}
	writeFiles(t, dir, map[string]string{"allow.d/b-empty.yaml": "", "allow.d/d-bad.yaml": "user: \"9\"\nallow: [\"bad host:443\"]\n"})
	_, err = LoadAllowDir(filepath.Join(dir, "allow.d"))
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 2 || errs[0].Pos.File != filepath.Join(dir, "allow.d", "b-empty.yaml") || errs[1].Pos.File != filepath.Join(dir, "allow.d", "d-bad.yaml") {
		t.Fatalf("want the empty file's error, then the bad entry's: %v", err)
	}
}
