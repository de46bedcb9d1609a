//go:build linux

package netns

import (
	"fmt"
	"net"
	"net/netip"

	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Veth connects n to peer with a veth pair, name inside n and peerName inside
// peer, both up: a second namespace is a second host on a wire. Closing
// either namespace deletes the pair.
func (n *NS) Veth(name string, peer *NS, peerName string) error {
	h := n.handle()
	defer h.Close()
	la := vnl.NewLinkAttrs()
	la.Name = name
	v := &vnl.Veth{LinkAttrs: la, PeerName: peerName, PeerNamespace: vnl.NsFd(peer.h)}
	if err := h.LinkAdd(v); err != nil {
		return fmt.Errorf("add veth %s/%s: %w", name, peerName, err)
	}
	for _, side := range []struct {
		ns  *NS
		dev string
	}{{n, name}, {peer, peerName}} {
		sh := side.ns.handle()
		l, err := sh.LinkByName(side.dev)
		if err == nil {
			err = sh.LinkSetUp(l)
		}
		sh.Close()
		if err != nil {
			return fmt.Errorf("bring up %s: %w", side.dev, err)
		}
	}
	return nil
}

// AddPrefixes adds addresses with their prefix lengths to the link dev,
// without duplicate address detection (usable at once).
func (n *NS) AddPrefixes(dev string, ps ...netip.Prefix) error {
	h := n.handle()
	defer h.Close()
	l, err := h.LinkByName(dev)
	if err != nil {
		return err
	}
	for _, p := range ps {
		if err := h.AddrAdd(l, &vnl.Addr{IPNet: netipNet{p}.IPNetValue(), Flags: unix.IFA_F_NODAD}); err != nil {
			return fmt.Errorf("add %s to %s: %w", p, dev, err)
		}
	}
	return nil
}

// AddRoute routes dst out of dev, through the gateway gw when it is valid
// (on-link: the gateway needs no route of its own).
func (n *NS) AddRoute(dst netip.Prefix, dev string, gw netip.Addr) error {
	h := n.handle()
	defer h.Close()
	l, err := h.LinkByName(dev)
	if err != nil {
		return err
	}
	r := &vnl.Route{LinkIndex: l.Attrs().Index, Dst: netipNet{dst}.IPNetValue(), Scope: vnl.SCOPE_LINK}
	if gw.IsValid() {
		r.Gw, r.Scope = net.IP(gw.AsSlice()), vnl.SCOPE_UNIVERSE
		r.Flags = int(vnl.FLAG_ONLINK)
	}
	if err := h.RouteAdd(r); err != nil {
		return fmt.Errorf("route %s via %s dev %s: %w", dst, gw, dev, err)
	}
	return nil
}
