package resolver

import (
	"net/netip"
	"testing"
)

// IPv6 addresses that stand for an IPv4 host are judged by that host: a
// DNS64 resolver answering 64:ff9b::a9fe:a9fe hands out the metadata service.
func TestInternalEmbeddedIPv4(t *testing.T) {
	for _, tc := range []struct {
		addr     string
		internal bool
		why      string
	}{
		// NAT64 well-known prefix (RFC 6052): the last 32 bits.
		{"64:ff9b::a9fe:a9fe", true, "NAT64 of 169.254.169.254 (metadata)"},
		{"64:ff9b::169.254.169.254", true, "same, dotted"},
		{"64:ff9b::a00:1", true, "NAT64 of 10.0.0.1"},
		{"64:ff9b::7f00:1", true, "NAT64 of 127.0.0.1"},
		{"64:ff9b::", true, "NAT64 of 0.0.0.0"},
		{"64:ff9b::c0a8:101", true, "NAT64 of 192.168.1.1"},
		{"64:ff9b::ac10:1", true, "NAT64 of 172.16.0.1"},
		{"64:ff9b::ac1f:ffff", true, "NAT64 of 172.31.255.255"},
		{"64:ff9b::6440:1", true, "NAT64 of 100.64.0.1 (CGNAT)"},
		{"64:ff9b::e000:fb", true, "NAT64 of 224.0.0.251 (multicast)"},
		{"64:ff9b::ffff:ffff", true, "NAT64 of 255.255.255.255"},
		{"64:ff9b::808:808", false, "NAT64 of 8.8.8.8"},
		{"64:ff9b::c000:20a", false, "NAT64 of 192.0.2.10"},
		{"64:ff9b::ac20:1", false, "NAT64 of 172.32.0.1 (outside 172.16/12)"},
		// Local-use NAT64 (RFC 8215): the site's own space, refused whole.
		{"64:ff9b:1::808:808", true, "local-use NAT64"},
		// IPv4-mapped: unmapped, then judged.
		{"::ffff:169.254.169.254", true, "IPv4-mapped metadata"},
		{"::ffff:10.0.0.1", true, "IPv4-mapped 10.0.0.1"},
		{"::ffff:8.8.8.8", false, "IPv4-mapped 8.8.8.8"},
		// IPv4-compatible (deprecated): refused whole.
		{"::a9fe:a9fe", true, "IPv4-compatible metadata"},
		{"::808:808", true, "IPv4-compatible, deprecated, no public use"},
		// 6to4 (RFC 3056): bits 16-47.
		{"2002:a9fe:a9fe::1", true, "6to4 of 169.254.169.254"},
		{"2002:a00:1::1", true, "6to4 of 10.0.0.1"},
		{"2002:7f00:1::1", true, "6to4 of 127.0.0.1"},
		{"2002:808:808::1", false, "6to4 of 8.8.8.8"},
		// Teredo (RFC 4380): the client is the last 32 bits inverted.
		{"2001:0:4136:e378:8000:63bf:5601:5601", true, "Teredo client 169.254.169.254 (inverted a9fe:a9fe)"},
		{"2001:0:4136:e378:8000:63bf:f7f7:f7f7", false, "Teredo client 8.8.8.8"},
		{"2001:0:a00:1:8000:63bf:f7f7:f7f7", true, "Teredo server 10.0.0.1"},
		// Ordinary addresses are unaffected.
		{"2001:db8::a9fe:a9fe", false, "documentation prefix, not an embedding"},
		{"2606:4700::a00:1", false, "global unicast ending like 10.0.0.1"},
	} {
		if got := Internal(netip.MustParseAddr(tc.addr)); got != tc.internal {
			t.Errorf("Internal(%s) = %v, want %v (%s)", tc.addr, got, tc.internal, tc.why)
		}
	}
}

func TestFilterEmbeddedIPv4(t *testing.T) {
	in := []netip.Addr{
		netip.MustParseAddr("64:ff9b::a9fe:a9fe"),
		netip.MustParseAddr("64:ff9b::c000:20a"),
		netip.MustParseAddr("::ffff:10.0.0.1"),
		netip.MustParseAddr("2002:a00:1::1"),
	}
	kept, dropped := Filter(in, false, 0)
	if dropped != 3 || len(kept) != 1 || kept[0] != netip.MustParseAddr("64:ff9b::c000:20a") {
		t.Errorf("Filter(private refused) = %v, %d dropped; want only the NAT64 of 192.0.2.10", kept, dropped)
	}
	kept, dropped = Filter(in, true, 0)
	if dropped != 0 || len(kept) != 4 || kept[2] != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("Filter(allow_private_answers) = %v, %d dropped; want all four, the mapped one unmapped", kept, dropped)
	}
}

// Accepts is the private-answer rule: an internal address only where the
// allowlist opted in or the hosts file gives it.
func TestAccepts(t *testing.T) {
	lan, pub := netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("203.0.113.5")
	hosts := func(name string, a netip.Addr) bool { return name == "db.example.test" && a == lan }
	for _, c := range []struct {
		a         netip.Addr
		privateOK bool
		name      string
		fromHosts func(string, netip.Addr) bool
		want      bool
	}{
		{pub, false, "x", nil, true},
		{lan, false, "x", nil, false},
		{lan, true, "x", nil, true},
		{lan, false, "db.example.test", hosts, true},
		{lan, false, "other.example.test", hosts, false},
	} {
		if got := Accepts(c.a, c.privateOK, c.name, c.fromHosts); got != c.want {
			t.Errorf("Accepts(%s, %v, %s) = %v", c.a, c.privateOK, c.name, got)
		}
	}
	kept, dropped := FilterAnswer(Result{Addrs: []netip.Addr{lan, pub}, Source: SourceHosts}, false, 0)
	if len(kept) != 2 || dropped != 0 {
		t.Fatalf("a hosts answer was filtered: %v %d", kept, dropped)
	}
	if kept, dropped = FilterAnswer(Result{Addrs: []netip.Addr{lan, pub}, Source: SourceDNS}, false, 0); len(kept) != 1 || dropped != 1 {
		t.Fatalf("a private DNS answer was kept: %v %d", kept, dropped)
	}
}

// Ranges the IANA special-purpose registry marks not globally reachable,
// that Go's IsPrivate does not know: an answer pointing there is rebinding
// to something on this side of the internet (failed before: all admitted,
// and through the proxy put in the kernel).
func TestInternalNotGloballyReachable(t *testing.T) {
	for _, tc := range []struct {
		addr     string
		internal bool
		why      string
	}{
		{"192.0.0.192", true, "IETF protocol assignments (RFC 6890), never routed on the internet"},
		{"192.0.0.8", true, "IPv4 dummy address (RFC 7600)"},
		{"198.18.0.1", true, "benchmarking (RFC 2544), used for internal networks"},
		{"198.19.255.254", true, "benchmarking, top"},
		{"240.0.0.1", true, "reserved (class E), routed only inside some networks"},
		{"255.255.255.254", true, "reserved (class E)"},
		{"fec0::1", true, "site-local (deprecated, RFC 3879): a LAN's own space"},
		{"64:ff9b::c000:c0", true, "NAT64 of 192.0.0.192"},
		// Their neighbours stay public.
		{"192.0.1.1", false, "outside 192.0.0.0/24"},
		{"198.17.255.255", false, "below 198.18.0.0/15"},
		{"198.20.0.1", false, "above 198.18.0.0/15"},
		{"239.255.255.255", true, "multicast (as before)"},
		{"223.255.255.255", false, "below 240.0.0.0/4"},
		{"fe00::1", false, "outside fec0::/10 and fe80::/10"},
	} {
		if got := Internal(netip.MustParseAddr(tc.addr)); got != tc.internal {
			t.Errorf("Internal(%s) = %v, want %v (%s)", tc.addr, got, tc.internal, tc.why)
		}
	}
}
