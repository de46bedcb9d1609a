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
func inboundRules() []Rule {
	return []Rule{
		rule(untagInbound).
			because("a tag set before (on a tunnel's outer packet, by a tc class) is not the peer-opened mark: the inner packet of a VXLAN, Geneve or FOU tunnel passes this chain again"),
		rule(l4protoNamed(unix.IPPROTO_UDP, "udp"), ctDirection(false), tagInbound).
			because("a datagram of a flow the peer opened: not to a restricted service's unlisted port (bindguard)"),
		rule(l4protoNamed(unix.IPPROTO_UDPLITE, "udplite"), ctDirection(false), tagInbound),
		rule(echoReply(false), ctState(expr.CtStateBitINVALID), tagInbound).
			because("an echo reply nobody asked for: not to a restricted service's ping socket (bindguard)"),
		rule(echoReply(true), ctState(expr.CtStateBitINVALID), tagInbound),
	}
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
	proto, typ, text := byte(unix.IPPROTO_ICMP), byte(0), "icmp type echo-reply"
	if v6 {
		proto, typ, text = unix.IPPROTO_ICMPV6, 129, "icmpv6 type echo-reply"
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
