package check

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/resolver"
	"github.com/egressd/egressd/ruleset"
)

// reportKernel holds, beside the plan, the DNS proxy's answers and the
// time the kernel's elements have left.
type reportKernel struct {
	*proxyKernel
	lifetimes map[string]map[ruleset.Element]time.Duration
}

func (k *reportKernel) ReadLifetimes() (map[string]map[ruleset.Element]time.Duration, error) {
	return k.lifetimes, nil
}

func allowlistReport(t *testing.T, r *Report, name string) AllowlistReport {
	t.Helper()
	for _, a := range r.Allowlists {
		if a.Name == name {
			return a
		}
	}
	t.Fatalf("no allowlist %s in %+v", name, r.Allowlists)
	return AllowlistReport{}
}

// The report per allowlist: a dns: proxy allowlist's answers in the
// kernel, when its addresses from DNS end (first and last), and a unit
// allowlist's addresses and cgroups (none: the unit does not run here),
// its status following drift on its own set.
func TestRunReportDetails(t *testing.T) {
	o := fixture(t, map[string]string{
		"egressd.yaml":       "resolvers: [192.0.2.53]\n",
		"allow.d/alice.yaml": "user: alice\ndns: proxy\nallow: [\"*.cdn.example.test:443\", api.example.test:443, mirror.example.test:443]\n",
		"allow.d/web.yaml":   "unit: egressd-test-web.service\nallow: [192.0.2.12:443]\n",
	})
	addrs := map[string][]string{"api.example.test": {"203.0.113.5"}, "mirror.example.test": {"203.0.113.6"}}
	o.NewQuerier = answers(addrs, resolver.SourceDNS)
	o.UnitDir = t.TempDir()
	pk := applied(t, o, addrs)
	el := func(a string) ruleset.Element {
		ad := netip.MustParseAddr(a)
		return ruleset.Element{Proto: config.TCP, AddrFrom: ad, AddrTo: ad, PortFrom: 443, PortTo: 443}
	}
	k := &reportKernel{
		proxyKernel: &proxyKernel{planKernel: pk, proxy: []ruleset.ProxyElement{
			{UID: 1001, Element: el("203.0.113.9"), Timeout: time.Minute},
			{UID: 1001, Element: el("203.0.113.10"), Timeout: time.Minute},
			{UID: 4242, Element: el("203.0.113.11"), Timeout: time.Minute}, // another uid's
		}},
		lifetimes: map[string]map[ruleset.Element]time.Duration{
			ruleset.SetName4("alice"): {el("203.0.113.5"): 30 * time.Second, el("203.0.113.6"): 90 * time.Second},
		},
	}
	o.Kernel = k
	r := Run(context.Background(), o)
	alice := allowlistReport(t, r, "alice")
	if alice.Proxied != 2 || alice.Ending != 2 || alice.EndsIn != "30s" || alice.LastEndsIn != "1m30s" || alice.DNS != "proxy" {
		t.Errorf("alice: proxied %d, ending %d in %s..%s, dns %s; want 2, 2 in 30s..1m30s, proxy", alice.Proxied, alice.Ending, alice.EndsIn, alice.LastEndsIn, alice.DNS)
	}
	web := allowlistReport(t, r, "web")
	if web.Unit != "egressd-test-web.service" || web.Addresses != 1 || web.Cgroups != 0 || web.Status != "ok" || web.UID != nil {
		t.Errorf("web: %+v", web)
	}

	// check --explain says how long the kernel keeps an address by itself.
	x, err := Explain(context.Background(), o, "alice", "api.example.test:443")
	if err != nil {
		t.Fatal(err)
	}
	if len(x.Addresses) != 1 || x.Addresses[0].KernelLifetime != "30s" {
		t.Fatalf("explain %+v", x.Addresses)
	}
	var b strings.Builder
	x.WriteText(&b)
	if !strings.Contains(b.String(), "    kernel lifetime: 30s left; the kernel removes the element then") {
		t.Errorf("text lacks the kernel lifetime:\n%s", b.String())
	}

	pk.findings = []ruleset.Finding{{Kind: "elements", Object: ruleset.SetID{Allowlist: "web", Kind: ruleset.SubjectUnit}.Name(), Detail: "1 missing"}}
	r = Run(context.Background(), o)
	if s := status(r, "web"); s != "drift" {
		t.Errorf("web with drift on its set: status %q", s)
	}
	if s := status(r, "alice"); s != "ok" {
		t.Errorf("alice with drift on web's set: status %q", s)
	}
}
