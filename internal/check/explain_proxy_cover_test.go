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

// proxyKernel is a planKernel that also holds the DNS proxy's elements.
type proxyKernel struct {
	*planKernel
	proxy []ruleset.ProxyElement
}

func (k *proxyKernel) ReadProxy() ([]ruleset.ProxyElement, error) { return k.proxy, nil }
func (k *proxyKernel) AddProxy([]ruleset.ProxyElement) error      { return nil }
func (k *proxyKernel) DeleteProxy([]ruleset.ProxyElement) error   { return nil }

// check --explain for a dns: proxy allowlist: an address the proxy answered
// the service is allowed through the proxy's set (naming the entry and the
// name it was answered for, and when it ends); a name no entry matches is
// refused by the proxy; a name an entry matches but the service has not
// resolved yet is not allowed yet, and says why.
func TestExplainProxy(t *testing.T) {
	o := fixture(t, map[string]string{
		"egressd.yaml":       "resolvers: [192.0.2.53]\n",
		"allow.d/alice.yaml": "user: alice\ndns: proxy\nallow: [\"*.cdn.example.test:443\"]\n",
	})
	addrs := map[string][]string{"img.cdn.example.test": {"203.0.113.9"}, "new.cdn.example.test": {"203.0.113.10"}, "evil.example.test": {"198.51.100.66"}}
	o.NewQuerier = answers(addrs, resolver.SourceDNS)
	answered := netip.MustParseAddr("203.0.113.9")
	o.Kernel = &proxyKernel{planKernel: applied(t, o, addrs), proxy: []ruleset.ProxyElement{
		{UID: 1001, Element: ruleset.Element{Proto: config.TCP, AddrFrom: answered, AddrTo: answered, PortFrom: 443, PortTo: 443}, Timeout: 42 * time.Second, Name: "img.cdn.example.test"},
		{UID: 2002, Element: ruleset.Element{Proto: config.TCP, AddrFrom: netip.MustParseAddr("203.0.113.10"), AddrTo: netip.MustParseAddr("203.0.113.10"), PortFrom: 443, PortTo: 443}, Timeout: time.Minute},
	}}

	x, err := Explain(context.Background(), o, "alice", "img.cdn.example.test:443")
	if err != nil {
		t.Fatal(err)
	}
	if x.Verdict != "allowed" || len(x.Addresses) != 1 || !x.Addresses[0].Allowed {
		t.Fatalf("answered name: %s (%s) %+v", x.Verdict, x.Reason, x.Addresses)
	}
	av := x.Addresses[0]
	for _, want := range []string{"*.cdn.example.test:443 (", "answered by the DNS proxy for img.cdn.example.test"} {
		if !strings.Contains(av.Entry, want) {
			t.Errorf("entry %q lacks %q", av.Entry, want)
		}
	}
	if !strings.Contains(av.Note, "drops it in 42s unless the service asks again") || !strings.Contains(x.ProxyNote, "img.cdn.example.test matches *.cdn.example.test:443") {
		t.Errorf("note %q, proxy note %q", av.Note, x.ProxyNote)
	}

	var b strings.Builder
	x.WriteText(&b)
	for _, want := range []string{
		"ALLOWED: user alice (uid 1001) → img.cdn.example.test:443\n",
		"  dns: proxy: img.cdn.example.test matches *.cdn.example.test:443",
		"  203.0.113.9:443/tcp allowed by *.cdn.example.test:443 (",
		"    note: the kernel drops it in 42s unless the service asks again\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, b.String())
		}
	}

	// Another uid's answer is not alice's.
	x, err = Explain(context.Background(), o, "alice", "new.cdn.example.test:443")
	if err != nil {
		t.Fatal(err)
	}
	if x.Verdict != "denied" || len(x.Addresses) != 1 || x.Addresses[0].Allowed || !strings.Contains(x.Addresses[0].Note, "not answered to the service through the proxy yet") {
		t.Errorf("matching name not answered to alice: %s %+v", x.Verdict, x.Addresses)
	}

	x, err = Explain(context.Background(), o, "alice", "evil.example.test:443")
	if err != nil {
		t.Fatal(err)
	}
	if x.Verdict != "denied" || !strings.Contains(x.ProxyNote, "no entry matches evil.example.test: the proxy answers the service's queries for it REFUSED") {
		t.Errorf("unlisted name: %s, proxy note %q", x.Verdict, x.ProxyNote)
	}
}
