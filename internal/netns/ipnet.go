package netns

import (
	"net"
	"net/netip"
)

type netipNet struct{ p netip.Prefix }

// IPNet converts the prefix to the net.IPNet the netlink library takes.
func (n netipNet) IPNetValue() *net.IPNet {
	return &net.IPNet{IP: n.p.Addr().AsSlice(), Mask: net.CIDRMask(n.p.Bits(), n.p.Addr().BitLen())}
}
