//go:build linux

package ruleset

import (
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The unit part of the kernel layout (docs/units.md), beside the uid part.
// Every rule is one that nft can print: the unit key K of an allowlist is a
// constant of that allowlist's own chains, never the result of a map lookup
// (nft cannot print a looked-up value inside a concatenation or as a set key:
// nft 1.0.6 aborted on the whole ruleset).
//
//	map unitchains { type cgroupsv2 : verdict }   # a restricted unit's current cgroup id -> jump unit_K
//	set unitids    { type mark }                  # unit keys; element comment = "ALLOWLIST UNIT"
//	set uallow4, uallow4r, uallow6, uallow6r { type mark . inet_proto . ipv*_addr . inet_service }
//	set udenied, udenylog { type mark; flags dynamic }
//	chain output {                                # before the uid rule; only when a unit allowlist exists
//	  socket cgroupv2 level N vmap @unitchains    (N = 1..UnitLevels)
//	  meta skuid @users jump restricted
//	}
//	chain unit_K {                                # one per unit allowlist; K its unit key (hex in the name)
//	  ct state new ct status != confirmed ct label set K << 64  # bits 64-95: which unit opened the flow
//	  (IPv6 routing header, IPv4 options: goto unitdeny_K; MPTCP: as in restricted)
//	  ct state established,related ct direction original ct label & (bits 64-95) == K << 64 return
//	  ct state established,related ct direction reply ct label & (bits 64-95) != K << 64 fib saddr type local return
//	  ct state established,related ct direction reply fib daddr type local fib saddr type local return
//	  fib saddr type != local goto unitdeny_K
//	  K . meta l4proto . ip daddr . th dport @uallow4 return   (and uallow4r, uallow6, uallow6r)
//	  meta l4proto . ip daddr . th dport @dns4 return          (and dns4r, dns6, dns6r; dns: resolvers only)
//	  goto unitdeny_K
//	}
//	chain unitdeny_K { update @udenied { K counter }; update @udenylog { K limit } log prefix "P unit deny: ";
//	                   mode: audit: return; else reject }
//
// A packet the unit's allowlist allows returns to output, where the uid rule
// still applies: a socket of a restricted unit that is also a restricted
// user's must pass both allowlists.
const (
	kUnitChains = "unitchains"
	kUnitIDs    = "unitids"
	kUDenied    = "udenied"
	kUDenyLog   = "udenylog"
)

// unitChain and unitDenyChain are the chains of the unit allowlist with key k.
func unitChain(k uint32) string     { return fmt.Sprintf("unit_%08x", k) }
func unitDenyChain(k uint32) string { return fmt.Sprintf("unitdeny_%08x", k) }

// unitKeyOfChain is the unit key in a unit chain's name.
func unitKeyOfChain(name string) (uint32, bool) {
	var k uint32
	if _, err := fmt.Sscanf(name, "unit_%08x", &k); err != nil || name != unitChain(k) {
		return 0, false
	}
	return k, true
}

func cgroupKey(id uint64) []byte { return binaryutil.NativeEndian.PutUint64(id) }

func nativeUint64(b []byte) uint64 { return binaryutil.NativeEndian.Uint64(b) }

// unitLabel is the conntrack label of a flow the unit with key k opened: k
// in bits 64-95 (bytes 8-11, host order); unitLabelMask selects those bits.
func unitLabel(k uint32) []byte {
	b := make([]byte, 16)
	copy(b[8:], binaryutil.NativeEndian.PutUint32(k))
	return b
}

var unitLabelMask = []byte{0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}

// readUnitNames reads unit key -> allowlist from unitids; empty when the set
// is missing (Verify reports that).
func readUnitNames(c *nftables.Conn, t *nftables.Table) map[uint32]string {
	out := map[uint32]string{}
	for k, au := range readUnitComments(c, t) {
		out[k] = au[0]
	}
	return out
}

// readUnitComments reads unit key -> (allowlist, unit) from unitids.
func readUnitComments(c *nftables.Conn, t *nftables.Table) map[uint32][2]string {
	out := map[uint32][2]string{}
	raw, err := setElements(c, t, kUnitIDs)
	if err != nil {
		return out
	}
	for _, r := range raw {
		if len(r.Key) == 4 {
			a, u, _ := strings.Cut(r.Comment, " ")
			out[binaryutil.NativeEndian.Uint32(r.Key)] = [2]string{a, u}
		}
	}
	return out
}

// ReadUnits reads back the restricted units: allowlist -> unit.
func (k *Netlink) ReadUnits() (map[string]string, error) {
	c, t, err := k.existing()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, au := range readUnitComments(c, t) {
		out[au[0]] = au[1]
	}
	return out, nil
}

// ReadCgroups reads back the cgroup map: every mapped cgroup id with the
// allowlist of its unit key ("unit:K" for a key unitids does not name).
func (k *Netlink) ReadCgroups() ([]Cgroup, error) {
	c, t, err := k.existing()
	if err != nil {
		return nil, err
	}
	return readCgroups(c, t)
}

func readCgroups(c *nftables.Conn, t *nftables.Table) ([]Cgroup, error) {
	names := readUnitNames(c, t)
	raw, err := setElements(c, t, kUnitChains)
	if err != nil {
		return nil, err
	}
	var out []Cgroup
	for _, r := range raw {
		chain, jump := elementJump(r.Val)
		if len(r.Key) != 8 {
			continue
		}
		name := "chain:" + chain
		if key, ok := unitKeyOfChain(chain); ok && jump {
			if name = names[key]; name == "" {
				name = fmt.Sprintf("unit:%d", key)
			}
		}
		out = append(out, Cgroup{ID: binaryutil.NativeEndian.Uint64(r.Key), Allowlist: name})
	}
	return sortedCgroups(out), nil
}

// elementJump reads the verdict of a verdict map's element as the netlink
// library returns it (the NFTA_DATA_VERDICT attributes, undecoded): the
// chain, and whether the verdict is a jump to it.
func elementJump(val []byte) (chain string, jump bool) {
	for len(val) >= 4 {
		n, typ := int(binaryutil.NativeEndian.Uint16(val)), binaryutil.NativeEndian.Uint16(val[2:])&^unix.NLA_F_NESTED
		if n < 4 || n > len(val) {
			return chain, false
		}
		data := val[4:n]
		switch typ {
		case unix.NFTA_VERDICT_CODE:
			jump = len(data) == 4 && int32(binaryutil.BigEndian.Uint32(data)) == int32(expr.VerdictJump)
		case unix.NFTA_VERDICT_CHAIN:
			chain = strings.TrimRight(string(data), "\x00")
		}
		val = val[min((n+3)&^3, len(val)):]
	}
	return chain, jump
}

// ApplyCgroups changes the cgroup map in one transaction: deletions, then
// additions. p is the plan in force (it maps allowlists to unit keys).
func (k *Netlink) ApplyCgroups(p Plan, add, del []Cgroup) error {
	if len(add)+len(del) == 0 {
		return nil
	}
	keyOf := unitKeys(p)
	var adds, dels []nftables.SetElement
	for _, cg := range del {
		dels = append(dels, nftables.SetElement{Key: cgroupKey(cg.ID)})
	}
	for _, cg := range add {
		key, ok := keyOf[cg.Allowlist]
		if !ok {
			return fmt.Errorf("cgroup %d: allowlist %q is not a unit allowlist of the plan", cg.ID, cg.Allowlist)
		}
		adds = append(adds, cgroupElement(cg.ID, key))
	}
	k.own.mu.Lock()
	defer k.own.mu.Unlock()
	c, _, err := k.writer()
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	m := unitChainsMap()
	if len(dels) > 0 {
		if err := c.SetDeleteElements(m, dels); err != nil {
			k.dropIf(c)
			return fmt.Errorf("build cgroup change: %w", err)
		}
	}
	if len(adds) > 0 {
		if err := c.SetAddElements(m, adds); err != nil {
			k.dropIf(c)
			return fmt.Errorf("build cgroup change: %w", err)
		}
	}
	if err := helperCgroups(c, p, add, del); err != nil {
		k.dropIf(c)
		return fmt.Errorf("build cgroup change: %w", err)
	}
	if err := c.Flush(); err != nil {
		k.dropIf(c)
		return fmt.Errorf("apply cgroup change (%d added, %d deleted): %w", len(add), len(del), err)
	}
	return nil
}

// unitFindings reads the unit keys and the cgroup map and compares them
// with the plan (unitSetFindings).
func unitFindings(c *nftables.Conn, t *nftables.Table, p Plan) []Finding {
	got := map[uint32]string{}
	for k, au := range readUnitComments(c, t) {
		got[k] = au[0] + " " + au[1]
	}
	cgs, err := readCgroups(c, t)
	return unitSetFindings(p, got, cgs, err == nil)
}

// addUnitCounters adds the unit allowlists' reject counters (udenied, per
// unit key) to a ReadDenyCounters result.
func addUnitCounters(c *nftables.Conn, t *nftables.Table, out map[string]uint64) {
	names := readUnitNames(c, t)
	for _, name := range names {
		if _, ok := out[name]; !ok {
			out[name] = 0
		}
	}
	raw, err := setElements(c, t, kUDenied)
	if err != nil {
		return
	}
	for _, r := range raw {
		if len(r.Key) != 4 || r.Counter == nil {
			continue
		}
		if name := names[binaryutil.BigEndian.Uint32(r.Key)]; name != "" { // unitDynSet's order
			out[name] += r.Counter.Packets
		}
	}
}
