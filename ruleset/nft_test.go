package ruleset

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/egressd/egressd/config"
)

func nftSample() Plan {
	return Render(Desired{
		Allowlists: []Allowlist{
			{Name: "billing", Subject: UserSubject(1001), DNS: true, Elements: []Element{
				ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.1/32"), 443, 443),
				ElementFor(config.TCP, netip.MustParsePrefix("198.51.100.0/24"), 443, 443),
				ElementFor(config.UDP, netip.MustParsePrefix("2001:db8::/64"), 1000, 2000),
			}},
			{Name: "reports", Subject: UserSubject(1002), Audit: true, Elements: []Element{
				ElementFor(config.TCP, netip.MustParsePrefix("203.0.113.7/32"), 5432, 5432),
			}},
		},
		Resolvers: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53")},
		DenyLog:   config.DenyLog{Mode: config.LogNFLOG, Group: 3, Rate: config.Rate{Count: 10, Unit: "second"}, Prefix: "egressd"},
	})
}

// setBody is the text of one set's block.
func setBody(t *testing.T, text, name string) string {
	t.Helper()
	i := strings.Index(text, "\tset "+name+" {")
	if i < 0 {
		t.Fatalf("no set %s in\n%s", name, text)
	}
	j := strings.Index(text[i:], "\n\t}\n")
	return text[i : i+j]
}

// Elements are rendered where the kernel holds them: keyed by uid, exact
// ones in the hash sets, prefixes and ranges in the interval sets.
func TestPlanNFTPlacesElements(t *testing.T) {
	text := nftSample().NFT()
	for set, want := range map[string][]string{
		"users":    {`1001 comment "billing"`, `1002 comment "reports"`},
		"owners":   {"1001 . 1001", "1002 . 1002"},
		"dnsusers": {"1001"},
		"audit":    {"1002"},
		"allow4":   {"1001 . tcp . 192.0.2.1 . 443", "1002 . tcp . 203.0.113.7 . 5432"},
		"allow4r":  {"1001 . tcp . 198.51.100.0/24 . 443"},
		"allow6r":  {"1001 . udp . 2001:db8::/64 . 1000-2000"},
		"dns4":     {"tcp . 192.0.2.53 . 53", "udp . 192.0.2.53 . 53"},
	} {
		body := setBody(t, text, set)
		for _, w := range want {
			if !strings.Contains(body, w) {
				t.Errorf("set %s lacks %q:\n%s", set, w, body)
			}
		}
	}
	for _, empty := range []string{"allow6", "dns4r", "dns6", "dns6r"} {
		if strings.Contains(setBody(t, text, empty), "elements") {
			t.Errorf("set %s has elements:\n%s", empty, text)
		}
	}
	if strings.Contains(setBody(t, text, "dnsusers"), "1002") {
		t.Error("reports (no dns) in dnsusers")
	}
	for _, w := range []string{"chain output {", "meta skuid @users jump restricted", "chain restricted {", "@allow6r accept", "chain deny {", `log prefix "egressd deny: " group 3`, "reject with icmpx admin-prohibited"} {
		if !strings.Contains(text, w) {
			t.Errorf("no %q in\n%s", w, text)
		}
	}
}

// A delta renders as the commands of its transaction: deletions first.
func TestDeltaNFT(t *testing.T) {
	old := nftSample()
	next := nftSample()
	next.Sets[SetName4("billing")] = []Element{ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.2/32"), 443, 443),
		ElementFor(config.TCP, netip.MustParsePrefix("198.51.100.0/24"), 443, 443)}
	got := Diff(old, next).NFT(next)
	want := "delete element inet egressd allow4 { 1001 . tcp . 192.0.2.1 . 443 }\n" +
		"add element inet egressd allow4 { 1001 . tcp . 192.0.2.2 . 443 }\n"
	if got != want {
		t.Errorf("delta:\n%s\nwant\n%s", got, want)
	}
	if s := (Delta{SetName4("nobody"): {Add: next.Sets[SetName4("billing")]}}).NFT(next); !strings.Contains(s, "cannot place") {
		t.Errorf("an allowlist without uid: %q", s)
	}
	if s := UsersNFT(map[uint32]string{7: "x"}, map[uint32]string{8: "y"}); s != "delete element inet egressd users { 8 comment \"y\" }\nadd element inet egressd users { 7 comment \"x\" }\n" {
		t.Errorf("users: %q", s)
	}
}

// A kernel that holds the plan differs in nothing; one that lost an
// element, kept an old user's elements or has elements of an unnamed uid
// shows each.
func TestKernelDiffNFT(t *testing.T) {
	p := nftSample()
	users := map[uint32]string{1001: "billing", 1002: "reports"}
	if text, n := KernelDiffNFT(p, p.Sets, users); n != 0 || text != "" {
		t.Fatalf("in sync: %d, %q", n, text)
	}
	sets := map[string][]Element{}
	for k, v := range p.Sets {
		sets[k] = v
	}
	sets[SetName4("billing")] = sets[SetName4("billing")][1:] // 192.0.2.1:443 lost
	old := ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.9/32"), 22, 22)
	sets[SetName4("gone")] = []Element{old}
	sets["uid:4242"] = []Element{old}
	text, n := KernelDiffNFT(p, sets, map[uint32]string{1001: "billing", 1002: "reports", 1003: "gone"})
	for _, w := range []string{
		`delete element inet egressd users { 1003 comment "gone" }`,
		"delete element inet egressd allow4 { 1003 . tcp . 192.0.2.9 . 22 }",
		"add element inet egressd allow4 { 1001 . tcp . 192.0.2.1 . 443 }",
		"# 1 elements keyed by uid:4242",
	} {
		if !strings.Contains(text, w) {
			t.Errorf("no %q in\n%s", w, text)
		}
	}
	if n != 4 {
		t.Errorf("%d differences, want 4:\n%s", n, text)
	}
}
