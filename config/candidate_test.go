package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// installed writes an installed configuration (main file, allow.d, lists)
// and a world-writable directory for candidates, as Ansible's temporary
// directory may be.
func installed(t *testing.T, files map[string]string) (etc, tmp string) {
	t.Helper()
	root := t.TempDir()
	etc, tmp = filepath.Join(root, "etc"), filepath.Join(root, "tmp")
	for _, d := range []string{etc, filepath.Join(etc, "allow.d"), filepath.Join(etc, "lists"), tmp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(tmp, 0o1777); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return etc, tmp
}

func write(t *testing.T, path, body string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestValidateCandidates(t *testing.T) {
	base := map[string]string{
		"etc/egressd.yaml":         "resolvers: [\"192.0.2.53\"]\n",
		"etc/allow.d/billing.yaml": "user: billing\nallow: [api.example.com:443]\n",
		"etc/lists/os.yaml":        "allow: [deb.debian.org:80]\n",
	}
	cases := []struct {
		name      string
		body      string
		as        string // relative to etc; "" for none
		config    bool
		wantErr   string // "" valid
		wantKind  Kind
		wantName  string
		wantNote  string
		unrelated bool // the allow dir is made world-writable
	}{
		{name: "standalone allowlist under a temporary name", body: "user: billing\nallow: [api.example.com:443]\n",
			wantKind: KindAllowlist, wantName: "candidate", wantNote: "pass --as DEST"},
		{name: "standalone error with file:line:col", body: "user: billing\nallow:\n  - api.example.com:99999\n",
			wantErr: "source:3:5: allow: \"api.example.com:99999\""},
		{name: "standalone include not checked", body: "user: billing\ninclude: [os]\nallow: []\n",
			wantKind: KindAllowlist, wantNote: "include os not checked"},
		{name: "allow alone is a shared list", body: "allow: [a.example.com:443]\n", wantKind: KindList, wantNote: "checked as a shared list"},
		{name: "main file by its keys", body: "min_ttl: 1s\n", wantKind: KindMain},
		{name: "replaces the installed allowlist of its user", body: "user: billing\ninclude: [os]\nallow: [api.example.com:443]\n",
			as: "allow.d/billing.yaml", config: true, wantKind: KindAllowlist, wantName: "billing"},
		{name: "a second allowlist for the same user", body: "user: billing\nallow: [api.example.com:443]\n",
			as: "allow.d/billing2.yaml", config: true, wantErr: "source:1:7: user \"billing\" already has an allowlist in"},
		{name: "same name, other extension", body: "user: other\nallow: []\n",
			as: "allow.d/billing.yml", config: true, wantErr: "allowlist \"billing\" is also defined by"},
		{name: "include missing from the installed lists", body: "user: other\ninclude: [nope]\nallow: []\n",
			as: "allow.d/other.yaml", config: true, wantErr: "source:2:11: include: no shared list \"nope\""},
		{name: "not an allowlist file name", body: "user: other\nallow: []\n",
			as: "allow.d/other.conf", config: true, wantErr: "allowlists are named NAME.yaml"},
		{name: "shared list by where it goes", body: "allow: [deb.debian.org:443]\n",
			as: "lists/os.yaml", config: true, wantKind: KindList, wantName: "os"},
		{name: "bad shared list", body: "allow: [deb.debian.org]\n",
			as: "lists/os.yaml", config: true, wantErr: "source:1:9: allow: \"deb.debian.org\": missing :PORT"},
		{name: "main file candidate", body: "min_ttl: 1h\nmax_ttl: 1m\n",
			as: "egressd.yaml", config: true, wantErr: "source: min_ttl (1h0m0s) is above max_ttl (1m0s)"},
		{name: "target directory the daemon would refuse", body: "user: other\nallow: []\n",
			as: "allow.d/other.yaml", config: true, unrelated: true, wantErr: "the daemon would refuse this configuration"},
		{name: "target directory refused without --config", body: "user: other\nallow: []\n",
			as: "allow.d/other.yaml", unrelated: true, wantErr: "writable by every user"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			etc, tmp := installed(t, base)
			src := write(t, filepath.Join(tmp, "source"), tc.body)
			o := ValidateOptions{Trust: Trust{Above: filepath.Dir(etc)}}
			if tc.config {
				o.ConfigPath = filepath.Join(etc, "egressd.yaml")
			}
			if tc.as != "" {
				o.As = filepath.Join(etc, tc.as)
			}
			if tc.unrelated {
				if err := os.Chmod(filepath.Join(etc, "allow.d"), 0o777); err != nil {
					t.Fatal(err)
				}
			}
			vs, err := Validate([]string{src}, o)
			if tc.wantErr != "" {
				if !strings.Contains(errText(err), tc.wantErr) {
					t.Fatalf("Validate: error %q, want it to contain %q", errText(err), tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Validate: %v", err)
			}
			v := vs[0]
			if v.Kind != tc.wantKind || (tc.wantName != "" && v.Name != tc.wantName) {
				t.Errorf("verdict %+v, want kind %q name %q", v, tc.wantKind, tc.wantName)
			}
			if notes := strings.Join(v.Notes, "\n"); !strings.Contains(notes, tc.wantNote) || (tc.wantNote == "" && notes != "") {
				t.Errorf("notes %q, want %q", notes, tc.wantNote)
			}
		})
	}
}

// The lists given beside an allowlist are its includes, without --config.
func TestValidateIncludesAmongCandidates(t *testing.T) {
	_, tmp := installed(t, nil)
	a := write(t, filepath.Join(tmp, "web.yaml"), "user: web\ninclude: [os]\nallow: []\n")
	l := write(t, filepath.Join(tmp, "os.yaml"), "allow: [deb.debian.org]\n")
	if _, err := Validate([]string{a, l}, ValidateOptions{}); !strings.Contains(errText(err), "os.yaml:1:9") {
		t.Fatalf("Validate: %v, want the list's error", err)
	}
	write(t, l, "allow: [deb.debian.org:80]\n")
	vs, err := Validate([]string{a, l}, ValidateOptions{})
	if err != nil || len(vs) != 2 || vs[0].Name != "web" || len(vs[0].Notes) != 0 {
		t.Fatalf("Validate = %+v, %v", vs, err)
	}
}

// The installed configuration passes the trust rules as the daemon reads it;
// the candidate itself does not (it sits in a temporary directory).
func TestValidateInstalledTrust(t *testing.T) {
	etc, tmp := installed(t, map[string]string{
		"etc/egressd.yaml":       "resolvers: [\"192.0.2.53\"]\n",
		"etc/allow.d/other.yaml": "user: other\nallow: []\n",
	})
	src := write(t, filepath.Join(tmp, "source"), "user: billing\nallow: []\n")
	o := ValidateOptions{ConfigPath: filepath.Join(etc, "egressd.yaml"), As: filepath.Join(etc, "allow.d", "billing.yaml"), Trust: Trust{Above: filepath.Dir(etc)}}
	if _, err := Validate([]string{src}, o); err != nil {
		t.Fatalf("control: %v", err)
	}
	if err := os.Chmod(filepath.Join(etc, "allow.d", "other.yaml"), 0o666); err != nil {
		t.Fatal(err)
	}
	if _, err := Validate([]string{src}, o); !strings.Contains(errText(err), "other.yaml: the daemon would refuse") {
		t.Fatalf("Validate: %v, want the installed file refused", err)
	}
}
