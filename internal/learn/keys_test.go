package learn

import (
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/deny"
)

// The proposal keeps the allowlist's own keys (mode, dns, private answers,
// includes) so that it loads as the same kind of allowlist; entries that
// came from an included list stay in that list; a bound port already
// allowed is a comment, and one of a protocol listen: cannot name is
// listed for review, not proposed.
func TestProposeKeepsKeys(t *testing.T) {
	a, err := config.ParseAllowlist("/etc/egressd/allow.d/web.yaml", "web",
		[]byte("user: web\nmode: audit\ndns: proxy\nallow_private_answers: true\ninclude: [ntp, os-updates]\nallow: [api.example.test:443]\nlisten: [tcp:8080]\n"))
	if err != nil {
		t.Fatal(err)
	}
	// As after ResolveIncludes: an entry of the ntp list, at its own position.
	a.Entries = append(a.Entries, config.Entry{Raw: "192.0.2.123:123/udp", Pos: config.Pos{File: "/etc/egressd/lists/ntp.yaml", Line: 1, Col: 9}})
	at := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	out := Propose(a, []deny.RecentEntry{
		{Allowlist: "web", Listen: true, Audit: true, Proto: "tcp", Dst: "0.0.0.0", DPort: 8080, Count: 1, First: at, Last: at},
		{Allowlist: "web", Listen: true, Audit: true, Proto: "sctp", Dst: "0.0.0.0", DPort: 9999, Count: 1, First: at, Last: at},
	}, time.Time{})
	for _, want := range []string{
		"mode: audit ", "dns: proxy\n", "allow_private_answers: true\n", "include: [ntp, os-updates]\n",
		"  # tcp:8080: allowed now; bound 1×", "  # sctp:9999: listen: names tcp and udp only;",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("proposal lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "192.0.2.123:123/udp") {
		t.Errorf("an included list's entry is copied into the allowlist:\n%s", out)
	}
	got, err := config.ParseAllowlist("proposal.yaml", "web", []byte(out))
	if err != nil {
		t.Fatalf("the proposal does not load: %v\n%s", err, out)
	}
	if got.Mode != config.ModeAudit || got.DNS != config.DNSProxy || !got.AllowPrivateAnswers || len(got.Includes) != 2 {
		t.Errorf("loaded back: mode %s dns %s private %v includes %v", got.Mode, got.DNS, got.AllowPrivateAnswers, got.Includes)
	}
}
