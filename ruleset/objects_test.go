package ruleset

import (
	"net/netip"
	"time"

	"github.com/egressd/egressd/config"
)

// The deny log modes every layout test runs in.
var everyDenyLog = []config.DenyLog{
	{Mode: config.LogNFLOG, Group: 3, Rate: config.Rate{Count: 10, Unit: "second"}, Prefix: "egressd"},
	{Mode: config.LogKernel, Rate: config.Rate{Count: 5, Unit: "minute"}, Prefix: "egressd"},
	{Mode: config.LogNone},
}

// everyKindPlan has every kind of allowlist: users with dns: resolvers,
// none and proxy, enforce and audit; literal addresses, ranges, IPv4 and
// IPv6, elements with a lifetime; unit allowlists (resolvers, audit) with
// cgroups (units false: without them).
func everyKindPlan(dl config.DenyLog, units bool) Plan {
	keys := UnitKeys([]string{"web", "batch"})
	d := Desired{
		Allowlists: []Allowlist{
			{Name: "a", Subject: UserSubject(4001), DNS: true, Elements: []Element{
				ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.10/32"), 443, 443),
				ElementFor(config.TCP, netip.MustParsePrefix("198.51.100.0/24"), 8000, 8100),
				ElementFor(config.UDP, netip.MustParsePrefix("2001:db8::/64"), 53, 53),
				ElementFor(config.TCP, netip.MustParsePrefix("2001:db8::10/128"), 443, 443),
			}},
			{Name: "b", Subject: UserSubject(4002), Proxy: true, Audit: true, Listen: true},
			{Name: "c", Subject: UserSubject(4003), Elements: []Element{
				ElementFor(config.UDP, netip.MustParsePrefix("203.0.113.0/24"), 5353, 5353),
			}},
			{Name: "web", Subject: UnitSubject("web.service", keys["web"]), DNS: true, Listen: true, Elements: []Element{
				ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.10/32"), 443, 443),
				ElementFor(config.TCP, netip.MustParsePrefix("2001:db8::/48"), 443, 444),
			}},
			{Name: "batch", Subject: UnitSubject("batch.service", keys["batch"]), Audit: true, Elements: []Element{
				ElementFor(config.UDP, netip.MustParsePrefix("198.51.100.0/24"), 53, 53),
			}},
		},
		Resolvers: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53"), netip.MustParseAddrPort("[2001:db8::53]:53")},
		DenyLog:   dl,
		ProxyPort: 153,
		Cgroups:   []Cgroup{{ID: 7, Allowlist: "web"}, {ID: 8, Allowlist: "batch"}},
	}
	if !units {
		d.Allowlists, d.Cgroups = d.Allowlists[:3], nil
	}
	p := Render(d)
	// An element from DNS, with a lifetime.
	name := SetID{Allowlist: "c"}.Name()
	p.Sets[name] = append(p.Sets[name], ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.77/32"), 443, 443))
	sortElements(p.Sets[name])
	until := make([]time.Time, len(p.Sets[name]))
	for i, e := range p.Sets[name] {
		if e.AddrFrom == netip.MustParseAddr("192.0.2.77") {
			until[i] = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
		}
	}
	p.Until = map[string][]time.Time{name: until}
	return p
}
