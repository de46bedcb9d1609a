package ruleset

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/egressd/egressd/config"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The statements egressd's rules are made of: each knows its nft text and
// its lowering to netlink expressions, in one place.

// Registers: NFT_REG_1 (1) is the 16 bytes of NFT_REG32_00..03 (8..11).
const (
	reg1   = 1
	reg32  = 8 // NFT_REG32_00
	rtnLoc = 2 // RTN_LOCAL
	ipv6RT = 43
	tcpMP  = 30 // TCP option kind: MPTCP

	ipsExpected  = 1 << 0 // IPS_EXPECTED: opened from a helper's expectation; its ct mark is its master's
	ipsConfirmed = 1 << 3 // IPS_CONFIRMED: the conntrack entry is in the table
	ipsSrcNAT    = 1 << 4 // IPS_SRC_NAT
	ipsDstNAT    = 1 << 5 // IPS_DST_NAT: the destination was rewritten (the proxy's redirect)
)

var zero4 = []byte{0, 0, 0, 0}

// Verdicts.
var (
	accept = Stmt{"accept", []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}}
	drop   = Stmt{"drop", []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}}
	ret    = Stmt{"return", []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}}
)

func goTo(chain string) Stmt {
	return Stmt{"goto " + chain, []expr.Any{&expr.Verdict{Kind: expr.VerdictGoto, Chain: chain}}}
}

func jumpTo(chain string) Stmt {
	return Stmt{"jump " + chain, []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chain}}}
}

// ctState: ct state BITS (any of them).
func ctState(bits uint32) Stmt {
	var names []string
	for _, b := range []struct {
		bit  uint32
		name string
	}{{expr.CtStateBitINVALID, "invalid"}, {expr.CtStateBitESTABLISHED, "established"}, {expr.CtStateBitRELATED, "related"}, {expr.CtStateBitNEW, "new"}, {expr.CtStateBitUNTRACKED, "untracked"}} {
		if bits&b.bit != 0 {
			names = append(names, b.name)
		}
	}
	return Stmt{"ct state " + strings.Join(names, ","), []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: zero4},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: zero4},
	}}
}

const established = expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED

// ctStatus: ct status & BITS != 0 (== 0 when !set).
func ctStatus(bits uint32, set bool) Stmt {
	var names []string
	for _, b := range []struct {
		bit  uint32
		name string
	}{{ipsExpected, "expected"}, {ipsConfirmed, "confirmed"}, {ipsSrcNAT, "snat"}, {ipsDstNAT, "dnat"}} {
		if bits&b.bit != 0 {
			names = append(names, b.name)
		}
	}
	mask := strings.Join(names, " | ")
	if len(names) > 1 {
		mask = "(" + mask + ")"
	}
	op, text := expr.CmpOpEq, "ct status & "+mask+" == 0"
	if set {
		op, text = expr.CmpOpNeq, "ct status & "+mask+" != 0"
	}
	return Stmt{text, []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: zero4},
		&expr.Cmp{Op: op, Register: reg1, Data: zero4},
	}}
}

// ctDirection: ct direction original (0) or reply (1).
func ctDirection(reply bool) Stmt {
	d, t := byte(0), "original"
	if reply {
		d, t = 1, "reply"
	}
	return Stmt{"ct direction " + t, []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeyDIRECTION},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{d}},
	}}
}

// ctMarkSetSkuid: ct mark set meta skuid map @uidmarks: the flow's opener,
// its uid as the mark. Through the map u : u of every protected uid, as nft
// writes it (it refuses `ct mark set meta skuid`: a uid is not a mark, and
// has no cast); the map has every uid this chain sees.
var ctMarkSetSkuid = Stmt{"ct mark set meta skuid map @" + kUIDMarks, []expr.Any{
	&expr.Meta{Key: expr.MetaKeySKUID, Register: reg1},
	&expr.Lookup{SourceRegister: reg1, SetName: kUIDMarks, DestRegister: reg1, IsDestRegSet: true},
	&expr.Ct{Key: expr.CtKeyMARK, Register: reg1, SourceRegister: true},
}}

// ctMarkIn: ct mark @set.
func ctMarkIn(set string) Stmt {
	return Stmt{"ct mark @" + set, []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeyMARK},
		&expr.Lookup{SourceRegister: reg1, SetName: set},
	}}
}

// ctZoneSet: ct zone set Z.
func ctZoneSet(z uint16) Stmt {
	return Stmt{fmt.Sprintf("ct zone set %d", z), []expr.Any{
		&expr.Immediate{Register: reg1, Data: binaryutil.NativeEndian.PutUint16(z)},
		&expr.Ct{Key: expr.CtKeyZONE, Register: reg1, SourceRegister: true},
	}}
}

// openerIsOwn is `ct mark . meta skuid @owners` (`!= @owners` with invert):
// the flow's opener, recorded in its conntrack mark, is (is not) the
// socket's uid. Whole 32-bit registers from NFT_REG32_00, so that nft
// prints the lookup (a sub-range of the ct label, the earlier encoding, is
// beyond nft's syntax: Debian 12's nft printed the rule without its
// lookup). A flow the kernel opened from a helper's expectation (FTP data)
// inherits its master's mark: its opener is not the mark's uid, so it is
// never "own": callers put ctStatus(ipsExpected, false) before the match.
func openerIsOwn(invert bool) Stmt {
	op := ""
	if invert {
		op = "!= "
	}
	return Stmt{"ct mark . meta skuid " + op + "@" + kOwners, []expr.Any{
		&expr.Ct{Register: reg32, Key: expr.CtKeyMARK},
		&expr.Meta{Key: expr.MetaKeySKUID, Register: reg32 + 1},
		&expr.Lookup{SourceRegister: reg32, SetName: kOwners, Invert: invert},
	}}
}

// skuidIn: meta skuid @set (!= @set with invert).
func skuidIn(set string, invert bool) Stmt {
	op := ""
	if invert {
		op = "!= "
	}
	return Stmt{"meta skuid " + op + "@" + set, []expr.Any{
		&expr.Meta{Key: expr.MetaKeySKUID, Register: reg1},
		&expr.Lookup{SourceRegister: reg1, SetName: set, Invert: invert},
	}}
}

func protoName(p byte) string {
	if p == unix.IPPROTO_TCP {
		return "tcp"
	}
	return "udp"
}

// l4Port: udp|tcp dport|sport PORT.
func l4Port(proto byte, dport bool, port uint16) Stmt {
	off, dir := uint32(0), "sport"
	if dport {
		off, dir = 2, "dport"
	}
	return Stmt{fmt.Sprintf("%s %s %d", protoName(proto), dir, port), []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{proto}},
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{byte(port >> 8), byte(port)}},
	}}
}

// l4proto: meta l4proto tcp|udp.
func l4proto(proto byte) Stmt {
	return Stmt{"meta l4proto " + protoName(proto), []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{proto}},
	}}
}

// nfproto: meta nfproto ipv4|ipv6.
func nfproto(v6 bool) Stmt {
	p, t := byte(unix.NFPROTO_IPV4), "ipv4"
	if v6 {
		p, t = unix.NFPROTO_IPV6, "ipv6"
	}
	return Stmt{"meta nfproto " + t, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{p}},
	}}
}

// saddrIs: ip[6] saddr A (the family match included).
func saddrIs(a netip.Addr) Stmt {
	n, off, t := nfproto(false), uint32(12), "ip saddr "
	if a.Is6() {
		n, off, t = nfproto(true), 8, "ip6 saddr "
	}
	return Stmt{t + a.String(), append(n.Exprs,
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(a.BitLen() / 8)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: a.AsSlice()},
	)}
}

// iifLoopback: meta iiftype loopback.
var iifLoopback = Stmt{"meta iiftype loopback", []expr.Any{
	&expr.Meta{Key: expr.MetaKeyIIFTYPE, Register: reg1},
	&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint16(unix.ARPHRD_LOOPBACK)},
}}

// fibLocal: fib saddr|daddr type local (!= local when !local).
func fibLocal(saddr, local bool) Stmt {
	op, t := expr.CmpOpEq, "local"
	if !local {
		op, t = expr.CmpOpNeq, "!= local"
	}
	f, w := &expr.Fib{Register: reg1, ResultADDRTYPE: true, FlagDADDR: true}, "daddr"
	if saddr {
		f, w = &expr.Fib{Register: reg1, ResultADDRTYPE: true, FlagSADDR: true}, "saddr"
	}
	return Stmt{"fib " + w + " type " + t, []expr.Any{f,
		&expr.Cmp{Op: op, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(rtnLoc)},
	}}
}

// socketMarkNot: socket mark != M.
func socketMarkNot(m uint32) Stmt {
	return Stmt{fmt.Sprintf("socket mark != 0x%08x", m), []expr.Any{
		&expr.Socket{Key: expr.SocketKeyMark, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(m)},
	}}
}

// socketFound: socket transparent <= 1, true of any socket the packet
// belongs to (a TIME_WAIT one included); the rule stops where there is none.
var socketFound = Stmt{"socket transparent <= 1", []expr.Any{
	&expr.Socket{Key: expr.SocketKeyTransparent, Register: reg1},
	&expr.Cmp{Op: expr.CmpOpLte, Register: reg1, Data: []byte{1}},
}}

// rtHdr: exthdr rt exists (IPv6 routing header; callers match ipv6 first).
var rtHdr = Stmt{"exthdr rt exists", []expr.Any{
	&expr.Exthdr{Op: expr.ExthdrOpIpv6, Type: ipv6RT, Offset: 0, Len: 1, Flags: unix.NFT_EXTHDR_F_PRESENT, DestRegister: reg1},
	&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{1}},
}}

// ipOptions: ip hdrlength != 5 (IPv4 options; callers match ipv4 first).
var ipOptions = Stmt{"ip hdrlength != 5", []expr.Any{
	&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 0, Len: 1},
	&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 1, Mask: []byte{0x0f}, Xor: []byte{0}},
	&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: []byte{5}},
}}

// mptcpOff: a SYN's MPTCP option gets the private-use subtype 0xf (the
// option's bytes 2-3 written as 0xf000), which peers ignore.
var mptcpOff = []Stmt{
	l4proto(unix.IPPROTO_TCP),
	{"tcp flags & syn != 0", []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 1, Mask: []byte{0x02}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: []byte{0}},
	}},
	{"tcp option mptcp exists", []expr.Any{
		&expr.Exthdr{Op: expr.ExthdrOpTcpopt, Type: tcpMP, Offset: 0, Len: 1, Flags: unix.NFT_EXTHDR_F_PRESENT, DestRegister: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{1}},
	}},
	{"tcp option @30,16,16 set 0xf000", []expr.Any{
		&expr.Immediate{Register: reg1, Data: []byte{0xf0, 0x00}},
		&expr.Exthdr{Op: expr.ExthdrOpTcpopt, Type: tcpMP, Offset: 2, Len: 2, SourceRegister: reg1},
	}},
}

// redirectTo: redirect to :PORT.
func redirectTo(port uint16) Stmt {
	return Stmt{fmt.Sprintf("redirect to :%d", port), []expr.Any{
		&expr.Immediate{Register: reg1, Data: []byte{byte(port >> 8), byte(port)}},
		&expr.Redir{RegisterProtoMin: reg1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED},
	}}
}

// Rejects.
var (
	rejectAdmin = Stmt{"reject with icmpx admin-prohibited", []expr.Any{
		&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED}}}
	rejectReset = Stmt{"reject with tcp reset", []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}}}
)

// rejectRules are the two rules that end a deny chain: a TCP reset for
// TCP, ICMP administratively prohibited otherwise, so that a denied
// connect fails at once.
func rejectRules() []Rule {
	return []Rule{rule(l4proto(unix.IPPROTO_TCP), rejectReset), rule(rejectAdmin)}
}

// lookupKey: [meta skuid .] meta l4proto . ip[6] daddr . th dport @SET
// (the uid turned to network order where the set keeps it so, keyOrder),
// after the family match.
func lookupKey(ks kernelSet) []Stmt {
	daddrOff, daddrLen, daddr := uint32(16), uint32(4), "ip daddr"
	if ks.V6 {
		daddrOff, daddrLen, daddr = 24, 16, "ip6 daddr"
	}
	r := uint32(reg32)
	var es []expr.Any
	text := "meta l4proto . " + daddr + " . th dport @" + ks.name()
	if !ks.DNS {
		es = append(es, &expr.Meta{Key: expr.MetaKeySKUID, Register: r})
		if ks.Range {
			es = append(es, &expr.Byteorder{SourceRegister: r, DestRegister: r, Op: expr.ByteorderHton, Len: 4, Size: 4})
		}
		r++
		text = "meta skuid . " + text
	}
	es = append(es, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: r},
		&expr.Payload{DestRegister: r + 1, Base: expr.PayloadBaseNetworkHeader, Offset: daddrOff, Len: daddrLen},
		&expr.Payload{DestRegister: r + 1 + daddrLen/4, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: reg32, SetName: ks.name()})
	return []Stmt{nfproto(ks.V6), {text, es}}
}

// unitLookupKey: K . meta l4proto . ip[6] daddr . th dport @uallow*, the
// unit key k a constant in the set's byte order (keyOrder).
func unitLookupKey(ks kernelSet, k uint32) []Stmt {
	daddrOff, daddrLen, daddr := uint32(16), uint32(4), "ip daddr"
	if ks.V6 {
		daddrOff, daddrLen, daddr = 24, 16, "ip6 daddr"
	}
	r := uint32(reg32 + 1)
	return []Stmt{nfproto(ks.V6), {fmt.Sprintf("%s . meta l4proto . %s . th dport @%s", unitKeyText(k), daddr, ks.name()), []expr.Any{
		&expr.Immediate{Register: reg32, Data: keyOrder(ks).PutUint32(k)},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: r},
		&expr.Payload{DestRegister: r + 1, Base: expr.PayloadBaseNetworkHeader, Offset: daddrOff, Len: daddrLen},
		&expr.Payload{DestRegister: r + 1 + daddrLen/4, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: reg32, SetName: ks.name()},
	}}}
}

// keyOrder is the byte order of the uid (or unit key) in a set's elements:
// nft stores every field of a concatenated interval key in network order
// (the rule turns `meta skuid` around with a byteorder expression, see
// lookupKey) and prints those sets' elements so; in host order there,
// Debian 12's nft printed uid 4001 as 2702114816.
func keyOrder(ks kernelSet) binaryutil.ByteOrder {
	if ks.Range {
		return binaryutil.BigEndian
	}
	return binaryutil.NativeEndian
}

func limitUnit(u string) expr.LimitTime {
	switch u {
	case "minute":
		return expr.LimitTimeMinute
	case "hour":
		return expr.LimitTimeHour
	case "day":
		return expr.LimitTimeDay
	}
	return expr.LimitTimeSecond
}

func unitText(u string) string {
	switch u {
	case "minute", "hour", "day":
		return u
	}
	return "second"
}

// limitOf is the deny log's rate limit: its expression and its text.
func limitOf(dl config.DenyLog) (*expr.Limit, string) {
	burst := min(dl.Rate.Count, 1000)
	return &expr.Limit{Type: expr.LimitTypePkts, Rate: dl.Rate.Count, Unit: limitUnit(dl.Rate.Unit), Burst: uint32(burst)},
		fmt.Sprintf("limit rate %d/%s burst %d packets", dl.Rate.Count, unitText(dl.Rate.Unit), burst)
}

// logStmt: log prefix P group G (nflog) or log prefix P level warn flags
// skuid (kernel); ok false when the deny log is off.
func logStmt(dl config.DenyLog, prefix string) (Stmt, bool) {
	switch dl.Mode {
	case config.LogNFLOG:
		return Stmt{fmt.Sprintf("log prefix %q group %d", prefix, dl.Group), []expr.Any{
			&expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX, Group: dl.Group, Data: []byte(prefix)}}}, true
	case config.LogKernel:
		return Stmt{fmt.Sprintf("log prefix %q level warn flags skuid", prefix), []expr.Any{
			&expr.Log{Key: 1<<unix.NFTA_LOG_LEVEL | 1<<unix.NFTA_LOG_PREFIX | 1<<unix.NFTA_LOG_FLAGS,
				Level: expr.LogLevelWarning, Flags: expr.LogFlagsUID, Data: []byte(prefix)}}}, true
	}
	return Stmt{}, false
}

// updateBySkuid: update @SET { meta skuid STMT } (a dynamic set keyed by
// uid, with a counter or a limit per element).
func updateBySkuid(set, text string, e expr.Any) Stmt {
	return Stmt{fmt.Sprintf("update @%s { meta skuid %s }", set, text), []expr.Any{
		&expr.Meta{Key: expr.MetaKeySKUID, Register: reg1},
		&expr.Dynset{SrcRegKey: reg1, SetName: set, Operation: unix.NFT_DYNSET_OP_UPDATE, Exprs: []expr.Any{e}},
	}}
}

// ctLabelSet: ct label set BITS: the unit key k in label bits 64-95 (a
// label set only sets bits).
func ctLabelSet(k uint32) Stmt {
	return Stmt{"ct label set " + unitLabelText(k), []expr.Any{
		&expr.Immediate{Register: reg1, Data: unitLabel(k)},
		&expr.Ct{Key: expr.CtKeyLABELS, Register: reg1, SourceRegister: true},
	}}
}

// ctLabelIs: ct label & (bits 64-95) == BITS (!= when !own): the flow's
// opener is (is not) the unit with key k.
func ctLabelIs(k uint32, own bool) Stmt {
	op, t := expr.CmpOpEq, "=="
	if !own {
		op, t = expr.CmpOpNeq, "!="
	}
	return Stmt{"ct label & " + unitLabelMaskText() + " " + t + " " + unitLabelText(k), []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeyLABELS},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 16, Mask: unitLabelMask, Xor: make([]byte, 16)},
		&expr.Cmp{Op: op, Register: reg1, Data: unitLabel(k)},
	}}
}

// unitLabelText is the conntrack label bits of unit key k (bits 64-95), as
// nft prints them; unitLabelMaskText is bits 64-95.
func unitLabelText(k uint32) string {
	var bits []string
	for i := 0; i < 32; i++ {
		// Label bytes 8-11 hold k in host order (unitLabel): on a
		// little-endian host bit i of k is label bit 64+i.
		if k&(1<<i) != 0 {
			bits = append(bits, fmt.Sprint(64+i))
		}
	}
	return strings.Join(bits, " | ")
}

// unitLabelMaskText is label bits 64-95, as nft takes a label mask.
func unitLabelMaskText() string {
	bits := make([]string, 32)
	for i := range bits {
		bits[i] = fmt.Sprint(64 + i)
	}
	return "(" + strings.Join(bits, " | ") + ")"
}
