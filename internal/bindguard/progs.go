//go:build linux

package bindguard

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// The programs are written with cilium/ebpf's asm package so that building
// egressd needs no clang. Offsets are those of the kernel's UAPI structs
// (linux/bpf.h), which are stable ABI.
const (
	sockAddrUserIP4  = 4  // struct bpf_sock_addr
	sockAddrUserIP6  = 8  //
	sockAddrUserPort = 24 // network byte order
	sockAddrProtocol = 36

	sockProtocol = 12 // struct bpf_sock
	sockSrcPort  = 44 // host byte order
	sockState    = 72

	skbPriority = 32 // struct __sk_buff
	skbFamily   = 88
	skbLocalIP4 = 96
	skbLocalIP6 = 116
	skbSK       = 168

	sockoptLevel   = 24 // struct bpf_sockopt
	sockoptOptname = 28
	sockoptOptlen  = 32

	solIP         = 0  // SOL_IP
	solIPv6       = 41 // SOL_IPV6
	ipRecverr     = 11 // IP_RECVERR
	ipv6Recverr   = 25 // IPV6_RECVERR
	sentinelProto = 255

	tcpListen      = 10 // TCP_LISTEN
	afInet         = 2
	afInet6        = 10
	ipprotoTCP     = 6
	ipprotoICMP    = 1
	ipprotoUDPLite = 136
	ipprotoICMPv6  = 58
)

// Hooks, as an Event reports them.
const (
	HookBind    = 1 // cgroup/bind4, bind6: a bind() to an explicit port
	HookIngress = 3 // cgroup_skb/ingress: a connection to a listener on an ephemeral port (bind to port 0, or listen() unbound)
	HookInbound = 4 // cgroup_skb/ingress: a datagram of a flow the peer opened, to an ephemeral UDP port or a ping socket
)

// Stack layout shared by the programs (offsets from R10).
const (
	stKey   = -8  // uid policy key: uid u32, port u16, proto u8, pad u8
	stEvent = -48 // event record, eventSize bytes
	stMode  = stEvent + 8
	stHook  = stEvent + 9
	stCKey  = -64 // cgroup policy key: cgroup id u64, port u16, proto u8, pad [5]byte
)

// eventSize is the record the programs write to the events ring buffer:
// uid u32 | port u16 | proto u8 | family u8 | mode u8 | hook u8 | pad u16 |
// addr [16]byte | pad [4]byte | cgroup u64 (the restricted unit's cgroup
// that refused it; 0 when the uid's allowlist did).
const eventSize = 40

// MaxLevel is the deepest cgroup level the programs look at: the caller's
// ancestors at levels 1 to MaxLevel of the whole hierarchy, as nftables'
// socket cgroupv2 rules do (ruleset.UnitLevels, cgroup.MaxLevel; a test
// keeps them equal). Levels count from the host's root: inside a cgroup
// namespace (a container) a unit sits deeper than its path there says.
const MaxLevel = 8

// ipSource says where a program reads the local address of the bind.
type ipSource struct {
	ip4, ip6 int16 // ctx offsets
}

// progMaps are the maps the programs use.
type progMaps struct {
	policy  *ebpf.Map // uid rules
	cgroups *ebpf.Map // unit (cgroup) rules; key 0 says whether there are any
	events  *ebpf.Map // ring buffer of refusals
	lost    *ebpf.Map // reports the full ring buffer did not take
}

// ancestorFunc emits a call that leaves in R0 the id of the cgroup at the
// level in R1 (0 when the cgroup is shallower).
type ancestorFunc func(level int) asm.Instructions

// check emits the policy lookups for uid R9, port R7, proto R8 (ctx in R6):
// the uid's rule, then the rule of each restricted unit cgroup among the
// caller's ancestors (ancestor). A refusal by any is reported and returns
// 0, or is reported and passes on for an allowlist in audit mode; R0 = 1
// when none refuses.
func check(m progMaps, hook uint8, family func(tag string) asm.Instructions, ancestor ancestorFunc) asm.Instructions {
	return judge(m, func(next string) asm.Instructions { return report(m, hook, family, next) }, ancestor)
}

// judge is check with refuse emitting what a refusal does (its mode at
// stMode, its cgroup at stEvent+32): return 0, or go on at next in audit
// mode.
func judge(m progMaps, refuse func(next string) asm.Instructions, ancestor ancestorFunc) asm.Instructions {
	insns := asm.Instructions{
		// Is the uid restricted? Key {uid, 0, 0}.
		asm.StoreMem(asm.RFP, stKey, asm.R9, asm.Word),
		asm.StoreImm(asm.RFP, stKey+4, 0, asm.Half),
		asm.StoreImm(asm.RFP, stKey+6, 0, asm.Half),
		asm.LoadMapPtr(asm.R1, mapFD(m.policy)),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "uid_done"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Byte),
		asm.StoreMem(asm.RFP, stMode, asm.R1, asm.Byte),
		// Is the port listed? Key {uid, port, proto}.
		asm.StoreMem(asm.RFP, stKey+4, asm.R7, asm.Half),
		asm.StoreMem(asm.RFP, stKey+6, asm.R8, asm.Byte),
		asm.LoadMapPtr(asm.R1, mapFD(m.policy)),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stKey),
		asm.FnMapLookupElem.Call(),
		asm.JNE.Imm(asm.R0, 0, "uid_done"),
		asm.StoreImm(asm.RFP, stEvent+32, 0, asm.Word),
		asm.StoreImm(asm.RFP, stEvent+32+4, 0, asm.Word),
	}
	insns = append(insns, refuse("uid_done")...)
	// The unit rules: is any unit restricted? Key {0, 0, 0} (no cgroup has
	// id 0). Hosts without unit listen: rules stop here.
	insns = append(insns,
		asm.StoreImm(asm.RFP, stCKey, 0, asm.Word).WithSymbol("uid_done"),
		asm.StoreImm(asm.RFP, stCKey+4, 0, asm.Word),
		asm.StoreImm(asm.RFP, stCKey+8, 0, asm.Word),
		asm.StoreImm(asm.RFP, stCKey+8+4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, mapFD(m.cgroups)),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stCKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "allow"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Byte),
		asm.JEq.Imm(asm.R1, 0, "allow"),
	)
	for level := 1; level <= MaxLevel; level++ {
		next := fmt.Sprintf("level%d", level+1)
		if level == MaxLevel {
			next = "allow"
		}
		anc := ancestor(level)
		anc[0] = anc[0].WithSymbol(fmt.Sprintf("level%d", level))
		insns = append(insns, anc...)
		insns = append(insns,
			asm.JEq.Imm(asm.R0, 0, "allow"), // shallower than level: no more ancestors
			// Is this ancestor a restricted unit's cgroup? Key {id, 0, 0}.
			asm.StoreMem(asm.RFP, stCKey, asm.R0, asm.DWord),
			asm.StoreImm(asm.RFP, stCKey+8, 0, asm.Word),
			asm.StoreImm(asm.RFP, stCKey+8+4, 0, asm.Word),
			asm.LoadMapPtr(asm.R1, mapFD(m.cgroups)),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, stCKey),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, next),
			asm.LoadMem(asm.R1, asm.R0, 0, asm.Byte),
			asm.StoreMem(asm.RFP, stMode, asm.R1, asm.Byte),
			// Is the port listed? Key {id, port, proto}.
			asm.StoreMem(asm.RFP, stCKey+8, asm.R7, asm.Half),
			asm.StoreMem(asm.RFP, stCKey+10, asm.R8, asm.Byte),
			asm.LoadMapPtr(asm.R1, mapFD(m.cgroups)),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, stCKey),
			asm.FnMapLookupElem.Call(),
			asm.JNE.Imm(asm.R0, 0, next),
			asm.LoadMem(asm.R1, asm.RFP, stCKey, asm.DWord),
			asm.StoreMem(asm.RFP, stEvent+32, asm.R1, asm.DWord),
		)
		insns = append(insns, refuse(next)...)
	}
	return append(insns,
		asm.Mov.Imm(asm.R0, 1).WithSymbol("allow"),
		asm.Return(),
	)
}

// report writes the event (its cgroup already at stEvent+32, its mode at
// stMode; its hook already at stHook when hook is 0) to the ring buffer,
// counting it as lost when the buffer is full, then returns 0, or goes on
// at next in audit mode.
func report(m progMaps, hook uint8, family func(tag string) asm.Instructions, next string) asm.Instructions {
	insns := asm.Instructions{
		asm.StoreMem(asm.RFP, stEvent, asm.R9, asm.Word),
		asm.StoreMem(asm.RFP, stEvent+4, asm.R7, asm.Half),
		asm.StoreMem(asm.RFP, stEvent+6, asm.R8, asm.Byte),
		asm.StoreImm(asm.RFP, stEvent+10, 0, asm.Half),
		asm.StoreImm(asm.RFP, stEvent+28, 0, asm.Word),
	}
	if hook != 0 {
		insns = append(insns, asm.StoreImm(asm.RFP, stHook, int64(hook), asm.Byte))
	}
	insns = append(insns, family(next)...)
	lost := fmt.Sprintf("reported_%s", next)
	return append(insns, asm.Instructions{
		asm.LoadMapPtr(asm.R1, mapFD(m.events)),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stEvent),
		asm.Mov.Imm(asm.R3, eventSize),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnRingbufOutput.Call(),
		asm.JEq.Imm(asm.R0, 0, lost),
		// The ring buffer is full: count the report lost (lost[0] += 1).
		asm.StoreImm(asm.RFP, stCKey-16, 0, asm.Word), // key 0, below the live slots
		asm.LoadMapPtr(asm.R1, mapFD(m.lost)),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stCKey-16),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, lost),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.LoadMem(asm.R1, asm.RFP, stMode, asm.Byte).WithSymbol(lost),
		asm.JEq.Imm(asm.R1, modeAudit, next),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	}...)
}

// address writes the event's family byte and address from the ctx in R6.
func address(family uint8, src ipSource) func(string) asm.Instructions {
	return func(string) asm.Instructions {
		insns := asm.Instructions{asm.StoreImm(asm.RFP, stEvent+7, int64(family), asm.Byte)}
		for i := int16(0); i < 4; i++ {
			if family == afInet && i > 0 {
				insns = append(insns, asm.StoreImm(asm.RFP, stEvent+12+4*i, 0, asm.Word))
				continue
			}
			off := src.ip6 + 4*i
			if family == afInet {
				off = src.ip4
			}
			insns = append(insns,
				asm.LoadMem(asm.R1, asm.R6, off, asm.Word),
				asm.StoreMem(asm.RFP, stEvent+12+4*i, asm.R1, asm.Word))
		}
		return insns
	}
}

// bindProgram is cgroup/bind4 or bind6: a bind() to an explicit port the
// caller's uid may not listen on fails with EPERM. A bind to port 0 passes:
// clients do it (Go's runtime probes IPv4-mapped addresses so at start); a
// TCP listener on the port the kernel picks gets no connection (ingress).
func bindProgram(m progMaps, family uint8) asm.Instructions {
	return append(asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R7, asm.R6, sockAddrUserPort, asm.Word),
		asm.HostTo(asm.BE, asm.R7, asm.Half), // network → host order
		asm.JEq.Imm(asm.R7, 0, "allow"),
		asm.LoadMem(asm.R8, asm.R6, sockAddrProtocol, asm.Word),
		asm.FnGetCurrentUidGid.Call(),
		asm.Mov.Reg32(asm.R9, asm.R0), // the low 32 bits: the uid
	}, check(m, HookBind, address(family, ipSource{ip4: sockAddrUserIP4, ip6: sockAddrUserIP6}), currentAncestor)...)
}

// ingressProgram is cgroup_skb/ingress: a packet for a TCP listener owned by
// a restricted uid on a port it may not listen on is dropped. It covers the
// listeners no bind hook refused: bound to port 0, or listen() on an unbound
// socket (which binds an ephemeral port without any bind hook). The uid is
// the socket's owner.
//
// Datagrams: the ruleset's inbound chain sets InboundTag in skb->priority on
// the UDP and UDP-Lite packets of flows the peer opened and on unsolicited
// ICMP echo replies. A tagged packet for a UDP or UDP-Lite socket of a
// restricted uid or unit on a port it may not listen on, or for its ping
// socket (ICMP is never listed), is dropped the same way; an untagged one (a
// reply to what the socket sent) passes. The program clears the tag on every
// packet it sees, before the socket could read it.
func ingressProgram(m progMaps) asm.Instructions {
	return append(asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R1, asm.R6, skbPriority, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R1),
		asm.And.Imm(asm.R4, InboundTag),
		asm.JEq.Imm(asm.R4, 0, "untagged"),
		asm.Xor.Reg(asm.R1, asm.R4),
		asm.StoreMem(asm.R6, skbPriority, asm.R1, asm.Word),
		asm.LoadMem(asm.R2, asm.R6, skbSK, asm.DWord),
		asm.JEq.Imm(asm.R2, 0, "allow"),
		asm.LoadMem(asm.R3, asm.R2, sockState, asm.Word),
		asm.JEq.Imm(asm.R3, tcpListen, "listener"),
		asm.Mov.Reg(asm.R1, asm.R2),
		asm.FnSkFullsock.Call(), // the protocol is not in sock_common
		asm.JEq.Imm(asm.R0, 0, "allow"),
		asm.LoadMem(asm.R8, asm.R0, sockProtocol, asm.Word),
		asm.JEq.Imm(asm.R8, int32(UDP), "datagram"),
		asm.JEq.Imm(asm.R8, ipprotoUDPLite, "datagram"),
		asm.JEq.Imm(asm.R8, ipprotoICMP, "datagram"),
		asm.JEq.Imm(asm.R8, ipprotoICMPv6, "datagram"),
		asm.Ja.Label("allow"),
		asm.LoadMem(asm.R7, asm.R0, sockSrcPort, asm.Word).WithSymbol("datagram"),
		asm.Mov.Imm(asm.R5, HookInbound),
		asm.Ja.Label("judge"),
		asm.LoadMem(asm.R2, asm.R6, skbSK, asm.DWord).WithSymbol("untagged"),
		asm.JEq.Imm(asm.R2, 0, "allow"),
		asm.LoadMem(asm.R3, asm.R2, sockState, asm.Word),
		asm.JNE.Imm(asm.R3, tcpListen, "allow"),
		asm.LoadMem(asm.R7, asm.R2, sockSrcPort, asm.Word).WithSymbol("listener"),
		asm.Mov.Imm(asm.R8, ipprotoTCP),
		asm.Mov.Imm(asm.R5, HookIngress),
		asm.StoreMem(asm.RFP, stHook, asm.R5, asm.Byte).WithSymbol("judge"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.FnGetSocketUid.Call(),
		asm.Mov.Reg32(asm.R9, asm.R0),
	}, check(m, 0, skbAddress, socketAncestor)...)
}

// sockoptProgram is cgroup/setsockopt: for a restricted uid or unit,
// setting IP_RECVERR (SOL_IP, on an IPv4 or IPv6 socket) or IPV6_RECVERR
// (SOL_IPV6), to any value, on any socket, succeeds and does nothing (the
// program sets optlen to -1: the kernel skips its own handler and returns
// 0); getsockopt shows the option off. The kernel queues ICMP errors, whose
// quoted datagram (up to ~500 bytes) a peer chooses, on a socket's error
// queue without running the ingress program, so a UDP, UDP-Lite or ping
// socket could be pushed data through recvmsg(MSG_ERRQUEUE) on any port.
// Not EPERM: glibc's stub resolver (2.30 and later) sets the option on its
// UDP socket and fails the whole query when it cannot, which would break
// every restricted service's name lookups. No event (it is not a bind).
// TCP queues no payload (tcp_v4_err and tcp_v6_err only set sk_err), but
// the option is ignored there too: judging by the value or the protocol
// would have to follow each kernel's parsing (a 1-byte int for SOL_IP) and
// protocol list. The RFC 4884 options only add an offset to errors queued
// because of those two, and pass. Every other option passes with its value
// untouched; an optval longer than a page (which the program sees only the
// first page of) goes to the kernel as the caller gave it (optlen 0, as the
// kernel's rules for this hook ask). Judged by who calls, as a bind is.
func sockoptProgram(m progMaps, pageSize int) asm.Instructions {
	refuse := func(next string) asm.Instructions {
		return asm.Instructions{
			asm.LoadMem(asm.R1, asm.RFP, stMode, asm.Byte),
			asm.JEq.Imm(asm.R1, modeAudit, next),
			asm.StoreImm(asm.R6, sockoptOptlen, -1, asm.Word), // bypass the kernel's handler
			asm.Mov.Imm(asm.R0, 1),
			asm.Return(),
		}
	}
	return append(asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R1, asm.R6, sockoptOptlen, asm.Word),
		asm.JLE.Imm(asm.R1, int32(pageSize), "level"),
		asm.StoreImm(asm.R6, sockoptOptlen, 0, asm.Word),
		asm.LoadMem(asm.R2, asm.R6, sockoptLevel, asm.Word).WithSymbol("level"),
		asm.LoadMem(asm.R3, asm.R6, sockoptOptname, asm.Word),
		asm.JEq.Imm(asm.R2, solIP, "sol_ip"),
		asm.JNE.Imm(asm.R2, solIPv6, "allow"),
		asm.JEq.Imm(asm.R3, ipv6Recverr, "recverr"),
		asm.Ja.Label("allow"),
		asm.JNE.Imm(asm.R3, ipRecverr, "allow").WithSymbol("sol_ip"),
		// Port 0 with a protocol no rule lists: only the markers match.
		asm.Mov.Imm(asm.R7, 0).WithSymbol("recverr"),
		asm.Mov.Imm(asm.R8, sentinelProto),
		asm.FnGetCurrentUidGid.Call(),
		asm.Mov.Reg32(asm.R9, asm.R0),
	}, judge(m, refuse, currentAncestor)...)
}

// currentAncestor is the calling process's cgroup's ancestor at level (a
// bind is judged by who binds, as the uid is).
func currentAncestor(level int) asm.Instructions {
	return asm.Instructions{asm.Mov.Imm(asm.R1, int32(level)), asm.FnGetCurrentAncestorCgroupId.Call()}
}

// socketAncestor is the listening socket's cgroup's ancestor at level (the
// cgroup the socket was made in, as nftables' socket cgroupv2 matches).
func socketAncestor(level int) asm.Instructions {
	return asm.Instructions{asm.Mov.Reg(asm.R1, asm.R6), asm.Mov.Imm(asm.R2, int32(level)), asm.FnSkbAncestorCgroupId.Call()}
}

// skbAddress writes the packet's local address, IPv4 or IPv6 by its family
// (tag makes its labels unique in the program).
func skbAddress(tag string) asm.Instructions {
	v4 := address(afInet, ipSource{ip4: skbLocalIP4})(tag)
	v6 := address(afInet6, ipSource{ip6: skbLocalIP6})(tag)
	insns := asm.Instructions{
		asm.LoadMem(asm.R1, asm.R6, skbFamily, asm.Word),
		asm.JEq.Imm(asm.R1, afInet, "v4_"+tag),
	}
	insns = append(insns, v6...)
	insns = append(insns, asm.Ja.Label("addressed_"+tag))
	v4[0] = v4[0].WithSymbol("v4_" + tag)
	insns = append(insns, v4...)
	insns = append(insns, asm.Mov.Imm(asm.R1, 0).WithSymbol("addressed_"+tag))
	return insns
}

// mapFD is m's file descriptor, or -1 for a map not opened (the tests build
// the programs without a kernel): asm.LoadMapPtr then makes an invalid
// instruction, which neither assembles nor loads.
func mapFD(m *ebpf.Map) int {
	if m == nil {
		return -1
	}
	return m.FD()
}
