package ruleset

import (
	"fmt"

	"github.com/egressd/egressd/internal/bindguard"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// InboundPriority is the inbound chain's priority on the input hook: the
// last one (after every other tool's input chains; conntrack confirms at
// the maximum), so that a packet it tags is delivered, not dropped later
// with the tag on.
const InboundPriority = "2147483646"

// inboundRules tag, with bindguard.InboundTag in skb->priority, the packets
// that reach a local socket on a flow the peer opened: UDP and UDP-Lite in
// the original direction, and ICMP/ICMPv6 echo replies that conntrack has
// no request for. bindguard's ingress program drops a tagged packet for a
// restricted user's or unit's datagram socket on a port it may not listen
// on (or for its ping socket) and clears the tag on every packet; a reply
// to what the service sent is untagged and passes. The chain exists while
// some allowlist has listen: (Plan.Inbound).
//
// Then it sends ICMP and ICMPv6 to icmperr (icmpErrorRules), which
// drops the errors a restricted service would read without the ingress
// program: every other packet pays two comparisons for it, whatever the
// number of allowlists.
func inboundRules() []Rule {
	rules := []Rule{
		rule(untagInbound).
			because("a tag set before (on a tunnel's outer packet, by a tc class) is not the peer-opened mark: the inner packet of a VXLAN, Geneve or FOU tunnel passes this chain again"),
		rule(l4protoNamed(unix.IPPROTO_UDP, "udp"), ctDirection(false), tagInbound).
			because("a datagram of a flow the peer opened: not to a restricted service's unlisted port (bindguard)"),
		rule(l4protoNamed(unix.IPPROTO_UDPLITE, "udplite"), ctDirection(false), tagInbound),
		rule(echoReply(false), ctState(expr.CtStateBitINVALID), tagInbound).
			because("an echo reply nobody asked for: not to a restricted service's ping socket (bindguard)"),
		rule(echoReply(true), ctState(expr.CtStateBitINVALID), tagInbound),
		rule(l4protoNamed(unix.IPPROTO_ICMP, "icmp"), jumpTo(chainICMPErr)).
			because("ICMP errors a restricted service could read (icmperr)"),
		rule(l4protoNamed(unix.IPPROTO_ICMPV6, "icmpv6"), jumpTo(chainICMPErr)),
	}
	return rules
}

// icmpErrorRules drop ICMP and ICMPv6 errors that a datagram socket
// (UDP, UDP-Lite, ping; anything but TCP) of a restricted subject could
// read: an error reaches the socket without the cgroup ingress program,
// as its error queue (IP_RECVERR, IPV6_RECVERR: the quoted datagram, bytes
// of the peer's choosing), an errno (the ICMP code) or the path MTU
// (IP_MTU). bindguard's setsockopt program keeps IP_RECVERR off for
// native calls only; these rules are the second layer, independent of the
// socket option. For an ICMP error conntrack attaches the flow it quotes
// (ct state related), so ct direction, ct protocol, ct mark and ct label
// are that flow's:
//
//   - related, ct direction original: the error quotes a packet of the
//     side that answered a flow the peer opened (a peer that first sends
//     a datagram to the service's port makes such a flow, with no opener's
//     mark, for any quote it then wants related): dropped for every
//     socket, which no rule can tell apart here;
//   - related, the flow opened by a uid whose allowlist has listen:
//     (ct mark @listenmarks: restrictedRules sets the opener's uid as the
//     mark), or by a unit whose allowlist has listen: (its key in ct label
//     bits 64-95: unitRules);
//   - an ICMP error conntrack relates to no flow (ct state invalid: a
//     quote of a datagram never sent, which an unconnected socket on the
//     quoted port accepts), or that conntrack never saw (ct state
//     untracked: another table's notrack rule), unless it quotes TCP;
//     for ICMPv6 every type below 128, which the kernel hands to the
//     quoted socket as an error whether defined or not (icmpv6_rcv:
//     "error of unknown type must pass to upper level").
//
// TCP flows keep their errors: path MTU discovery needs them, and TCP
// queues no payload (its errno channel is a documented limit).
func icmpErrorRules(p Plan) []Rule {
	// Only ICMP and ICMPv6 come here (inboundRules): a related one is an
	// error about the flow it quotes.
	related := func(ss ...Stmt) []Stmt {
		return append([]Stmt{ctState(expr.CtStateBitRELATED), ctProtocolNot(unix.IPPROTO_TCP, "tcp")}, append(ss, drop)...)
	}
	rules := []Rule{
		rule(related(ctDirection(false))...).because("an ICMP error about a datagram flow a peer opened"),
		rule(related(ctMarkIn(kListenMarks))...).because("an ICMP error about a datagram flow of a uid with listen:"),
	}
	for _, u := range p.Of(SubjectUnit) {
		if u.Listen {
			rules = append(rules, rule(related(ctLabelIs(u.Subject.ID, true))...).because("an ICMP error about a datagram flow of unit "+u.Subject.Unit+" (listen:)"))
		}
	}
	noFlow := ctState(expr.CtStateBitINVALID | expr.CtStateBitUNTRACKED)
	for i, t := range icmpErrorTypes() {
		r := rule(icmpType(false, t.typ, t.name), noFlow, quotesNot(false, unix.IPPROTO_TCP), drop)
		if i == 0 {
			r = r.because("an ICMP error about no flow (a forged quote), or one conntrack never saw (notrack)")
		}
		rules = append(rules, r)
	}
	rules = append(rules, rule(icmpv6Error, noFlow, quotesNot(true, unix.IPPROTO_TCP), drop).
		because("every ICMPv6 type below 128 is an error to the kernel, defined or not"))
	return rules
}

// icmpv6Error: icmpv6 type < 128 (the family and protocol matches
// included; nft prints 128 as echo-request): an error message.
var icmpv6Error = Stmt{"icmpv6 type < 128", append(append(nfproto(true).Exprs, l4protoNamed(unix.IPPROTO_ICMPV6, "").Exprs...),
	&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
	&expr.Cmp{Op: expr.CmpOpLt, Register: reg1, Data: []byte{128}},
)}

type icmpTypeName struct {
	typ  byte
	name string
}

// icmpErrorTypes are the ICMP error messages conntrack relates to the
// flow they quote (nf_conntrack_proto_icmp: icmp_is_err), a superset of
// those the kernel hands to a socket (ICMPv6: icmpv6Error).
func icmpErrorTypes() []icmpTypeName {
	return []icmpTypeName{{3, "destination-unreachable"}, {4, "source-quench"}, {5, "redirect"}, {11, "time-exceeded"}, {12, "parameter-problem"}}
}

// ctProtocolNot: ct protocol != NAME (the layer 4 protocol of the flow).
func ctProtocolNot(proto byte, name string) Stmt {
	return Stmt{"ct protocol != " + name, []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeyPROTOCOL},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: []byte{proto}},
	}}
}

// quotesNot: the protocol of the datagram an ICMP error quotes is not
// proto: the inner IPv4 header's protocol (byte 9) or the inner IPv6
// header's next header (byte 6), after the 8 bytes of the ICMP header
// (nft prints a raw payload match: @th,OFFSET,8).
func quotesNot(v6 bool, proto byte) Stmt {
	off := uint32(8 + 9)
	if v6 {
		off = 8 + 6
	}
	return Stmt{fmt.Sprintf("@th,%d,8 != 0x%x", off*8, proto), []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: []byte{proto}},
	}}
}

// l4protoNamed: meta l4proto NAME.
func l4protoNamed(proto byte, name string) Stmt {
	return Stmt{"meta l4proto " + name, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{proto}},
	}}
}

// echoReply: icmp type echo-reply, or icmpv6 type echo-reply (the family
// and protocol matches included).
func echoReply(v6 bool) Stmt {
	if v6 {
		return icmpType(true, 129, "echo-reply")
	}
	return icmpType(false, 0, "echo-reply")
}

// icmpType: icmp type NAME, or icmpv6 type NAME (the family and protocol
// matches included).
func icmpType(v6 bool, typ byte, name string) Stmt {
	proto, text := byte(unix.IPPROTO_ICMP), "icmp type "+name
	if v6 {
		proto, text = unix.IPPROTO_ICMPV6, "icmpv6 type "+name
	}
	return Stmt{text, append(append(nfproto(v6).Exprs, l4protoNamed(proto, "").Exprs...),
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{typ}},
	)}
}

// untagInbound: meta priority set meta priority & ^TAG.
var untagInbound = Stmt{fmt.Sprintf("meta priority set meta priority & %x:%x", ^uint32(bindguard.InboundTag)>>16, ^uint32(bindguard.InboundTag)&0xffff), []expr.Any{
	&expr.Meta{Key: expr.MetaKeyPRIORITY, Register: reg1},
	&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
		Mask: binaryutil.NativeEndian.PutUint32(^uint32(bindguard.InboundTag)), Xor: binaryutil.NativeEndian.PutUint32(0)},
	&expr.Meta{Key: expr.MetaKeyPRIORITY, Register: reg1, SourceRegister: true},
}}

// tagInbound: meta priority set meta priority | TAG (nft prints a priority
// as a tc handle, MAJOR:MINOR in hex).
var tagInbound = Stmt{fmt.Sprintf("meta priority set meta priority | %x:%x", bindguard.InboundTag>>16, bindguard.InboundTag&0xffff), []expr.Any{
	&expr.Meta{Key: expr.MetaKeyPRIORITY, Register: reg1},
	&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
		Mask: binaryutil.NativeEndian.PutUint32(^uint32(bindguard.InboundTag)), Xor: binaryutil.NativeEndian.PutUint32(bindguard.InboundTag)},
	&expr.Meta{Key: expr.MetaKeyPRIORITY, Register: reg1, SourceRegister: true},
}}
