package ruleset

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// Untracked is a rule of another table that exempts packets from connection
// tracking (`notrack`, or iptables-nft's `-j CT --notrack`) and does not
// match TCP alone. A datagram it exempts has no conntrack direction, so the
// inbound chain cannot tell that a peer opened its flow: it reaches a
// listen-restricted service's unlisted ports (docs/security.md, "Listening
// ports"). egressd never changes other tables; `check` reports these.
type Untracked struct {
	Table  string // family and name: "ip raw"
	Chain  string
	Handle uint64
	// Hook is the base chain's hook ("prerouting", "output"), or "" for a
	// regular chain, which a jump from such a base chain may reach.
	Hook string
}

func (u Untracked) String() string {
	where := "a regular chain (reached by a jump)"
	if u.Hook != "" {
		where = "hook " + u.Hook
	}
	return fmt.Sprintf("table %s chain %s (%s) rule handle %d", u.Table, u.Chain, where, u.Handle)
}

// UntrackedReader is implemented by kernels that can list other tables'
// rules exempting datagrams from connection tracking.
type UntrackedReader interface {
	Untracked() ([]Untracked, error)
}

// conntrackPriority is NF_IP_PRI_CONNTRACK: a notrack in a base chain
// that runs after it finds the packet tracked already and does nothing.
const conntrackPriority = -200

// untrackedRule reports whether a rule of a table of family fam exempts
// packets other than TCP from connection tracking: it holds a notrack (or
// the CT target with --notrack, or NOTRACK) and no comparison before it
// that limits it to TCP. Anything this reading cannot prove TCP-only counts
// (a set of protocols, a negation, a protocol matched in a chain that jumps
// here): the report may say too much, never too little.
func untrackedRule(fam nftables.TableFamily, es []expr.Any) bool {
	proto := map[uint32]bool{} // registers that hold the layer-4 protocol
	tcpOnly := false
	for _, e := range es {
		switch e := e.(type) {
		case *expr.Meta:
			if !e.SourceRegister {
				proto[e.Register] = e.Key == expr.MetaKeyL4PROTO
			}
		case *expr.Payload:
			if e.OperationType == expr.PayloadLoad {
				proto[e.DestRegister] = e.Base == expr.PayloadBaseNetworkHeader && e.Len == 1 &&
					((fam == nftables.TableFamilyIPv4 && e.Offset == 9) || (fam == nftables.TableFamilyIPv6 && e.Offset == 6))
			}
		case *expr.Cmp:
			if e.Op == expr.CmpOpEq && proto[e.Register] && len(e.Data) == 1 && e.Data[0] == unix.IPPROTO_TCP {
				tcpOnly = true
			}
		case *expr.Notrack:
			return !tcpOnly
		case *expr.Target:
			if notrackTarget(e) {
				return !tcpOnly
			}
		default:
			// Any other expression that writes a register (ct, bitwise,
			// lookup with a map...) may overwrite one that held the
			// protocol: forget them all. Conservative.
			if writesRegister(e) {
				clear(proto)
			}
		}
	}
	return false
}

// writesRegister reports whether e may load a register (everything but the
// expressions known to only read or act).
func writesRegister(e expr.Any) bool {
	switch e := e.(type) {
	case *expr.Lookup:
		return e.IsDestRegSet
	case *expr.Counter, *expr.Log, *expr.Limit, *expr.Verdict, *expr.Range:
		return false
	}
	return true
}

// notrackTarget: xtables' NOTRACK target, or CT with XT_CT_NOTRACK (the
// first field of every revision of xt_ct_target_info is a host-order u16
// of flags; XT_CT_NOTRACK is bit 0).
func notrackTarget(t *expr.Target) bool {
	switch t.Name {
	case "NOTRACK":
		return true
	case "CT":
		u, ok := t.Info.(*xt.Unknown)
		if !ok || len(*u) < 2 {
			return true // cannot read its flags: count it
		}
		return binary.NativeEndian.Uint16((*u)[:2])&1 != 0
	}
	return false
}

// hookName names the hooks notrack is valid in.
func hookName(h *nftables.ChainHook) string {
	switch {
	case h == nil:
		return ""
	case *h == *nftables.ChainHookPrerouting:
		return "prerouting"
	case *h == *nftables.ChainHookOutput:
		return "output"
	}
	return fmt.Sprintf("hook %d", *h)
}

// familyName is nft's name of a table family.
func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyARP:
		return "arp"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyNetdev:
		return "netdev"
	}
	return fmt.Sprintf("family %d", f)
}

// chainMayUntrack: a base chain in prerouting or output at a priority
// before conntrack's, or a regular chain (a jump may reach it from one).
func chainMayUntrack(ch *nftables.Chain) bool {
	if ch.Hooknum == nil {
		return true
	}
	if *ch.Hooknum != *nftables.ChainHookPrerouting && *ch.Hooknum != *nftables.ChainHookOutput {
		return false
	}
	return ch.Priority == nil || int32(*ch.Priority) <= conntrackPriority
}
