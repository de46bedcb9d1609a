//go:build linux

package ruleset

import (
	"fmt"
	"sort"
	"strings"

	"github.com/egressd/egressd/config"
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

var unitStructuralSets = []string{kUnitChains, kUnitIDs, kUDenied, kUDenyLog}

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

func unitChainsMap() *nftables.Set {
	return &nftables.Set{Table: table, Name: kUnitChains, KeyType: nftables.TypeCGroupV2, DataType: nftables.TypeVerdict,
		IsMap: true, KeyByteOrder: binaryutil.NativeEndian}
}

func markSet(name string) *nftables.Set {
	return &nftables.Set{Table: table, Name: name, KeyType: nftables.TypeMark, KeyByteOrder: binaryutil.NativeEndian}
}

// unitDynSet is udenied or udenylog: keyed by the unit key in network order,
// which every nft prints right where a rule updates the set with the key as
// a constant (in host order Debian 12's nft showed its bytes turned around).
func unitDynSet(name string) *nftables.Set {
	return &nftables.Set{Table: table, Name: name, KeyType: nftables.TypeMark, KeyByteOrder: binaryutil.BigEndian, Dynamic: true}
}

func cgroupKey(id uint64) []byte { return binaryutil.NativeEndian.PutUint64(id) }

func nativeUint64(b []byte) uint64 { return binaryutil.NativeEndian.Uint64(b) }

// cgroupElement maps a cgroup id to the chain of the unit key k.
func cgroupElement(id uint64, k uint32) nftables.SetElement {
	return nftables.SetElement{Key: cgroupKey(id), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: unitChain(k)}}
}

// buildUnits adds the unit chains (when the plan has unit allowlists: before
// the map whose elements jump to them) and the unit sets (always: empty
// without unit allowlists). The output chain's rules are added by build
// (unitOutputRules).
func buildUnits(c *nftables.Conn, p Plan) error {
	chains := unitChainRules(p)
	for _, name := range sortedKeys(chains) {
		c.AddChain(&nftables.Chain{Name: name, Table: table})
	}
	var ids, cgroups []nftables.SetElement
	for _, u := range p.Units {
		ids = append(ids, nftables.SetElement{Key: binaryutil.NativeEndian.PutUint32(u.Key), Comment: u.Allowlist + " " + u.Unit})
	}
	keyOf := unitKeys(p)
	for _, cg := range p.Cgroups {
		k, ok := keyOf[cg.Allowlist]
		if !ok {
			return fmt.Errorf("cgroup %d: allowlist %q is not a unit allowlist of the plan", cg.ID, cg.Allowlist)
		}
		cgroups = append(cgroups, cgroupElement(cg.ID, k))
	}
	for _, part := range []struct {
		s  *nftables.Set
		es []nftables.SetElement
	}{{unitChainsMap(), cgroups}, {markSet(kUnitIDs), ids}, {unitDynSet(kUDenied), nil}, {unitDynSet(kUDenyLog), nil}} {
		if err := c.AddSet(part.s, nil); err != nil {
			return fmt.Errorf("add set %s: %w", part.s.Name, err)
		}
		for i := 0; i < len(part.es); i += chunk {
			if err := c.SetAddElements(part.s, part.es[i:min(i+chunk, len(part.es))]); err != nil {
				return fmt.Errorf("add %d elements to %s: %w", len(part.es), part.s.Name, err)
			}
		}
	}
	if err := buildHelper(c, p); err != nil {
		return err
	}
	for _, name := range sortedKeys(chains) {
		for _, r := range chains[name] {
			c.AddRule(r)
		}
	}
	return nil
}

// unitOutputRules: socket cgroupv2 level N vmap @unitchains, for each level,
// when the plan has unit allowlists (a kernel without cgroupv2 matching,
// before 5.13, keeps working for user allowlists).
func unitOutputRules(out *nftables.Chain, p Plan) []*nftables.Rule {
	if len(p.Units) == 0 {
		return nil
	}
	var rules []*nftables.Rule
	for l := 1; l <= UnitLevels; l++ {
		rules = append(rules, &nftables.Rule{Table: table, Chain: out, Exprs: []expr.Any{
			&expr.Socket{Key: expr.SocketKeyCgroupv2, Level: uint32(l), Register: reg1},
			&expr.Lookup{SourceRegister: reg1, SetName: kUnitChains, DestRegister: 0, IsDestRegSet: true},
		}})
	}
	return rules
}

// unitChainRules are the unit chains and their rules, by chain name: two per
// unit allowlist.
func unitChainRules(p Plan) map[string][]*nftables.Rule {
	out := map[string][]*nftables.Rule{}
	for _, u := range p.Units {
		out[unitChain(u.Key)] = unitRules(&nftables.Chain{Name: unitChain(u.Key), Table: table}, u)
		out[unitDenyChain(u.Key)] = unitDenyRules(&nftables.Chain{Name: unitDenyChain(u.Key), Table: table}, u, p.DenyLog)
	}
	return out
}

// unitLabel is the conntrack label of a flow the unit with key k opened: k
// in bits 64-95 (bytes 8-11, host order); unitLabelMask selects those bits.
func unitLabel(k uint32) []byte {
	b := make([]byte, 16)
	copy(b[8:], binaryutil.NativeEndian.PutUint32(k))
	return b
}

var unitLabelMask = []byte{0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}

func unitRules(ch *nftables.Chain, u UnitPlan) []*nftables.Rule {
	rule := func(es ...expr.Any) *nftables.Rule { return &nftables.Rule{Table: table, Chain: ch, Exprs: es} }
	deny := &expr.Verdict{Kind: expr.VerdictGoto, Chain: unitDenyChain(u.Key)}
	ret := &expr.Verdict{Kind: expr.VerdictReturn}
	nfproto := func(p byte) []expr.Any {
		return []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1}, &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{p}}}
	}
	var rules []*nftables.Rule
	// The opener of every new flow: its unit key in label bits 64-95, on
	// the flow's first packet only (see restrictedRules). A label set only
	// sets bits.
	rules = append(rules, rule(append(ctStateIs(expr.CtStateBitNEW),
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsConfirmed), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{0, 0, 0, 0}},
		&expr.Immediate{Register: reg1, Data: unitLabel(u.Key)},
		&expr.Ct{Key: expr.CtKeyLABELS, Register: reg1, SourceRegister: true})...))
	// Source routing, IPv4 options and MPTCP, as in restrictedRules.
	rules = append(rules, rule(append(nfproto(unix.NFPROTO_IPV6),
		&expr.Exthdr{Op: expr.ExthdrOpIpv6, Type: ipv6RT, Offset: 0, Len: 1, Flags: unix.NFT_EXTHDR_F_PRESENT, DestRegister: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{1}},
		deny)...))
	rules = append(rules, rule(append(nfproto(unix.NFPROTO_IPV4),
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 0, Len: 1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 1, Mask: []byte{0x0f}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: []byte{5}},
		deny)...))
	rules = append(rules, rule(
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 1, Mask: []byte{0x02}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: []byte{0}},
		&expr.Exthdr{Op: expr.ExthdrOpTcpopt, Type: tcpMP, Offset: 0, Len: 1, Flags: unix.NFT_EXTHDR_F_PRESENT, DestRegister: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{1}},
		&expr.Immediate{Register: reg1, Data: []byte{0xf0, 0x00}},
		&expr.Exthdr{Op: expr.ExthdrOpTcpopt, Type: tcpMP, Offset: 2, Len: 2, SourceRegister: reg1},
	))
	// Established and related: the unit's own flows in the original
	// direction, others' flows in the reply direction (restrictedRules).
	for _, dir := range []struct {
		b  byte
		op expr.CmpOp
	}{{0, expr.CmpOpEq}, {1, expr.CmpOpNeq}} {
		es := append(ctStateIs(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED),
			&expr.Ct{Register: reg1, Key: expr.CtKeyDIRECTION},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{dir.b}},
			&expr.Ct{Register: reg1, Key: expr.CtKeyLABELS},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 16, Mask: unitLabelMask, Xor: make([]byte, 16)},
			&expr.Cmp{Op: dir.op, Register: reg1, Data: unitLabel(u.Key)})
		if dir.b == 1 {
			es = append(es, sourceLocal()...) // a forged source on a forwarded flow's reply (restrictedRules)
		}
		rules = append(rules, rule(append(es, ret)...))
	}
	rules = append(rules, rule(append(append(replyToLocal(), sourceLocal()...), ret)...))
	rules = append(rules, rule(append(sourceNotLocal(), deny)...))
	for _, ks := range unitKernelSets() {
		rules = append(rules, rule(append(unitLookupExprs(ks, u.Key), ret)...))
	}
	if u.DNS {
		for _, ks := range allKernelSets() {
			if ks.DNS {
				rules = append(rules, rule(append(lookupExprs(ks), ret)...))
			}
		}
	}
	return append(rules, rule(deny))
}

// unitLookupExprs: K . meta l4proto . ip[6] daddr . th dport @uallow*, the
// unit key k a constant in the set's byte order (keyOrder).
func unitLookupExprs(ks kernelSet, k uint32) []expr.Any {
	nfproto, daddrOff, daddrLen := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4)
	if ks.V6 {
		nfproto, daddrOff, daddrLen = unix.NFPROTO_IPV6, 24, 16
	}
	r := uint32(reg32 + 1)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{nfproto}},
		&expr.Immediate{Register: reg32, Data: keyOrder(ks).PutUint32(k)},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: r},
		&expr.Payload{DestRegister: r + 1, Base: expr.PayloadBaseNetworkHeader, Offset: daddrOff, Len: daddrLen},
		&expr.Payload{DestRegister: r + 1 + daddrLen/4, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: reg32, SetName: ks.name()},
	}
}

// unitDenyRules: count and log under the unit key, let an audited unit
// through (to the uid rule: return), reject the rest.
func unitDenyRules(ch *nftables.Chain, u UnitPlan, dl config.DenyLog) []*nftables.Rule {
	rule := func(es ...expr.Any) *nftables.Rule { return &nftables.Rule{Table: table, Chain: ch, Exprs: es} }
	key := &expr.Immediate{Register: reg32, Data: binaryutil.BigEndian.PutUint32(u.Key)} // unitDynSet's order
	rules := []*nftables.Rule{rule(key,
		&expr.Dynset{SrcRegKey: reg32, SetName: kUDenied, Operation: unix.NFT_DYNSET_OP_UPDATE, Exprs: []expr.Any{&expr.Counter{}}})}
	if l := unitLogExprs(dl, u.Key, u.Audit); l != nil {
		rules = append(rules, rule(append([]expr.Any{key}, l...)...))
	}
	if u.Audit {
		return append(rules, rule(&expr.Verdict{Kind: expr.VerdictReturn}))
	}
	for _, r := range rejectExprs() {
		rules = append(rules, rule(r...))
	}
	return rules
}

// unitLogExprs is logExprs with the meter keyed by the unit key k (already
// in NFT_REG32_00, in network order) and the unit prefixes. The logged packet carries the unit
// key as its mark (NFULA_MARK, the kernel log's MARK=). An audited packet
// goes on: its mark is saved before and restored after the log statement
// (nft prints the restore as `meta mark set meta mark`: the mark loaded
// before); a denied packet is rejected next, its mark is left.
func unitLogExprs(dl config.DenyLog, k uint32, audit bool) []expr.Any {
	lim := &expr.Limit{Type: expr.LimitTypePkts, Rate: dl.Rate.Count, Unit: limitUnit(dl.Rate.Unit), Burst: uint32(min(dl.Rate.Count, 1000))}
	var meter []expr.Any
	if audit {
		meter = append(meter, &expr.Meta{Key: expr.MetaKeyMARK, Register: reg32 + 1})
	}
	meter = append(meter, &expr.Dynset{SrcRegKey: reg32, SetName: kUDenyLog, Operation: unix.NFT_DYNSET_OP_UPDATE, Exprs: []expr.Any{lim}},
		&expr.Immediate{Register: reg32 + 2, Data: binaryutil.NativeEndian.PutUint32(k)},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg32 + 2, SourceRegister: true})
	var restore []expr.Any
	if audit {
		restore = append(restore, &expr.Meta{Key: expr.MetaKeyMARK, Register: reg32 + 1, SourceRegister: true})
	}
	prefix := []byte(UnitLogPrefix(dl.Prefix))
	if audit {
		prefix = []byte(UnitAuditPrefix(dl.Prefix))
	}
	switch dl.Mode {
	case config.LogNFLOG:
		return append(append(meter, &expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX, Group: dl.Group, Data: prefix}), restore...)
	case config.LogKernel:
		return append(append(meter, &expr.Log{Key: 1<<unix.NFTA_LOG_LEVEL | 1<<unix.NFTA_LOG_PREFIX | 1<<unix.NFTA_LOG_FLAGS,
			Level: expr.LogLevelWarning, Flags: expr.LogFlagsUID, Data: prefix}), restore...)
	}
	return nil
}

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

// unitFindings compares the unit sets with the plan: the unit keys
// (unitids, with their allowlists) and the cgroup map (whether each unit
// allowlist resolves its DNS and is audited is in its chains' rules, which
// Verify compares).
func unitFindings(c *nftables.Conn, t *nftables.Table, p Plan) []Finding {
	var fs []Finding
	got := map[uint32]string{}
	for k, au := range readUnitComments(c, t) {
		got[k] = au[0] + " " + au[1]
	}
	want := map[uint32]string{}
	for _, u := range p.Units {
		want[u.Key] = u.Allowlist + " " + u.Unit
	}
	var diffs []string
	for k, name := range want {
		if got[k] != name {
			diffs = append(diffs, fmt.Sprintf("unit key %d → %q, want %q", k, got[k], name))
		}
	}
	for k, name := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("unit key %d → %q not in the plan", k, name))
		}
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		fs = append(fs, Finding{Kind: "users_differ", Object: kUnitIDs, Detail: strings.Join(diffs, "; ")})
	}
	cgs, err := readCgroups(c, t)
	if err != nil {
		return fs
	}
	if add, del := CgroupDelta(cgs, p.Cgroups); len(add)+len(del) > 0 {
		fs = append(fs, Finding{Kind: "users_differ", Object: kUnitChains, Detail: fmt.Sprintf("%d cgroups missing, %d not in the plan", len(add), len(del))})
	}
	return fs
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
