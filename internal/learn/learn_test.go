package learn

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/deny"
)

func TestProposeLoadsAndCovers(t *testing.T) {
	a, err := config.ParseAllowlist("/etc/egressd/allow.d/billing.yaml", "billing",
		[]byte("user: billing\nmode: audit\ndns: none\nallow:\n  - api.example.test:443\n  - 198.51.100.0/24:8000-8100\n"))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	obs := []deny.RecentEntry{
		{Allowlist: "billing", Audit: true, Proto: "tcp", Dst: "203.0.113.5", DPort: 443, Count: 12, First: at, Last: at.Add(time.Hour)},
		{Allowlist: "billing", Proto: "tcp", Dst: "203.0.113.5", DPort: 443, Count: 3, First: at.Add(time.Minute), Last: at.Add(2 * time.Hour)},
		{Allowlist: "billing", Audit: true, Proto: "udp", Dst: "2001:db8::53", DPort: 5353, Count: 2, First: at, Last: at},
		{Allowlist: "billing", Audit: true, Proto: "tcp", Dst: "192.0.2.10", DPort: 8443, Names: []string{"api.example.test"}, Count: 1, First: at, Last: at},
		{Allowlist: "billing", Audit: true, Proto: "tcp", Dst: "198.51.100.7", DPort: 8080, Count: 4, First: at, Last: at},
		{Allowlist: "billing", Audit: true, Proto: "icmp", Dst: "192.0.2.99", Count: 1, First: at, Last: at},
		{Allowlist: "billing", Audit: true, Proto: "tcp", Dst: "192.0.2.77", DPort: 22, Count: 9, First: at.Add(-48 * time.Hour), Last: at.Add(-47 * time.Hour)},
		{Allowlist: "web", Proto: "tcp", Dst: "192.0.2.12", DPort: 443, Count: 5, First: at, Last: at},
	}
	out := Propose(a, obs, at.Add(-24*time.Hour))
	t.Logf("proposal:\n%s", out)
	got, err := config.ParseAllowlist("proposal.yaml", "billing", []byte(out))
	if err != nil {
		t.Fatalf("the proposal does not load as an allowlist: %v\n%s", err, out)
	}
	var entries []string
	for _, e := range got.Entries {
		entries = append(entries, e.Raw)
	}
	want := []string{"api.example.test:443", "198.51.100.0/24:8000-8100", "203.0.113.5:443", "[2001:db8::53]:5353/udp", "api.example.test:8443"}
	if strings.Join(entries, " ") != strings.Join(want, " ") {
		t.Errorf("entries %v, want %v", entries, want)
	}
	if got.Mode != config.ModeAudit || got.DNS != config.DNSNone || got.User != "billing" {
		t.Errorf("settings not kept: mode %s, dns %s, user %s", got.Mode, got.DNS, got.User)
	}
	for _, s := range []string{"observed 15× (12 audited, 3 denied)", "allowlists name tcp and udp only", "# already in the allowlist",
		"# 198.51.100.7:8080: allowed now by 198.51.100.0/24:8000-8100"} {
		if !strings.Contains(out, s) {
			t.Errorf("proposal lacks %q", s)
		}
	}
	if strings.Contains(out, "192.0.2.77") || strings.Contains(out, "192.0.2.12") {
		t.Error("an observation older than --since, or another allowlist's, was proposed")
	}
}

func TestProposeUnit(t *testing.T) {
	a, err := config.ParseAllowlist("/etc/egressd/allow.d/shop.yaml", "shop", []byte("unit: php-fpm@shop.service\nallow: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	out := Propose(a, []deny.RecentEntry{{Allowlist: "shop", Unit: "php-fpm@shop.service", Proto: "tcp", Dst: "203.0.113.5", DPort: 443, Count: 1, First: at, Last: at}}, at.Add(-time.Hour))
	got, err := config.ParseAllowlist("proposal.yaml", "shop", []byte(out))
	if err != nil || got.Unit != "php-fpm@shop.service" || got.User != "" || len(got.Entries) != 1 {
		t.Fatalf("proposal for a unit allowlist: %v\n%s", err, out)
	}
}

func proxyAllowlist(t *testing.T) *config.Allowlist {
	t.Helper()
	a, err := config.ParseAllowlist("/etc/egressd/allow.d/fetcher.yaml", "fetcher",
		[]byte("user: fetcher\ndns: proxy\nmode: audit\nallow:\n  - api.example.test:443\n"))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func entriesOf(t *testing.T, out string) []string {
	t.Helper()
	got, err := config.ParseAllowlist("proposal.yaml", "fetcher", []byte(out))
	if err != nil {
		t.Fatalf("the proposal does not load as an allowlist: %v\n%s", err, out)
	}
	var entries []string
	for _, e := range got.Entries {
		entries = append(entries, e.Raw)
	}
	return entries
}

// Issue 22: in audit mode the service asks a legitimate name once and an
// attacker's name five times, both answered with one address. A proposal
// that picks the most-asked name launders the attacker's: installed as it
// is, the attacker re-points its name and reaches its own server. An
// address reached through several names is proposed as the address, every
// name listed beside it for review, in name order, never by count.
func TestProposeNamesNotLaundered(t *testing.T) {
	at := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	doc := deny.RecentDoc{
		Entries: []deny.RecentEntry{
			{Allowlist: "fetcher", Audit: true, Proto: "tcp", Dst: "192.0.2.10", DPort: 443, Count: 6, First: at, Last: at},
			{Allowlist: "fetcher", Audit: true, Proto: "tcp", Dst: "192.0.2.20", DPort: 443, Count: 1, First: at, Last: at},
		},
		Resolved: []deny.ResolvedEntry{
			{Allowlist: "fetcher", Name: "files.example.test", Addrs: []string{"192.0.2.10"}, Count: 1, First: at, Last: at},
			{Allowlist: "fetcher", Name: "c2.attacker.example", Addrs: []string{"192.0.2.10"}, Count: 5, First: at, Last: at},
			{Allowlist: "fetcher", Name: "only.example.test", Addrs: []string{"192.0.2.20"}, Count: 1, First: at, Last: at},
		},
	}
	out := ProposeDoc(proxyAllowlist(t), doc, at.Add(-time.Hour))
	t.Logf("proposal:\n%s", out)
	entries := strings.Join(entriesOf(t, out), " ")
	if strings.Contains(entries, "attacker") || strings.Contains(entries, "files.example.test") {
		t.Errorf("a name was picked for an address several names led to: %s", entries)
	}
	if entries != "api.example.test:443 192.0.2.10:443 only.example.test:443" {
		t.Errorf("entries %s, want the address reached through two names as a literal, the single name as a name (control)", entries)
	}
	for _, s := range []string{"REVIEW", "c2.attacker.example:443", "files.example.test:443"} {
		if !strings.Contains(out, s) {
			t.Errorf("the proposal does not mention %q", s)
		}
	}
	if !strings.Contains(out, "asked 5×") || !strings.Contains(out, "asked 1×") {
		t.Errorf("the names' counts are not shown for review")
	}
}

// Issue 22: names the service chose are written so that the proposal
// always loads: a name that is not a valid entry appears only in a
// comment, escaped, and the address it led to is proposed as a literal.
func TestProposeUnsafeNames(t *testing.T) {
	at := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	bad := []string{"x#y.example.test", "{a}.example.test", "&a.example.test", "!a.example.test", "|a.example.test",
		`a\010b.example.test`, "a\nallow: [0.0.0.0/0:1-65535]\n#.example.test", "*.example.test", `"q".example.test`}
	var doc deny.RecentDoc
	for i, n := range bad {
		addr := fmt.Sprintf("198.51.100.%d", i+1)
		doc.Entries = append(doc.Entries, deny.RecentEntry{Allowlist: "fetcher", Audit: true, Proto: "tcp", Dst: addr, DPort: 443, Count: 1, First: at, Last: at})
		doc.Resolved = append(doc.Resolved, deny.ResolvedEntry{Allowlist: "fetcher", Name: n, Addrs: []string{addr}, Count: 1, First: at, Last: at},
			deny.ResolvedEntry{Allowlist: "fetcher", Name: "refused." + n, Count: 1, Refused: 1, First: at, Last: at})
	}
	out := ProposeDoc(proxyAllowlist(t), doc, at.Add(-time.Hour))
	t.Logf("proposal:\n%s", out)
	entries := entriesOf(t, out)
	if len(entries) != 1+len(bad) {
		t.Errorf("entries %v: want the existing one and one literal per address", entries)
	}
	for _, e := range entries[1:] {
		if !strings.HasPrefix(e, "198.51.100.") {
			t.Errorf("entry %q: want a literal", e)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		for _, r := range line {
			if r < 0x20 || r == 0x7f {
				t.Errorf("a control character in line %q", line)
			}
		}
	}
	if !strings.Contains(out, `x#y.example.test`) || !strings.Contains(out, `\n`) {
		t.Errorf("the names are not listed (escaped) for review")
	}
}

// Binds observed in audit mode (bind_denied) become listen: entries; they
// are never proposed as destinations.
func TestProposeListen(t *testing.T) {
	a, err := config.ParseAllowlist("/etc/egressd/allow.d/web.yaml", "web",
		[]byte("user: web\nmode: audit\nallow: [192.0.2.12:443]\nlisten: [tcp:8080]\n"))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	obs := []deny.RecentEntry{
		{Allowlist: "web", Listen: true, Audit: true, Proto: "tcp", Dst: "0.0.0.0", DPort: 9090, Count: 2, First: at, Last: at},
		{Allowlist: "web", Listen: true, Audit: true, Proto: "udp", Dst: "::", DPort: 5353, Count: 1, First: at, Last: at},
		{Allowlist: "web", Proto: "tcp", Dst: "192.0.2.20", DPort: 443, Count: 1, First: at, Last: at},
	}
	out := Propose(a, obs, time.Time{})
	got, err := config.ParseAllowlist("proposal.yaml", "web", []byte(out))
	if err != nil {
		t.Fatalf("the proposal does not load as an allowlist: %v\n%s", err, out)
	}
	var listen []string
	for _, l := range got.Listen {
		listen = append(listen, l.String())
	}
	if strings.Join(listen, " ") != "tcp:8080 tcp:9090 udp:5353" {
		t.Fatalf("listen: %v\n%s", listen, out)
	}
	for _, e := range got.Entries {
		if strings.Contains(e.Raw, "9090") || strings.Contains(e.Raw, "5353") {
			t.Fatalf("a bind proposed as a destination: %s\n%s", e.Raw, out)
		}
	}
	// No listen: key and nothing bound: listening stays unrestricted.
	b, _ := config.ParseAllowlist("/etc/egressd/allow.d/b.yaml", "b", []byte("user: b\nallow: []\n"))
	if out := Propose(b, nil, time.Time{}); strings.Contains(out, "listen:") {
		t.Fatalf("listen: proposed for an allowlist without one:\n%s", out)
	}
}

// Red team (issue 22): three sibling names become *.parent, but a parent
// that is a public suffix (co.uk, github.io, s3.amazonaws.com: anyone can
// register a name under it) is no service's domain: the wildcard would
// allow every site under it, the attacker's included, to an admin who
// applies the proposal as it is. The names are proposed one by one.
// Control: siblings under an ordinary parent still become its wildcard.
func TestProposeNoWildcardOverPublicSuffix(t *testing.T) {
	at := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		names []string
		want  string
	}{
		{[]string{"bbc.co.uk", "itv.co.uk", "sky.co.uk"}, "api.example.test:443 bbc.co.uk:443 itv.co.uk:443 sky.co.uk:443"},
		{[]string{"a.github.io", "b.github.io", "c.github.io"}, "api.example.test:443 a.github.io:443 b.github.io:443 c.github.io:443"},
		{[]string{"a.s3.amazonaws.com", "b.s3.amazonaws.com", "c.s3.amazonaws.com"}, "api.example.test:443 a.s3.amazonaws.com:443 b.s3.amazonaws.com:443 c.s3.amazonaws.com:443"},
		{[]string{"a.img.example.test", "b.img.example.test", "c.img.example.test"}, "api.example.test:443 *.img.example.test:443"},
	} {
		var doc deny.RecentDoc
		for i, n := range tc.names {
			addr := fmt.Sprintf("192.0.2.%d", 30+i)
			doc.Entries = append(doc.Entries, deny.RecentEntry{Allowlist: "fetcher", Audit: true, Proto: "tcp", Dst: addr, DPort: 443, Count: 1, First: at, Last: at})
			doc.Resolved = append(doc.Resolved, deny.ResolvedEntry{Allowlist: "fetcher", Name: n, Addrs: []string{addr}, Count: 1, First: at, Last: at})
		}
		out := ProposeDoc(proxyAllowlist(t), doc, at.Add(-time.Hour))
		if got := strings.Join(entriesOf(t, out), " "); got != tc.want {
			t.Errorf("names %v: entries %s, want %s\n%s", tc.names, got, tc.want, out)
		}
	}
}
