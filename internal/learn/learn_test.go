package learn

import (
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
