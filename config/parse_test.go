package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseEntry(t *testing.T) {
	tests := []struct {
		in       string
		host     string
		prefix   string
		proto    Proto
		from, to uint16
		err      string
	}{
		{in: "db.internal.example.com:3306", host: "db.internal.example.com", proto: TCP, from: 3306, to: 3306},
		{in: "API.Payments.Example.:443", host: "api.payments.example", proto: TCP, from: 443, to: 443},
		{in: "127.0.0.1:3306", prefix: "127.0.0.1/32", proto: TCP, from: 3306, to: 3306},
		{in: "[2001:db8::1]:53/udp", prefix: "2001:db8::1/128", proto: UDP, from: 53, to: 53},
		{in: "[2001:db8::]/32:443", err: "missing ']'"},
		{in: "[2001:db8::/32]:443/tcp", prefix: "2001:db8::/32", proto: TCP, from: 443, to: 443},
		{in: "198.51.100.0/24:8000-8100", prefix: "198.51.100.0/24", proto: TCP, from: 8000, to: 8100},
		{in: "198.51.100.0/24:8000-8100/UDP", prefix: "198.51.100.0/24", proto: UDP, from: 8000, to: 8100},
		{in: "198.51.100.7/24:80", err: "did you mean 198.51.100.0/24"},
		{in: "example.com", err: "missing :PORT"},
		{in: "example.com:0", err: "not a number from 1 to 65535"},
		{in: "example.com:65536", err: "not a number from 1 to 65535"},
		{in: "example.com:08", err: "not a number"},
		{in: "example.com:90-80", err: "runs backwards"},
		{in: "example.com:http", err: "not a number"},
		{in: "2001:db8::1:53", err: "must be written in brackets"},
		{in: "[192.0.2.1]:53", err: "only IPv6 goes in brackets"},
		{in: "[not-an-ip]:53", err: "is not an IPv6 address"},
		{in: "*.example.com:443", host: "example.com", proto: TCP, from: 443, to: 443},
		{in: "**.Example.ORG:443", host: "example.org", proto: TCP, from: 443, to: 443},
		{in: "a.*.example.com:443", err: "the star alone and first"},
		{in: "*example.com:443", err: "the star alone and first"},
		{in: "***.example.com:443", err: "the star alone and first"},
		{in: "*.com:443", err: "top-level domain"},
		{in: "exa mple.com:443", err: "contains spaces"},
		{in: "1.2.3:80", err: "neither an IP address nor a host name"},
		{in: " example.com:443", err: "spaces"},
		{in: "[fe80::1%eth0]:53", err: "zoned IPv6"},
		{in: "[::ffff:192.0.2.1]:53", err: "only IPv6 goes in brackets"},
		{in: "example.com:443/sctp", err: "not a number"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			e, err := ParseEntry(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseEntry(%q) error = %v, want it to contain %q", tt.in, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseEntry(%q): %v", tt.in, err)
			}
			if e.Host != tt.host || e.Proto != tt.proto || e.PortFrom != tt.from || e.PortTo != tt.to {
				t.Fatalf("ParseEntry(%q) = %+v", tt.in, e)
			}
			if tt.prefix != "" && e.Prefix != netip.MustParsePrefix(tt.prefix) {
				t.Fatalf("ParseEntry(%q).Prefix = %v, want %s", tt.in, e.Prefix, tt.prefix)
			}
		})
	}
}

func TestParseAllowlist(t *testing.T) {
	a, err := ParseAllowlist("billing.yaml", "billing", []byte(`# billing service
user: billing
allow:
  - db.internal.example.com:3306
  - db.internal.example.com:3306/tcp   # same as the line above: merged
  - "[2001:db8::1]:53/udp"
dns: none
allow_private_answers: true
`))
	if err != nil {
		t.Fatal(err)
	}
	if a.User != "billing" || a.DNS != DNSNone || !a.AllowPrivateAnswers || len(a.Entries) != 2 {
		t.Fatalf("got %+v", a)
	}
	if a.Entries[1].Pos.Line != 6 || a.Entries[1].Pos.Col != 5 {
		t.Fatalf("entry position = %v, want line 6 col 5", a.Entries[1].Pos)
	}
	if got := a.Names(); len(got) != 1 || got[0] != "db.internal.example.com" {
		t.Fatalf("Names() = %v", got)
	}
}

func TestParseAllowlistErrors(t *testing.T) {
	tests := []struct {
		name, data string
		want       string // file:line:col: message fragment
	}{
		{"unknown key", "user: a\nallw: []\n", "x.yaml:2:1: unknown key \"allw\""},
		{"bad entry", "user: a\nallow:\n  - ok.example:443\n  - bad:port\n", "x.yaml:4:5: allow: \"bad:port\""},
		{"missing user", "allow: []\n", "x.yaml:1:1: missing required key \"user\""},
		{"root", "user: root\n", "x.yaml:1:7: user: root cannot be restricted"},
		{"uid 0", "user: 0\n", "x.yaml:1:7: user: uid 0"},
		{"dns", "user: a\ndns: maybe\n", "x.yaml:2:6: dns: \"maybe\" is not resolvers or none"},
		{"bool", "user: a\nallow_private_answers: yes\n", "x.yaml:2:24: allow_private_answers: \"yes\" is not true or false"},
		{"syntax", "user: a\nallow: [\n", "x.yaml:"},
		{"list", "user: a\nallow: example.com:443\n", "x.yaml:2:8: allow: expected a list"},
		{"twice", "user: a\nuser: b\n", "x.yaml:2:1: key \"user\" appears twice"},
		{"empty", "", "empty allowlist"},
		{"top", "- a\n", "x.yaml:1:1: expected a mapping"},
		{"nested entry", "user: a\nallow:\n  - {host: x}\n", "x.yaml:3:5: allow entry: expected host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseAllowlist("x.yaml", "x", []byte(tt.data))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
	if _, err := ParseAllowlist("a b.yaml", "a b", []byte("user: a\n")); err == nil {
		t.Fatal("a name with a space was accepted")
	}
}

func TestParseMain(t *testing.T) {
	c, err := ParseMain("/etc/egressd/egressd.yaml", []byte(`
resolvers: ["127.0.0.53:53", "192.0.2.53", "[2001:db8::53]:5353"]
allow_dir: allow.d
min_ttl: 1s
max_ttl: 1m
linger: 30s
stale_grace: 10m
max_addresses_per_name: 16
deny_log: { mode: kernel, group: 7, rate: 5/minute, prefix: "edeny", interval: 30s }
on_exit: remove
metrics_listen: 127.0.0.1:9464
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.53:53"), netip.MustParseAddrPort("192.0.2.53:53"), netip.MustParseAddrPort("[2001:db8::53]:5353")}
	if len(c.Resolvers) != 3 || c.Resolvers[0] != want[0] || c.Resolvers[1] != want[1] || c.Resolvers[2] != want[2] {
		t.Fatalf("resolvers = %v", c.Resolvers)
	}
	if c.AllowDir != "/etc/egressd/allow.d" || c.MinTTL != time.Second || c.MaxTTL != time.Minute || c.Linger != 30*time.Second ||
		c.StaleGrace != 10*time.Minute || c.MaxAddressesPerName != 16 || c.OnExit != "remove" {
		t.Fatalf("got %+v", c)
	}
	if c.DenyLog != (DenyLog{Mode: LogKernel, Group: 7, Rate: Rate{5, "minute"}, Prefix: "edeny", Interval: 30 * time.Second}) || c.MetricsListen != "127.0.0.1:9464" {
		t.Fatalf("deny_log = %+v", c.DenyLog)
	}

	u, err := ParseMain("/etc/egressd/egressd.yaml", []byte("metrics_listen: unix:/run/egressd/metrics.sock\nmetrics_socket_mode: 0660\n"+
		"metrics_socket_group: prometheus\nstate_mode: \"0o640\"\nstate_group: \"4\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if path, ok := u.MetricsUnix(); !ok || path != "/run/egressd/metrics.sock" || u.MetricsSocketMode != 0o660 || u.MetricsSocketGroup != "prometheus" ||
		u.StateMode != 0o640 || u.StateGroup != "4" {
		t.Errorf("unix metrics and state modes: %+v", u)
	}

	d, err := ParseMain("/etc/egressd/egressd.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.MetricsSocketMode != 0o600 || d.StateMode != 0o644 {
		t.Errorf("default modes: socket %v, state %v", d.MetricsSocketMode, d.StateMode)
	}
	def := Defaults()
	if d.MinTTL != def.MinTTL || d.DenyLog != def.DenyLog || d.AllowDir != "/etc/egressd/allow.d" {
		t.Fatalf("empty file did not give defaults: %+v", d)
	}

	for in, want := range map[string]string{
		"min_ttl: 5":                      "m.yaml:1:10: min_ttl: \"5\" is not a duration",
		"min_ttl: 2m\nmax_ttl: 1m":        "min_ttl (2m0s) is above max_ttl (1m0s)",
		"deny_log: {mode: syslog}":        "m.yaml:1:18: deny_log.mode",
		"deny_log: {rate: 0/second}":      "deny_log.rate",
		"deny_log: {prefix: \"a b\"}":     "deny_log.prefix",
		"resolvers: [dns.google]":         "m.yaml:1:13: resolvers:",
		"on_exit: flush":                  "on_exit",
		"max_addresses_per_name: 0":       "max_addresses_per_name",
		"bogus: 1":                        "unknown key \"bogus\"",
		"metrics_listen: unix:run/m.sock": "m.yaml:1:17: metrics_listen: \"unix:run/m.sock\": the socket's path must be absolute",
		"metrics_listen: 127.0.0.1:9464\nmetrics_socket_mode: 0660":   "m.yaml:2:1: metrics_socket_mode: applies to a unix socket only",
		"metrics_socket_group: prometheus":                            "metrics_socket_group: applies to a unix socket only",
		"metrics_listen: unix:/run/m.sock\nmetrics_socket_mode: 0999": "m.yaml:2:22: metrics_socket_mode: \"0999\" is not a file mode",
		"state_mode: \"0666\"":                                        "m.yaml:1:13: state_mode: 0666 lets other users write",
		"state_group: \"\"":                                           "state_group: must not be empty",
	} {
		if _, err := ParseMain("m.yaml", []byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseMain(%q) error = %v, want %q", in, err, want)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("egressd.yaml", "resolvers: [192.0.2.53]\n")
	write("allow.d/b.yaml", "user: 1001\nallow: [b.example:443]\n")
	write("allow.d/a.yaml", "user: alice\nallow: [a.example:443]\n")
	write("allow.d/.a.yaml.swp", "garbage")
	write("allow.d/README", "not yaml")
	write("allow.d/other.yml", "user: 1002\nallow: [o.example:443]\n")
	tr := Trust{Above: dir}
	Load := func(p string, req bool) (*Config, error) { return LoadTrusted(p, req, tr) }
	c, err := Load(filepath.Join(dir, "egressd.yaml"), true)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Allowlists) != 3 || c.Allowlists[0].Name != "a" || c.Allowlists[1].Name != "b" || c.Allowlists[2].Name != "other" {
		t.Fatalf("allowlists = %+v", c.Allowlists)
	}
	if got := c.Names(); strings.Join(got, ",") != "a.example,b.example,o.example" {
		t.Fatalf("Names() = %v", got)
	}
	if len(c.Skipped) != 1 || filepath.Base(c.Skipped[0]) != "README" {
		t.Fatalf("skipped = %v, want README only (hidden files are ignored silently)", c.Skipped)
	}
	write("allow.d/other.yaml", "user: 1003\n")
	if _, err := Load(filepath.Join(dir, "egressd.yaml"), true); err == nil || !strings.Contains(err.Error(), "also defined by") {
		t.Fatalf("other.yaml beside other.yml: error = %v", err)
	}
	os.Remove(filepath.Join(dir, "allow.d/other.yaml"))
	os.Remove(filepath.Join(dir, "allow.d/other.yml"))

	write("allow.d/c.yaml", "user: 1001\n")
	_, err = Load(filepath.Join(dir, "egressd.yaml"), true)
	var ce Errors
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "c.yaml:1:7: user \"1001\" already has an allowlist in") {
		t.Fatalf("duplicate user: error = %v", err)
	}

	if _, err := Load(filepath.Join(dir, "missing.yaml"), true); err == nil {
		t.Fatal("a required missing main file was accepted")
	}
	ResolvConf = filepath.Join(dir, "resolv.conf")
	t.Cleanup(func() { ResolvConf = "/etc/resolv.conf" })
	write("resolv.conf", "nameserver 192.0.2.1\nnameserver fe80::1%eth0\n")
	os.Remove(filepath.Join(dir, "allow.d/c.yaml"))
	c, err = Load(filepath.Join(dir, "missing.yaml"), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Resolvers) != 1 || c.Resolvers[0].String() != "192.0.2.1:53" {
		t.Fatalf("resolvers from resolv.conf = %v", c.Resolvers)
	}
}

func TestUID(t *testing.T) {
	lookup := func(name string) (uint32, error) {
		if name == "svc" {
			return 1234, nil
		}
		return 0, errors.New("unknown user")
	}
	for user, want := range map[string]uint32{"svc": 1234, "4321": 4321} {
		a := &Allowlist{User: user}
		if got, err := a.UID(lookup); err != nil || got != want {
			t.Errorf("UID(%s) = %d, %v", user, got, err)
		}
	}
	if _, err := (&Allowlist{User: "ghost"}).UID(lookup); err == nil {
		t.Error("unknown user resolved")
	}
}

func FuzzParseAllowlist(f *testing.F) {
	f.Add([]byte("user: billing\nallow:\n  - db.example.com:3306\n  - \"[2001:db8::1]:53/udp\"\n  - 198.51.100.0/24:8000-8100\ndns: none\n"))
	f.Add([]byte("user: 1001\nallow: [a:1]\nallow_private_answers: true\n"))
	f.Add([]byte("{"))
	f.Add([]byte("unit: php-fpm@shop.service\nallow: [a:1]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ParseAllowlist("f.yaml", "f", data)
		if err != nil {
			var ce Errors
			if !errors.As(err, &ce) || len(ce) == 0 {
				t.Fatalf("error is not a positioned Errors: %v", err)
			}
			for _, e := range ce {
				if e.Pos.File != "f.yaml" || e.Msg == "" {
					t.Fatalf("error without file or message: %#v", e)
				}
			}
			return
		}
		if (a.User == "") == (a.Unit == "") {
			t.Fatalf("accepted an allowlist with user %q and unit %q: exactly one is required", a.User, a.Unit)
		}
		if a.Unit != "" && ValidUnit(a.Unit) != nil {
			t.Fatalf("accepted an invalid unit %q", a.Unit)
		}
		for _, e := range a.Entries {
			if e.PortFrom == 0 || e.PortTo < e.PortFrom || (e.Host == "" && !e.Prefix.IsValid()) {
				t.Fatalf("accepted an invalid entry %+v", e)
			}
			// Entries must round-trip: re-parsing the raw text gives the same entry.
			again, err := ParseEntry(e.Raw)
			if err != nil || again.Key() != e.Key() {
				t.Fatalf("entry %q does not round-trip: %v", e.Raw, err)
			}
		}
	})
}

func FuzzParseEntry(f *testing.F) {
	for _, s := range []string{"a.example:443", "[2001:db8::1]:53/udp", "198.51.100.0/24:1-2", "1.2.3.4:80/tcp"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := ParseEntry(s)
		if err != nil {
			return
		}
		if e.IsName() == e.Prefix.IsValid() {
			t.Fatalf("%q: entry is both or neither name and prefix: %+v", s, e)
		}
		if e.Prefix.IsValid() && e.Prefix.Masked() != e.Prefix {
			t.Fatalf("%q: unmasked prefix accepted", s)
		}
	})
}

func FuzzParseMain(f *testing.F) {
	f.Add([]byte("resolvers: [\"127.0.0.53:53\"]\nmin_ttl: 5s\nmax_ttl: 10m\ndeny_log: { mode: nflog, group: 100, rate: 10/second }\non_exit: keep\n"))
	f.Add([]byte("allow_dir: /etc/x\nmetrics_listen: 127.0.0.1:9464\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseMain("m.yaml", data)
		if err != nil {
			var ce Errors
			if !errors.As(err, &ce) || len(ce) == 0 {
				t.Fatalf("error is not a positioned Errors: %v", err)
			}
			return
		}
		if c.MinTTL > c.MaxTTL || c.MaxAddressesPerName < 1 || c.DenyLog.Rate.Count == 0 || (c.OnExit != "keep" && c.OnExit != "remove") {
			t.Fatalf("accepted an inconsistent configuration: %+v", c)
		}
	})
}

// Mistakes people make in allowlists get a message that says what happened.
func TestParseAllowlistHints(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"user: a\nallow:\n  - api.example.test:443\n   - 192.0.2.1:443\n", "two entries run together"},
		{"user: a\nallow:\n- api.example.test:443\n  - 192.0.2.1:443\n", "two entries run together"},
		{"user: a\nallow:\n  - api.example.test:443\n  - [2001:db8::10]:443\n", `x.yaml:4:5: invalid YAML: did not find expected '-' indicator; an entry that starts with '[' must be quoted, or YAML reads it as a list: - "[2001:db8::10]:443"`},
		{"user: a\nallow: [ [2001:db8::10]:443 ]\n", "must be quoted"},
		// Issue 25: the column of the '*', and the fix.
		{"user: a\ndns: proxy\nallow:\n  - *.cdn.example.com:443\n", `x.yaml:4:5: invalid YAML: did not find expected alphabetic or numeric character; an entry that starts with '*' must be quoted, or YAML reads it as an alias`},
		{"user: a\nallow:\n\t- api.example.test:443\n", "x.yaml:3:1: a tab indents this line: YAML indents with spaces only"},
		{"user: a\nallow:\n  -\tapi.example.test:443\n  - x\n\t- y\n", "x.yaml:5:1: a tab indents this line"},
	} {
		_, err := ParseAllowlist("x.yaml", "x", []byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "must be written in brackets") {
			t.Errorf("%q: error %v, want it to contain %q", c.in, err, c.want)
		}
	}
}

// The fix for a wildcard left unquoted is the quoted entry; a misspelt key
// names the key meant.
func TestParseAllowlistFixes(t *testing.T) {
	_, err := ParseAllowlist("x.yaml", "x", []byte("user: a\ndns: proxy\nallow:\n  - *.cdn.example.com:443\n"))
	var ce Errors
	if !errors.As(err, &ce) || ce[0].Fix != `quote it: - "*.cdn.example.com:443"` {
		t.Errorf("unquoted wildcard: %v (fix %q)", err, ce[0].Fix)
	}
	for in, want := range map[string]string{
		"user: a\nalow: []\n":      `x.yaml:2:1: unknown key "alow": did you mean "allow"?`,
		"user: a\nAllow: []\n":     `did you mean "allow"?`,
		"usr: a\nallow: []\n":      `did you mean "user"?`,
		"user: a\nfrobnicate: 1\n": `unknown key "frobnicate" (known keys:`,
	} {
		if _, err := ParseAllowlist("x.yaml", "x", []byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
}

func TestParseAllowlistMode(t *testing.T) {
	for _, c := range []struct {
		body string
		want Mode
		err  string
	}{
		{"user: billing\n", ModeEnforce, ""},
		{"user: billing\nmode: audit\n", ModeAudit, ""},
		{"user: billing\nmode: enforce\n", ModeEnforce, ""},
		{"user: billing\nmode: learn\n", "", "a.yaml:2:7: mode: \"learn\" is not enforce or audit"},
	} {
		a, err := ParseAllowlist("a.yaml", "a", []byte(c.body))
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: error %v, want %q", c.body, err, c.err)
			}
			continue
		}
		if err != nil || a.Mode != c.want {
			t.Errorf("%q: mode %q, %v; want %q", c.body, a.Mode, err, c.want)
		}
	}
}

func TestWildcardMatches(t *testing.T) {
	one, _ := ParseEntry("*.cdn.example.com:443")
	any, _ := ParseEntry("**.example.org:443")
	exact, _ := ParseEntry("api.example.net:443")
	for _, tt := range []struct {
		e    Entry
		name string
		want bool
	}{
		{one, "a.cdn.example.com", true},
		{one, "cdn.example.com", false},
		{one, "a.b.cdn.example.com", false},
		{one, "xcdn.example.com", false},
		{one, "a.cdn.example.com.evil", false},
		{any, "a.example.org", true},
		{any, "a.b.c.example.org", true},
		{any, "example.org", false},
		{any, "notexample.org", false},
		{exact, "api.example.net", true},
		{exact, "x.api.example.net", false},
	} {
		if got := tt.e.MatchesName(tt.name); got != tt.want {
			t.Errorf("%s matches %s = %v, want %v", tt.e.Raw, tt.name, got, tt.want)
		}
	}
	if one.Key() == any.Key() || one.Pattern() != "*.cdn.example.com" || any.Pattern() != "**.example.org" {
		t.Errorf("keys/patterns: %q %q %q %q", one.Key(), any.Key(), one.Pattern(), any.Pattern())
	}
}

func TestWildcardNeedsProxy(t *testing.T) {
	_, err := ParseAllowlist("/etc/egressd/allow.d/web.yaml", "web", []byte("user: web\nallow:\n  - \"*.cdn.example.com:443\"\n"))
	if err == nil || !strings.Contains(err.Error(), "web.yaml:3:5") || !strings.Contains(err.Error(), "needs dns: proxy") {
		t.Fatalf("wildcard without dns: proxy: %v", err)
	}
	_, err = ParseAllowlist("/etc/egressd/allow.d/web.yaml", "web", []byte("user: web\ndns_unlisted: answer\n"))
	if err == nil || !strings.Contains(err.Error(), "web.yaml:2:15") || !strings.Contains(err.Error(), "only with dns: proxy") {
		t.Fatalf("dns_unlisted without dns: proxy: %v", err)
	}
	a, err := ParseAllowlist("/etc/egressd/allow.d/web.yaml", "web", []byte("user: web\ndns: proxy\ndns_unlisted: answer\nallow:\n  - \"*.cdn.example.com:443\"\n  - api.example.com:443\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a.DNS != DNSProxy || a.DNSUnlisted != UnlistedAnswer || len(a.Names()) != 1 || a.Names()[0] != "api.example.com" {
		t.Fatalf("parsed %+v, names %v", a, a.Names())
	}
}

func TestParseAllowlistUnit(t *testing.T) {
	a, err := ParseAllowlist("web.yaml", "web", []byte("unit: php-fpm@shop.service\nallow:\n  - 192.0.2.1:443\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a.Unit != "php-fpm@shop.service" || a.User != "" || !a.IsUnit() || a.UnitPos.Line != 1 || a.UnitPos.Col != 7 {
		t.Fatalf("got unit %q user %q at %v", a.Unit, a.User, a.UnitPos)
	}
	if _, err := ParseAllowlist("s.yaml", "s", []byte("unit: shop.slice\n")); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ data, want string }{
		{"unit: web.socket\n", "x.yaml:1:7: unit: \"web.socket\" is not a service or slice unit name"},
		{"unit: web\n", "x.yaml:1:7: unit: \"web\" is not a service or slice unit name"},
		{"unit: php@.service\n", "x.yaml:1:7: unit: \"php@.service\" is a template"},
		{"unit: system.slice\n", "x.yaml:1:7: unit: system.slice cannot be restricted"},
		{"unit: -.slice\n", "x.yaml:1:7: unit: -.slice cannot be restricted"},
		{"unit: egressd.service\n", "x.yaml:1:7: unit: egressd.service cannot be restricted"},
		{"unit: \"a b.service\"\n", "x.yaml:1:7: unit: \"a b.service\" is not"},
		{"unit: ../x.service\n", "x.yaml:1:7: unit: \"../x.service\" is not"},
		{"user: web\nunit: web.service\n", "x.yaml:2:7: unit: an allowlist restricts a user or a unit, not both"},
		{"unit: web.service\ndns: proxy\n", "x.yaml:1:7: dns: proxy is not available for a unit allowlist"},
		{"unit: [a.service]\n", "x.yaml:1:7: unit:"},
		{"allow: []\n", "missing required key \"user\""},
	} {
		_, err := ParseAllowlist("x.yaml", "x", []byte(tt.data))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error = %v, want it to contain %q", tt.data, err, tt.want)
		}
	}
}

func TestLoadDuplicateUnit(t *testing.T) {
	dir := t.TempDir()
	allow := filepath.Join(dir, "allow.d")
	if err := os.Mkdir(allow, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{
		"a.yaml": "unit: web.service\n",
		"b.yaml": "unit: web.service\n",
		"c.yaml": "unit: other.service\n", // two unit allowlists are not two allowlists of user ""
		"d.yaml": "user: www-data\n",
	} {
		if err := os.WriteFile(filepath.Join(allow, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	lists, _, err := loadAllowDir(Trust{Above: dir}.walker(), allow)
	if err == nil || !strings.Contains(err.Error(), `b.yaml:1:7: unit "web.service" already has an allowlist in`) {
		t.Fatalf("lists %v, error %v", lists, err)
	}
	if strings.Contains(err.Error(), "other.service") || strings.Contains(err.Error(), `user ""`) {
		t.Fatalf("a unit allowlist was taken for a duplicate: %v", err)
	}
}
