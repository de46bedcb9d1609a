package bindguard

import "fmt"

// Map value of a uid's marker key (port 0, proto 0).
const (
	modeEnforce = 1
	modeAudit   = 2
)

// Protocols as the kernel numbers them (the proto of a Port).
const (
	TCP uint8 = 6
	UDP uint8 = 17
)

// InboundTag is the bit of skb->priority that the ruleset's inbound chain
// sets on a datagram of a flow the peer opened (UDP, UDP-Lite) and on an
// unsolicited ICMP echo reply, and that the ingress program reads and clears
// (docs/security.md, "Listening ports"). skb->priority, not the mark: the
// receive path reads the mark after the input hook (XFRM policy checks,
// SO_RCVMARK) and other tools own bits of it; nothing on the way from the
// input hook to the socket reads the priority, and a socket cannot read a
// received packet's priority.
const InboundTag = 0x40000000

// Port is one protocol and port a restricted uid may bind and listen on.
type Port struct {
	Proto uint8
	Port  uint16
}

// Rule is one uid's restriction: the ports it may listen on (none when
// empty); with Audit a bind elsewhere is reported and allowed.
type Rule struct {
	Audit bool
	Ports []Port
}

// Policy is the desired restriction per uid; a uid not in it is unrestricted.
type Policy map[uint32]Rule

// Cgroups is the desired restriction per unit cgroup id: a bind or listener
// made in that cgroup or below it (down to level MaxLevel of the hierarchy)
// obeys its rule, as well as its uid's. The entry Expected (no cgroup has id
// 0; its rule is ignored) says that a unit allowlist has listen: even while
// none of its units runs: the kernel then keeps its units marker, which the
// start gate reads when it cannot read the configuration (UnitsExpected).
type Cgroups map[uint64]Rule

// Expected is the Cgroups key that marks unit rules as expected.
const Expected uint64 = 0

// ProtoName is "tcp", "udp" or the protocol number.
func ProtoName(p uint8) string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return fmt.Sprint(p)
}

// samePolicy and sameRules compare by uid or cgroup, mode and set of ports.
func samePolicy(a, b Policy) bool { return sameRules(a, b) }

func sameRules[K comparable](a, b map[K]Rule) bool {
	if len(a) != len(b) {
		return false
	}
	for k, r := range a {
		o, ok := b[k]
		if !ok || r.Audit != o.Audit {
			return false
		}
		ports := map[Port]bool{}
		for _, p := range r.Ports {
			ports[p] = true
		}
		theirs := map[Port]bool{}
		for _, p := range o.Ports {
			theirs[p] = true
			if !ports[p] {
				return false
			}
		}
		if len(ports) != len(theirs) {
			return false
		}
	}
	return true
}
