package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPolicyTests(t *testing.T) {
	const entries = "user: billing\ndns: proxy\nallow:\n  - api.example.com:443\n  - \"*.cdn.example.com:1-1024\"\n  - 10.0.0.0/8:80\n  - \"[2001:db8::1]:53/udp\"\n"
	cases := []struct {
		name  string
		tests string
		err   string // "" passes
	}{
		{"allowed name", "tests:\n  allow: [api.example.com:443, API.example.com.:443]\n", ""},
		{"allowed by a wildcard", "tests:\n  allow: [x.cdn.example.com:22]\n", ""},
		{"allowed address in a prefix", "tests:\n  allow: [10.1.2.3:80, \"[2001:db8::1]:53/udp\"]\n", ""},
		{"denied: other port, protocol, host, metadata", "tests:\n  deny: [api.example.com:22, api.example.com:443/udp, cdn.example.com:443, a.b.cdn.example.com:443, 169.254.169.254:80, 10.1.2.3:81]\n", ""},
		{"a name is not allowed by an address entry", "tests:\n  deny: [\"[2001:db8::1]:53\"]\n", ""},
		{"allow test fails", "tests:\n  allow: [api.example.com:8443]\n",
			"b.yaml:9:11: tests.allow: api.example.com:8443 is not allowed by any entry of allowlist b (entries for the same host: api.example.com:443)"},
		{"deny test fails on a wildcard", "tests:\n  deny: [x.cdn.example.com:443]\n",
			"b.yaml:9:10: tests.deny: x.cdn.example.com:443 is allowed by entry \"*.cdn.example.com:1-1024\" (b.yaml:5:5)"},
		{"deny test fails on a prefix", "tests:\n  deny:\n    - 10.9.9.9:80\n",
			"b.yaml:10:7: tests.deny: 10.9.9.9:80 is allowed by entry \"10.0.0.0/8:80\""},
		{"a wildcard is not a destination", "tests:\n  allow: [\"*.cdn.example.com:443\"]\n", "b.yaml:9:11: tests.allow: \"*.cdn.example.com:443\": a test names one host, not a wildcard"},
		{"a prefix is not a destination", "tests:\n  deny: [10.0.0.0/8:80]\n", "one address, not a prefix"},
		{"a range is not a destination", "tests:\n  deny: [api.example.com:1-2]\n", "one port, not a range"},
		{"bad entry", "tests:\n  deny: [api.example.com]\n", "b.yaml:9:10: tests.deny: \"api.example.com\": missing :PORT"},
		{"unknown key", "tests:\n  reject: [a.example.com:1]\n", "b.yaml:9:3: unknown key \"reject\""},
		{"not a mapping", "tests: [a.example.com:1]\n", "b.yaml:8:8: tests: expected a mapping"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := ParseAllowlist("b.yaml", "b", []byte(entries+tc.tests))
			if err == nil {
				err = RunTests([]*Allowlist{a})
			}
			got := ""
			if err != nil {
				got = err.Error()
			}
			if tc.err == "" && got != "" || !strings.Contains(got, tc.err) {
				t.Fatalf("got %q, want %q", got, tc.err)
			}
		})
	}
}

// The daemon and check load through Load: a configuration whose tests fail
// is rejected as a whole, with an include taken into account.
func TestLoadRunsPolicyTests(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"egressd.yaml":     "resolvers: [192.0.2.53]\n",
		"lists/os.yaml":    "allow: [deb.debian.org:80]\n",
		"allow.d/web.yaml": "user: web\ninclude: [os]\nallow: [api.example.com:443]\ntests:\n  allow: [deb.debian.org:80]\n  deny: [deb.debian.org:443]\n",
	} {
		os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755) //nolint:errcheck
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	main := filepath.Join(dir, "egressd.yaml")
	if _, err := LoadTrusted(main, true, Trust{Above: dir}); err != nil {
		t.Fatalf("control: %v", err)
	}
	// The shared list changes under the allowlist: its test breaks.
	os.WriteFile(filepath.Join(dir, "lists/os.yaml"), []byte("allow: [deb.debian.org:1-65535]\n"), 0o644) //nolint:errcheck
	_, err := LoadTrusted(main, true, Trust{Above: dir})
	if err == nil || !strings.Contains(err.Error(), "web.yaml:6:10: tests.deny: deb.debian.org:443 is allowed by entry \"deb.debian.org:1-65535\"") {
		t.Fatalf("Load: %v", err)
	}
	// So does validate of the list with --config: the installed allowlist
	// that includes it is checked against the candidate.
	cand := filepath.Join(dir, "candidate")
	os.WriteFile(cand, []byte("allow: [deb.debian.org:1-65535]\n"), 0o644)                           //nolint:errcheck
	os.WriteFile(filepath.Join(dir, "lists/os.yaml"), []byte("allow: [deb.debian.org:80]\n"), 0o644) //nolint:errcheck
	_, err = Validate([]string{cand}, ValidateOptions{ConfigPath: main, As: filepath.Join(dir, "lists/os.yaml"), Trust: Trust{Above: dir}})
	if err == nil || !strings.Contains(err.Error(), "tests.deny: deb.debian.org:443 is allowed") {
		t.Fatalf("Validate: %v", err)
	}
}
