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

// The unit part of the kernel layout (docs/units.md), beside the uid part:
//
//	map unitkeys   { type cgroupsv2 : mark }      # a restricted unit's current cgroup id -> its unit key
//	set unitids    { type mark }                  # unit keys; element comment = "ALLOWLIST UNIT"
//	set unitowners { type mark . mark }           # (k . k) for every unit key
//	set unitdns    { type mark }                  # dns: resolvers
//	set unitaudit  { type mark }                  # mode: audit
//	set uallow4, uallow4r, uallow6, uallow6r { type mark . inet_proto . ipv*_addr . inet_service }
//	set udenied, udenylog { type mark; flags dynamic }
//	chain output {                                # before the uid rule; only when a unit allowlist exists
//	  socket cgroupv2 level N @unitkeys jump unitN      (N = 1..UnitLevels)
//	  meta skuid @users jump restricted
//	}
//	chain unitN {                                 # K = socket cgroupv2 level N map @unitkeys
//	  ct state new ct status != confirmed ct label set K << 64   # bits 64-95: which unit opened the flow
//	  (IPv6 routing header, IPv4 options: goto unitdenyN; MPTCP: as in restricted)
//	  ct state established,related ct direction original ct label[64:96] . K @unitowners return
//	  ct state established,related ct direction reply ct label[64:96] . K != @unitowners fib saddr type local return
//	  ct state established,related ct direction reply fib daddr type local fib saddr type local return
//	  fib saddr type != local goto unitdenyN
//	  K . meta l4proto . ip daddr . th dport @uallow4 return   (and uallow4r, uallow6, uallow6r)
//	  K @unitdns meta l4proto . ip daddr . th dport @dns4 return   (and dns4r, dns6, dns6r)
//	  goto unitdenyN
//	}
//	chain unitdenyN { update @udenied { K counter }; update @udenylog { K limit } log prefix "P unit deny: ";
//	                  K @unitaudit return; reject }
//
// A packet the unit's allowlist allows returns to output, where the uid rule
// still applies: a socket of a restricted unit that is also a restricted
// user's must pass both allowlists.
const (
	kUnitKeys   = "unitkeys"
	kUnitIDs    = "unitids"
	kUnitOwners = "unitowners"
	kUnitDNS    = "unitdns"
	kUnitAudit  = "unitaudit"
	kUDenied    = "udenied"
	kUDenyLog   = "udenylog"
)

var unitStructuralSets = []string{kUnitKeys, kUnitIDs, kUnitOwners, kUnitDNS, kUnitAudit, kUDenied, kUDenyLog}

func unitChain(level int) string     { return fmt.Sprintf("unit%d", level) }
func unitDenyChain(level int) string { return fmt.Sprintf("unitdeny%d", level) }

func unitKeysMap() *nftables.Set {
	return &nftables.Set{Table: table, Name: kUnitKeys, KeyType: nftables.TypeCGroupV2, DataType: nftables.TypeMark,
		IsMap: true, KeyByteOrder: binaryutil.NativeEndian, DataByteOrder: binaryutil.NativeEndian}
}

func markSet(name string) *nftables.Set {
	return &nftables.Set{Table: table, Name: name, KeyType: nftables.TypeMark, KeyByteOrder: binaryutil.NativeEndian}
}

func unitOwnersSet() *nftables.Set {
	return &nftables.Set{Table: table, Name: kUnitOwners, KeyType: nftables.MustConcatSetType(nftables.TypeMark, nftables.TypeMark), Concatenation: true}
}

func unitDynSet(name string) *nftables.Set {
	return &nftables.Set{Table: table, Name: name, KeyType: nftables.TypeMark, KeyByteOrder: binaryutil.NativeEndian, Dynamic: true}
}

func cgroupKey(id uint64) []byte { return binaryutil.NativeEndian.PutUint64(id) }

func nativeUint64(b []byte) uint64 { return binaryutil.NativeEndian.Uint64(b) }

// buildUnits adds the unit sets (always: empty without unit allowlists) and,
// when the plan has unit allowlists, the unit chains. The output chain's
// rules are added by build (unitOutputRules).
func buildUnits(c *nftables.Conn, p Plan) error {
	var ids, owners, dns, audit, keys []nftables.SetElement
	for _, u := range p.Units {
		k := binaryutil.NativeEndian.PutUint32(u.Key)
		ids = append(ids, nftables.SetElement{Key: k, Comment: u.Allowlist + " " + u.Unit})
		owners = append(owners, nftables.SetElement{Key: append(append([]byte{}, k...), k...)})
		if u.DNS {
			dns = append(dns, nftables.SetElement{Key: k})
		}
		if u.Audit {
			audit = append(audit, nftables.SetElement{Key: k})
		}
	}
	keyOf := uids(p)
	for _, cg := range p.Cgroups {
		k, ok := keyOf[cg.Allowlist]
		if !ok {
			return fmt.Errorf("cgroup %d: allowlist %q is not a unit allowlist of the plan", cg.ID, cg.Allowlist)
		}
		keys = append(keys, nftables.SetElement{Key: cgroupKey(cg.ID), Val: binaryutil.NativeEndian.PutUint32(k)})
	}
	for _, part := range []struct {
		s  *nftables.Set
		es []nftables.SetElement
	}{{unitKeysMap(), keys}, {markSet(kUnitIDs), ids}, {unitOwnersSet(), owners}, {markSet(kUnitDNS), dns},
		{markSet(kUnitAudit), audit}, {unitDynSet(kUDenied), nil}, {unitDynSet(kUDenyLog), nil}} {
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
	chains := unitChainRules(p)
	for _, name := range sortedKeys(chains) {
		c.AddChain(&nftables.Chain{Name: name, Table: table})
	}
	for _, name := range sortedKeys(chains) {
		for _, r := range chains[name] {
			c.AddRule(r)
		}
	}
	return nil
}

// unitOutputRules: socket cgroupv2 level N @unitkeys jump unitN, for each
// level, when the plan has unit allowlists (a kernel without cgroupv2
// matching, before 5.13, keeps working for user allowlists).
func unitOutputRules(out *nftables.Chain, p Plan) []*nftables.Rule {
	if len(p.Units) == 0 {
		return nil
	}
	var rules []*nftables.Rule
	for l := 1; l <= UnitLevels; l++ {
		rules = append(rules, &nftables.Rule{Table: table, Chain: out, Exprs: []expr.Any{
			&expr.Socket{Key: expr.SocketKeyCgroupv2, Level: uint32(l), Register: reg1},
			&expr.Lookup{SourceRegister: reg1, SetName: kUnitKeys},
			&expr.Verdict{Kind: expr.VerdictJump, Chain: unitChain(l)},
		}})
	}
	return rules
}

// unitChainRules are the unit chains and their rules, by chain name; none
// without unit allowlists.
func unitChainRules(p Plan) map[string][]*nftables.Rule {
	out := map[string][]*nftables.Rule{}
	if len(p.Units) == 0 {
		return out
	}
	for l := 1; l <= UnitLevels; l++ {
		out[unitChain(l)] = unitRules(&nftables.Chain{Name: unitChain(l), Table: table}, l)
		out[unitDenyChain(l)] = unitDenyRules(&nftables.Chain{Name: unitDenyChain(l), Table: table}, l, p.DenyLog)
	}
	return out
}

// keyTmp holds the 8-byte cgroup id on its way to the unit key (NFT_REG_2):
// clear of NFT_REG_1, where labels and concatenations are built.
const keyTmp = reg32 + 4

// unitKey loads the unit key of the socket's level-l cgroup into register
// dst: socket cgroupv2 level l map @unitkeys. The rule ends here when the
// cgroup is not mapped.
func unitKey(level int, dst uint32) []expr.Any {
	return []expr.Any{
		&expr.Socket{Key: expr.SocketKeyCgroupv2, Level: uint32(level), Register: keyTmp},
		&expr.Lookup{SourceRegister: keyTmp, SetName: kUnitKeys, DestRegister: dst, IsDestRegSet: true},
	}
}

// unitLabelReg is where the opener's unit key sits after the ct labels are
// loaded into NFT_REG_1: bytes 8-11 of the label, conntrack label bits 64-95.
const unitLabelReg = reg32 + 2

func unitRules(ch *nftables.Chain, level int) []*nftables.Rule {
	rule := func(es ...expr.Any) *nftables.Rule { return &nftables.Rule{Table: table, Chain: ch, Exprs: es} }
	deny := &expr.Verdict{Kind: expr.VerdictGoto, Chain: unitDenyChain(level)}
	ret := &expr.Verdict{Kind: expr.VerdictReturn}
	nfproto := func(p byte) []expr.Any {
		return []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1}, &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{p}}}
	}
	var rules []*nftables.Rule
	// The opener of every new flow: its unit key in label bits 64-95, on
	// the flow's first packet only (see restrictedRules). A label set only
	// sets bits: the uid rule's bits 96-127 stay.
	label := append(ctStateIs(expr.CtStateBitNEW),
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsConfirmed), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{0, 0, 0, 0}},
		&expr.Immediate{Register: reg1, Data: make([]byte, 16)})
	label = append(label, unitKey(level, unitLabelReg)...)
	rules = append(rules, rule(append(label, &expr.Ct{Key: expr.CtKeyLABELS, Register: reg1, SourceRegister: true})...))
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
		b      byte
		invert bool
	}{{0, false}, {1, true}} {
		es := append(ctStateIs(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED),
			&expr.Ct{Register: reg1, Key: expr.CtKeyDIRECTION},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{dir.b}},
			&expr.Ct{Register: reg1, Key: expr.CtKeyLABELS})
		es = append(es, unitKey(level, unitLabelReg+1)...)
		es = append(es, &expr.Lookup{SourceRegister: unitLabelReg, SetName: kUnitOwners, Invert: dir.invert})
		if dir.b == 1 {
			es = append(es, sourceLocal()...) // a forged source on a forwarded flow's reply (restrictedRules)
		}
		rules = append(rules, rule(append(es, ret)...))
	}
	rules = append(rules, rule(append(append(replyToLocal(), sourceLocal()...), ret)...))
	rules = append(rules, rule(append(sourceNotLocal(), deny)...))
	for _, ks := range unitKernelSets() {
		rules = append(rules, rule(append(unitKey(level, reg32), unitLookupExprs(ks)...)...))
		rules[len(rules)-1].Exprs = append(rules[len(rules)-1].Exprs, ret)
	}
	for _, ks := range allKernelSets() {
		if !ks.DNS {
			continue
		}
		es := append(unitKey(level, reg32), &expr.Lookup{SourceRegister: reg32, SetName: kUnitDNS})
		es = append(es, lookupExprs(ks)...)
		rules = append(rules, rule(append(es, ret)...))
	}
	return append(rules, rule(deny))
}

// unitLookupExprs: K . meta l4proto . ip[6] daddr . th dport @uallow*, with
// the unit key already in NFT_REG32_00.
func unitLookupExprs(ks kernelSet) []expr.Any {
	nfproto, daddrOff, daddrLen := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4)
	if ks.V6 {
		nfproto, daddrOff, daddrLen = unix.NFPROTO_IPV6, 24, 16
	}
	r := uint32(reg32 + 1)
	return append(keyToNetworkOrder(ks, reg32),
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: r},
		&expr.Cmp{Op: expr.CmpOpEq, Register: r, Data: []byte{nfproto}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: r},
		&expr.Payload{DestRegister: r + 1, Base: expr.PayloadBaseNetworkHeader, Offset: daddrOff, Len: daddrLen},
		&expr.Payload{DestRegister: r + 1 + daddrLen/4, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: reg32, SetName: ks.name()},
	)
}

// unitDenyRules: count and log per unit key, let audited units through (to
// the uid rule: return), reject the rest.
func unitDenyRules(ch *nftables.Chain, level int, dl config.DenyLog) []*nftables.Rule {
	rule := func(es ...expr.Any) *nftables.Rule { return &nftables.Rule{Table: table, Chain: ch, Exprs: es} }
	inAudit := func(invert bool) []expr.Any {
		return append(unitKey(level, reg32), &expr.Lookup{SourceRegister: reg32, SetName: kUnitAudit, Invert: invert})
	}
	rules := []*nftables.Rule{rule(append(unitKey(level, reg32),
		&expr.Dynset{SrcRegKey: reg32, SetName: kUDenied, Operation: unix.NFT_DYNSET_OP_UPDATE, Exprs: []expr.Any{&expr.Counter{}}})...)}
	if l := unitLogExprs(dl, false); l != nil {
		rules = append(rules, rule(append(inAudit(true), l...)...), rule(append(inAudit(false), unitLogExprs(dl, true)...)...))
	}
	rules = append(rules, rule(append(inAudit(false), &expr.Verdict{Kind: expr.VerdictReturn})...))
	for _, r := range rejectExprs() {
		rules = append(rules, rule(r...))
	}
	return rules
}

// unitLogExprs is logExprs with the meter keyed by the unit key (already in
// NFT_REG32_00) and the unit prefixes. The logged packet carries the unit
// key as its mark (NFULA_MARK, the kernel log's MARK=): the packet's mark
// is saved, set to the key around the log statement, and restored (an
// audited packet goes on; a filter chain's mark change does not reroute).
func unitLogExprs(dl config.DenyLog, audit bool) []expr.Any {
	lim := &expr.Limit{Type: expr.LimitTypePkts, Rate: dl.Rate.Count, Unit: limitUnit(dl.Rate.Unit), Burst: uint32(min(dl.Rate.Count, 1000))}
	meter := []expr.Any{&expr.Meta{Key: expr.MetaKeyMARK, Register: reg32 + 1},
		&expr.Dynset{SrcRegKey: reg32, SetName: kUDenyLog, Operation: unix.NFT_DYNSET_OP_UPDATE, Exprs: []expr.Any{lim}},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg32, SourceRegister: true}}
	restore := &expr.Meta{Key: expr.MetaKeyMARK, Register: reg32 + 1, SourceRegister: true}
	prefix := []byte(UnitLogPrefix(dl.Prefix))
	if audit {
		prefix = []byte(UnitAuditPrefix(dl.Prefix))
	}
	switch dl.Mode {
	case config.LogNFLOG:
		return append(meter, &expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX, Group: dl.Group, Data: prefix}, restore)
	case config.LogKernel:
		return append(meter, &expr.Log{Key: 1<<unix.NFTA_LOG_LEVEL | 1<<unix.NFTA_LOG_PREFIX | 1<<unix.NFTA_LOG_FLAGS,
			Level: expr.LogLevelWarning, Flags: expr.LogFlagsUID, Data: prefix}, restore)
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
	raw, err := setElements(c, t, kUnitKeys)
	if err != nil {
		return nil, err
	}
	var out []Cgroup
	for _, r := range raw {
		if len(r.Key) != 8 || len(r.Val) != 4 {
			continue
		}
		key := binaryutil.NativeEndian.Uint32(r.Val)
		name := names[key]
		if name == "" {
			name = fmt.Sprintf("unit:%d", key)
		}
		out = append(out, Cgroup{ID: binaryutil.NativeEndian.Uint64(r.Key), Allowlist: name})
	}
	return sortedCgroups(out), nil
}

// ApplyCgroups changes the cgroup map in one transaction: deletions, then
// additions. p is the plan in force (it maps allowlists to unit keys).
func (k *Netlink) ApplyCgroups(p Plan, add, del []Cgroup) error {
	if len(add)+len(del) == 0 {
		return nil
	}
	keyOf := uids(p)
	var adds, dels []nftables.SetElement
	for _, cg := range del {
		dels = append(dels, nftables.SetElement{Key: cgroupKey(cg.ID)})
	}
	for _, cg := range add {
		key, ok := keyOf[cg.Allowlist]
		if !ok {
			return fmt.Errorf("cgroup %d: allowlist %q is not a unit allowlist of the plan", cg.ID, cg.Allowlist)
		}
		adds = append(adds, nftables.SetElement{Key: cgroupKey(cg.ID), Val: binaryutil.NativeEndian.PutUint32(key)})
	}
	k.own.mu.Lock()
	defer k.own.mu.Unlock()
	c, _, err := k.writer()
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	m := unitKeysMap()
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
// (unitids, with their allowlists; unitowners, unitdns, unitaudit) and the
// cgroup map.
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
	for _, s := range []struct {
		name   string
		member func(UnitPlan) bool
	}{{kUnitOwners, func(UnitPlan) bool { return true }}, {kUnitDNS, func(u UnitPlan) bool { return u.DNS }}, {kUnitAudit, func(u UnitPlan) bool { return u.Audit }}} {
		have, err := readUIDSet(c, t, s.name)
		if err != nil {
			continue // set_missing
		}
		for _, u := range p.Units {
			if s.member(u) != have[u.Key] {
				diffs = append(diffs, fmt.Sprintf("%s: unit key %d of %q is %v, want %v", s.name, u.Key, u.Allowlist, have[u.Key], s.member(u)))
			}
			delete(have, u.Key)
		}
		for k := range have {
			diffs = append(diffs, fmt.Sprintf("%s: unit key %d not in the plan", s.name, k))
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
		fs = append(fs, Finding{Kind: "users_differ", Object: kUnitKeys, Detail: fmt.Sprintf("%d cgroups missing, %d not in the plan", len(add), len(del))})
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
		if name := names[binaryutil.NativeEndian.Uint32(r.Key)]; name != "" {
			out[name] += r.Counter.Packets
		}
	}
}
