package config

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestIncludes(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"egressd.yaml":          "resolvers: [192.0.2.53]\n",
		"allow.d/billing.yaml":  "user: \"1001\"\ninclude: [os-updates, ntp]\nallow:\n  - api.example:443\n  - deb.example:443\n",
		"allow.d/web.yaml":      "user: \"1002\"\ndns: none\ninclude: [ntp]\n",
		"lists/os-updates.yaml": "# shared\nallow:\n  - deb.example:443\n  - security.example:443\n",
		"lists/ntp.yaml":        "allow:\n  - 192.0.2.123:123/udp\n",
	})
	c, err := LoadTrusted(filepath.Join(dir, "egressd.yaml"), true, Trust{Above: dir})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range c.Allowlists[0].Entries {
		got = append(got, e.Raw+"@"+filepath.Base(e.Pos.File)+":"+itoa(e.Pos.Line))
	}
	want := "api.example:443@billing.yaml:4 deb.example:443@billing.yaml:5 security.example:443@os-updates.yaml:4 192.0.2.123:123/udp@ntp.yaml:2"
	if strings.Join(got, " ") != want {
		t.Errorf("billing entries\n got %s\nwant %s", strings.Join(got, " "), want)
	}
	web := c.Allowlists[1]
	if len(web.Entries) != 1 || web.DNS != DNSNone || web.Entries[0].Raw != "192.0.2.123:123/udp" {
		t.Errorf("web: %+v", web)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestIncludeErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  []string // substrings of the error, in order
	}{
		{"unknown list names the allowlist line", map[string]string{
			"allow.d/billing.yaml":  "user: \"1001\"\nallow: []\ninclude:\n  - os-updates\n  - nope\n",
			"lists/os-updates.yaml": "allow: []\n",
		}, []string{"allow.d/billing.yaml:5:5: include: no shared list \"nope\""}},
		{"bad entry in a list names the list file", map[string]string{
			"allow.d/a.yaml": "user: \"1001\"\ninclude: [bad]\n",
			"allow.d/b.yaml": "user: \"1002\"\ninclude: [bad]\n",
			"lists/bad.yaml": "allow:\n  - ok.example:443\n  - 198.51.100.7/24:80\n",
		}, []string{"lists/bad.yaml:3:5: allow: \"198.51.100.7/24:80\": 198.51.100.7/24 has host bits set"}},
		{"only allow in a list", map[string]string{
			"allow.d/a.yaml": "user: \"1001\"\ninclude: [x]\n",
			"lists/x.yaml":   "user: bob\nallow: []\n",
		}, []string{"lists/x.yaml:1:1: unknown key \"user\" (known keys: allow)"}},
		{"list syntax error", map[string]string{
			"allow.d/a.yaml": "user: \"1001\"\ninclude: [x]\n",
			"lists/x.yaml":   "allow: [\n",
		}, []string{"lists/x.yaml:"}},
		{"list name syntax", map[string]string{
			"allow.d/a.yaml": "user: \"1001\"\ninclude: [../etc/passwd]\n",
		}, []string{"allow.d/a.yaml:2:11: include: \"../etc/passwd\" is not a list name"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.files["egressd.yaml"] = "resolvers: [192.0.2.53]\n"
			writeFiles(t, dir, tc.files)
			_, err := LoadTrusted(filepath.Join(dir, "egressd.yaml"), true, Trust{Above: dir})
			if err == nil {
				t.Fatal("accepted")
			}
			msg := strings.ReplaceAll(err.Error(), dir+"/", "")
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error\n%s\nlacks %q", msg, w)
				}
			}
			if strings.Count(msg, "\n") > 0 && strings.Contains(tc.name, "names the list file") {
				t.Errorf("a bad list included twice must be reported once:\n%s", msg)
			}
		})
	}
}

func TestMainHostsAndListsKeys(t *testing.T) {
	c, err := ParseMain("/etc/egressd/egressd.yaml", []byte("hosts_file: /srv/hosts\nlists_dir: shared\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.HostsFile != "/srv/hosts" || c.ListsDir != "/etc/egressd/shared" {
		t.Errorf("%q %q", c.HostsFile, c.ListsDir)
	}
	c, _ = ParseMain("/etc/egressd/egressd.yaml", nil)
	if c.HostsFile != "/etc/hosts" || c.ListsDir != "/etc/egressd/lists" {
		t.Errorf("defaults %q %q", c.HostsFile, c.ListsDir)
	}
	if c, err := ParseMain("/e/x.yaml", []byte("hosts_file: \"\"\n")); err != nil || c.HostsFile != "" {
		t.Errorf("empty hosts_file: %v %v", c, err)
	}
	if _, err := ParseMain("/e/x.yaml", []byte("hosts_file: hosts\n")); err == nil || !strings.Contains(err.Error(), "/e/x.yaml:1:13: hosts_file") {
		t.Errorf("relative hosts_file: %v", err)
	}
}

// A shared list, or the hosts file, that another user could change opens
// destinations like an allowlist it could change: refused the same way.
func TestIncludeAndHostsFileTrusted(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"egressd.yaml":          "resolvers: [192.0.2.53]\n",
		"allow.d/billing.yaml":  "user: \"1001\"\ninclude: [os-updates]\n",
		"lists/os-updates.yaml": "allow:\n  - deb.example:443\n",
		"hosts":                 "192.0.2.10 api.example\n",
	})
	list := filepath.Join(dir, "lists/os-updates.yaml")
	if err := os.Chmod(list, 0o666); err != nil {
		t.Fatal(err)
	}
	_, err := LoadTrusted(filepath.Join(dir, "egressd.yaml"), true, Trust{Above: dir})
	if err == nil || !strings.Contains(err.Error(), list) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("a world-writable shared list was loaded: %v", err)
	}
	tr := Trust{Above: dir}
	if _, err := tr.ReadFile(filepath.Join(dir, "hosts")); err != nil {
		t.Fatalf("a trusted hosts file refused: %v", err)
	}
	if err := os.Chmod(filepath.Join(dir, "hosts"), 0o664); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.ReadFile(filepath.Join(dir, "hosts")); err == nil {
		t.Fatal("a group-writable hosts file was read")
	}
}
