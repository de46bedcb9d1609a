// Package ruleset owns egressd's kernel state: the one nftables table
// `inet egressd`. It turns a Desired value (config + resolved addresses) into
// a Plan with pure functions (Render, Diff), and applies plans to the kernel
// through the narrow Kernel interface, each change in one netlink transaction.
package ruleset

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/egressd/egressd/config"
)

// TableName is the only table egressd creates, in the inet family.
const TableName = "egressd"

// Element is one allowed destination: a protocol, an inclusive address range
// of one family and an inclusive port range.
type Element struct {
	Proto    config.Proto
	AddrFrom netip.Addr
	AddrTo   netip.Addr
	PortFrom uint16
	PortTo   uint16
}

// ElementFor returns the element a prefix and port range allow.
func ElementFor(proto config.Proto, p netip.Prefix, from, to uint16) Element {
	return Element{Proto: proto, AddrFrom: p.Masked().Addr(), AddrTo: lastAddr(p), PortFrom: from, PortTo: to}
}

// Is6 reports the element's address family.
func (e Element) Is6() bool { return e.AddrFrom.Is6() }

func (e Element) String() string {
	addr := e.AddrFrom.String()
	if e.AddrTo != e.AddrFrom {
		addr += "-" + e.AddrTo.String()
	}
	if e.Is6() {
		addr = "[" + addr + "]"
	}
	port := fmt.Sprint(e.PortFrom)
	if e.PortTo != e.PortFrom {
		port += fmt.Sprintf("-%d", e.PortTo)
	}
	return fmt.Sprintf("%s:%s/%s", addr, port, e.Proto)
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().AsSlice()
	bits := p.Bits()
	for i := range a {
		for b := 0; b < 8; b++ {
			if i*8+b >= bits {
				a[i] |= 0x80 >> b
			}
		}
	}
	out, _ := netip.AddrFromSlice(a)
	return out
}

// Allowlist is one allowlist's desired state: whom it restricts (a user or
// a unit) and what it allows.
type Allowlist struct {
	Name     string
	Subject  Subject
	DNS      bool // may reach the resolvers on port 53
	Proxy    bool // dns: proxy: its DNS queries are redirected to egressd's proxy
	Audit    bool // mode: audit: would-be denies are logged, then accepted
	Listen   bool // listen: restricts the ports its subject may listen on (bindguard)
	Elements []Element
	// Until, when not nil, is aligned with Elements: when each element's
	// lifetime ends (an address from DNS or the hosts file: TTL + linger,
	// or stale_grace while DNS fails). The kernel element carries it as its
	// timeout and closes by itself, whether or not egressd runs. Zero: never
	// (a literal entry).
	Until []time.Time
}

// Desired is everything the kernel should hold.
type Desired struct {
	Allowlists []Allowlist // one per subject
	Resolvers  []netip.AddrPort
	DenyLog    config.DenyLog
	ProxyPort  uint16   // the DNS proxy's port on 127.0.0.1 and ::1 (dns: proxy)
	Cgroups    []Cgroup // the current cgroups of the restricted units
}
