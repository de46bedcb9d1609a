//go:build linux

package testworld

import (
	"errors"
	"net/netip"

	"github.com/egressd/egressd/internal/netns"
)

// The wire between a world and a peer host.
const (
	WorldWire4 = "203.0.113.201"
	PeerWire4  = "203.0.113.202"
	WorldWire6 = "2001:db8:1::1"
	PeerWire6  = "2001:db8:1::2"
)

// AddPeer creates a second host: a namespace joined to the world's by a veth
// pair ("wire"), deleted by Close. The peer holds addrs on its loopback; the
// world routes them over the wire, the peer routes everything back. An
// address on a peer is really another host: a packet to it leaves the
// world's namespace through the output hook and the wire.
func (w *World) AddPeer(addrs ...string) (*netns.NS, error) {
	p, err := netns.New()
	if err != nil {
		return nil, err
	}
	w.onClose(func() { p.Close() })
	var errs []error
	must := func(err error) { errs = append(errs, err) }
	for _, ns := range []*netns.NS{w.NS, p} {
		for _, s := range []string{"net/ipv6/conf/all/accept_dad", "net/ipv6/conf/default/accept_dad",
			"net/ipv4/conf/all/rp_filter", "net/ipv4/conf/default/rp_filter"} {
			must(ns.Sysctl(s, "0"))
		}
	}
	// The peer takes packets whose source is one of its own addresses
	// (the forged flows of the FREEBIND attack), as a router would.
	must(p.Sysctl("net/ipv4/conf/all/accept_local", "1"))
	must(p.Sysctl("net/ipv4/conf/default/accept_local", "1"))
	if err := w.NS.Veth("wire", p, "wire"); err != nil {
		return nil, err
	}
	must(w.NS.AddPrefixes("wire", netip.MustParsePrefix(WorldWire4+"/32"), netip.MustParsePrefix(WorldWire6+"/64")))
	must(p.AddPrefixes("wire", netip.MustParsePrefix(PeerWire4+"/32"), netip.MustParsePrefix(PeerWire6+"/64")))
	must(w.NS.AddRoute(netip.MustParsePrefix(PeerWire4+"/32"), "wire", netip.Addr{}))
	must(p.AddRoute(netip.MustParsePrefix(WorldWire4+"/32"), "wire", netip.Addr{}))
	must(p.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), "wire", netip.MustParseAddr(WorldWire4)))
	must(p.AddRoute(netip.MustParsePrefix("::/0"), "wire", netip.MustParseAddr(WorldWire6)))
	for _, s := range addrs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, err
		}
		must(p.AddAddrs(a))
		gw := netip.MustParseAddr(PeerWire4)
		if a.Is6() {
			gw = netip.MustParseAddr(PeerWire6)
		}
		must(w.NS.AddRoute(netip.PrefixFrom(a, a.BitLen()), "wire", gw))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}
