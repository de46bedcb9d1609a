package resolver

import "net/netip"

var refused = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),     // "this network"
	netip.MustParsePrefix("100.64.0.0/10"), // carrier-grade NAT, often the host's LAN
	// Not globally reachable (IANA special-purpose registry) and not known
	// to IsPrivate: what answers there is on this side of the internet.
	netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments (RFC 6890)
	netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking (RFC 2544), in use as internal space
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved (class E); 255.255.255.255 included
	netip.MustParsePrefix("fec0::/10"),      // site-local (deprecated, RFC 3879): a LAN's own space
	netip.MustParsePrefix("64:ff9b:1::/48"), // local-use NAT64 (RFC 8215): translates into the site's own IPv4 space
	netip.MustParsePrefix("::/96"),          // IPv4-compatible (deprecated, RFC 4291 2.5.5.1): no public use; :: and ::1 included
}

// Prefixes whose addresses stand for an IPv4 host: a packet sent to one of
// them is delivered, by a translator or a tunnel, to the IPv4 address it
// embeds. Such an address is judged by that IPv4 address.
var (
	nat64WKP  = netip.MustParsePrefix("64:ff9b::/96") // RFC 6052 well-known NAT64 prefix: the last 32 bits
	sixToFour = netip.MustParsePrefix("2002::/16")    // 6to4 (RFC 3056): bits 16-47 are the IPv4 tunnel end
	teredo    = netip.MustParsePrefix("2001::/32")    // Teredo (RFC 4380): server in bits 32-63, client inverted in the last 32
)

// Embedded returns the IPv4 addresses that an IPv6 address stands for
// (NAT64 well-known prefix, 6to4, Teredo; IPv4-mapped addresses are unmapped
// by the caller), or nil.
func Embedded(a netip.Addr) []netip.Addr {
	if !a.Is6() || a.Is4In6() {
		return nil
	}
	b := a.As16()
	v4 := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{b[i], b[i+1], b[i+2], b[i+3]}) }
	switch {
	case nat64WKP.Contains(a):
		return []netip.Addr{v4(12)}
	case sixToFour.Contains(a):
		return []netip.Addr{v4(2)}
	case teredo.Contains(a):
		client := [4]byte{^b[12], ^b[13], ^b[14], ^b[15]}
		return []netip.Addr{v4(4), netip.AddrFrom4(client)}
	}
	return nil
}

// Internal reports whether a DNS answer points at an address that an
// allowlisted name must not open by default: loopback, private, link-local,
// unspecified, multicast, CGNAT, broadcast, or another range the IANA
// registry marks not globally reachable (192.0.0.0/24, 198.18.0.0/15,
// 240.0.0.0/4, site-local fec0::/10) (DNS rebinding towards the metadata
// service, the host itself or the LAN). An IPv6 address that embeds
// an IPv4 address (IPv4-mapped, NAT64 64:ff9b::/96, 6to4, Teredo) is judged
// by the IPv4 address as well: on a DNS64/NAT64 network 64:ff9b::a9fe:a9fe
// is the metadata service.
func Internal(a netip.Addr) bool {
	a = a.Unmap()
	if internal(a) {
		return true
	}
	for _, e := range Embedded(a) {
		if internal(e) {
			return true
		}
	}
	return false
}

func internal(a netip.Addr) bool {
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

// Accepts is the private-answer rule, its one home: an address an answer
// for name gives may be allowed unless it is Internal, except where the
// allowlist opted in (privateOK) or the hosts file gives it (fromHosts, may
// be nil; asked only about internal addresses): hosts entries are taken as
// written, like literal entries.
func Accepts(a netip.Addr, privateOK bool, name string, fromHosts func(name string, a netip.Addr) bool) bool {
	return privateOK || !Internal(a) || (fromHosts != nil && fromHosts(name, a))
}

// FilterAnswer is Filter applied to one answer: an answer from the hosts
// file is taken as written (see Accepts).
func FilterAnswer(res Result, privateOK bool, max int) ([]netip.Addr, int) {
	return Filter(res.Addrs, privateOK || res.Source == SourceHosts, max)
}

// Filter drops internal addresses unless privateOK, then keeps at most max
// addresses (in answer order). It returns what it kept and how many it dropped.
func Filter(addrs []netip.Addr, privateOK bool, max int) ([]netip.Addr, int) {
	out := make([]netip.Addr, 0, min(len(addrs), max))
	dropped := 0
	for _, a := range addrs {
		a = a.Unmap()
		if !Accepts(a, privateOK, "", nil) || (max > 0 && len(out) >= max) {
			dropped++
			continue
		}
		out = append(out, a)
	}
	return out, dropped
}
