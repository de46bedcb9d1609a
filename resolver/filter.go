package resolver

import "net/netip"

var refused = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),     // "this network"
	netip.MustParsePrefix("100.64.0.0/10"), // carrier-grade NAT, often the host's LAN
	netip.MustParsePrefix("255.255.255.255/32"),
	netip.MustParsePrefix("64:ff9b:1::/48"), // local-use NAT64
}

// Internal reports whether a DNS answer points at an address that an
// allowlisted name must not open by default: loopback, private, link-local,
// unspecified, multicast, CGNAT or broadcast (DNS rebinding towards the
// metadata service, the host itself or the LAN).
func Internal(a netip.Addr) bool {
	a = a.Unmap()
	if a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsUnspecified() ||
		a.IsMulticast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() {
		return true
	}
	for _, p := range refused {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Filter drops internal addresses unless privateOK, then keeps at most max
// addresses (in answer order). It returns what it kept and how many it dropped.
func Filter(addrs []netip.Addr, privateOK bool, max int) ([]netip.Addr, int) {
	out := make([]netip.Addr, 0, min(len(addrs), max))
	dropped := 0
	for _, a := range addrs {
		a = a.Unmap()
		if (!privateOK && Internal(a)) || (max > 0 && len(out) >= max) {
			dropped++
			continue
		}
		out = append(out, a)
	}
	return out, dropped
}
