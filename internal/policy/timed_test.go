package policy

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/resolver"
	"github.com/egressd/egressd/ruleset"
)

// Each address from DNS carries its own end (Until, aligned with the
// elements, literals never ending, whatever their order); a wildcard adds
// nothing (only the proxy's answers); a private answer is dropped for an
// allowlist that did not opt in; a unit allowlist is keyed by its unit key.
func TestBuildDesiredTimed(t *testing.T) {
	parse := func(name, body string) *config.Allowlist {
		a, err := config.ParseAllowlist("/etc/egressd/allow.d/"+name+".yaml", name, []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	c := &config.Config{Allowlists: []*config.Allowlist{
		parse("alice", "user: alice\ndns: proxy\nallow: [api.example.test:443, 192.0.2.1:22, \"*.cdn.example.test:443\", lan.example.test:80]\n"),
		parse("shop", "unit: shop.service\nallow: [198.51.100.0/24:443]\n"),
		parse("ghost", "user: ghost\nallow: [192.0.2.9:443]\n"), // its user does not resolve: not in the plan
	}}
	users := LookupUsers(c, func(name string) (uint32, error) {
		if name == "alice" {
			return 1001, nil
		}
		return 0, errors.New("no such user")
	})
	until := time.Unix(1700000600, 0)
	lifetimes := func(dst []resolver.Lifetime, name string) []resolver.Lifetime {
		switch name {
		case "api.example.test":
			return append(dst, resolver.Lifetime{Addr: netip.MustParseAddr("203.0.113.5"), Until: until})
		case "lan.example.test":
			return append(dst, resolver.Lifetime{Addr: netip.MustParseAddr("10.0.0.5"), Until: until})
		}
		return dst
	}
	d := Build(Inputs{Config: c, Users: users, Lifetimes: lifetimes, FromHosts: func(string, netip.Addr) bool { return false }}).Ruleset
	if len(d.Allowlists) != 2 || d.Allowlists[0].Name != "alice" || d.Allowlists[1].Name != "shop" {
		t.Fatalf("allowlists %+v", d.Allowlists)
	}
	alice := d.Allowlists[0]
	if alice.Subject != ruleset.UserSubject(1001) || !alice.Proxy || alice.DNS {
		t.Errorf("alice %+v", alice)
	}
	if len(alice.Elements) != 2 || len(alice.Until) != 2 {
		t.Fatalf("alice elements %v until %v: want the DNS address and the literal", alice.Elements, alice.Until)
	}
	if alice.Elements[0].AddrFrom != netip.MustParseAddr("203.0.113.5") || !alice.Until[0].Equal(until) {
		t.Errorf("first element %v until %v", alice.Elements[0], alice.Until[0])
	}
	if alice.Elements[1].AddrFrom != netip.MustParseAddr("192.0.2.1") || !alice.Until[1].IsZero() {
		t.Errorf("the literal %v ends %v, want never", alice.Elements[1], alice.Until[1])
	}
	shop := d.Allowlists[1]
	if shop.Subject != ruleset.UnitSubject("shop.service", ruleset.UnitKeys([]string{"shop"})["shop"]) || shop.Until != nil || len(shop.Elements) != 1 {
		t.Errorf("shop %+v", shop)
	}
}
