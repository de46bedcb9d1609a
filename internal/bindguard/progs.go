//go:build linux

package bindguard

import (
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

	sockSrcPort = 44 // struct bpf_sock; host byte order
	sockState   = 72

	skbFamily   = 88 // struct __sk_buff
	skbLocalIP4 = 96
	skbLocalIP6 = 116
	skbSK       = 168

	tcpListen  = 10 // TCP_LISTEN
	afInet     = 2
	afInet6    = 10
	ipprotoTCP = 6
)

// Hooks, as an Event reports them.
const (
	HookBind    = 1 // cgroup/bind4, bind6: a bind() to an explicit port
	HookIngress = 3 // cgroup_skb/ingress: a connection to a listener on an ephemeral port (bind to port 0, or listen() unbound)
)

// Stack layout shared by the programs (offsets from R10).
const (
	stKey   = -8  // policy key: uid u32, port u16, proto u8, pad u8
	stEvent = -40 // event record, eventSize bytes
	stMode  = stEvent + 8
)

// eventSize is the record the programs write to the events ring buffer:
// uid u32 | port u16 | proto u8 | family u8 | mode u8 | hook u8 | pad u16 |
// addr [16]byte | pad [4]byte.
const eventSize = 32

// ipSource says where a program reads the local address of the bind.
type ipSource struct {
	ip4, ip6 int16 // ctx offsets
}

// check emits the policy lookup for uid R9, port R7, proto R8 (ctx in R6).
// Not restricted, or a listed port: R0 = 1. Otherwise the event is written
// and R0 = 0, or 1 for an allowlist in audit mode.
func check(policy, events *ebpf.Map, hook uint8, family func() asm.Instructions) asm.Instructions {
	insns := asm.Instructions{
		// Is the uid restricted? Key {uid, 0, 0}.
		asm.StoreMem(asm.RFP, stKey, asm.R9, asm.Word),
		asm.StoreImm(asm.RFP, stKey+4, 0, asm.Half),
		asm.StoreImm(asm.RFP, stKey+6, 0, asm.Half),
		asm.LoadMapPtr(asm.R1, policy.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stKey),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "allow"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.Byte),
		asm.StoreMem(asm.RFP, stMode, asm.R1, asm.Byte),
		// Is the port listed? Key {uid, port, proto}.
		asm.StoreMem(asm.RFP, stKey+4, asm.R7, asm.Half),
		asm.StoreMem(asm.RFP, stKey+6, asm.R8, asm.Byte),
		asm.LoadMapPtr(asm.R1, policy.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stKey),
		asm.FnMapLookupElem.Call(),
		asm.JNE.Imm(asm.R0, 0, "allow"),
		// Refused (or audited): report it.
		asm.StoreMem(asm.RFP, stEvent, asm.R9, asm.Word),
		asm.StoreMem(asm.RFP, stEvent+4, asm.R7, asm.Half),
		asm.StoreMem(asm.RFP, stEvent+6, asm.R8, asm.Byte),
		asm.StoreImm(asm.RFP, stEvent+9, int64(hook), asm.Byte),
		asm.StoreImm(asm.RFP, stEvent+10, 0, asm.Half),
		asm.StoreImm(asm.RFP, stEvent+28, 0, asm.Word),
	}
	insns = append(insns, family()...)
	return append(insns, asm.Instructions{
		asm.LoadMapPtr(asm.R1, events.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, stEvent),
		asm.Mov.Imm(asm.R3, eventSize),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnRingbufOutput.Call(),
		asm.LoadMem(asm.R1, asm.RFP, stMode, asm.Byte),
		asm.JEq.Imm(asm.R1, modeAudit, "allow"),
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
		asm.Mov.Imm(asm.R0, 1).WithSymbol("allow"),
		asm.Return(),
	}...)
}

// address writes the event's family byte and address from the ctx in R6.
func address(family uint8, src ipSource) func() asm.Instructions {
	return func() asm.Instructions {
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
func bindProgram(policy, events *ebpf.Map, family uint8) asm.Instructions {
	return append(asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R7, asm.R6, sockAddrUserPort, asm.Word),
		asm.HostTo(asm.BE, asm.R7, asm.Half), // network → host order
		asm.JEq.Imm(asm.R7, 0, "allow"),
		asm.LoadMem(asm.R8, asm.R6, sockAddrProtocol, asm.Word),
		asm.FnGetCurrentUidGid.Call(),
		asm.Mov.Reg32(asm.R9, asm.R0), // the low 32 bits: the uid
	}, check(policy, events, HookBind, address(family, ipSource{ip4: sockAddrUserIP4, ip6: sockAddrUserIP6}))...)
}

// ingressProgram is cgroup_skb/ingress: a packet for a TCP listener owned by
// a restricted uid on a port it may not listen on is dropped. It covers the
// listeners no bind hook refused: bound to port 0, or listen() on an unbound
// socket (which binds an ephemeral port without any bind hook). The uid is
// the socket's owner.
func ingressProgram(policy, events *ebpf.Map) asm.Instructions {
	return append(asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, skbSK, asm.DWord),
		asm.JEq.Imm(asm.R2, 0, "allow"),
		asm.LoadMem(asm.R3, asm.R2, sockState, asm.Word),
		asm.JNE.Imm(asm.R3, tcpListen, "allow"),
		asm.LoadMem(asm.R7, asm.R2, sockSrcPort, asm.Word),
		asm.Mov.Imm(asm.R8, ipprotoTCP),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.FnGetSocketUid.Call(),
		asm.Mov.Reg32(asm.R9, asm.R0),
	}, check(policy, events, HookIngress, skbAddress)...)
}

// skbAddress writes the packet's local address, IPv4 or IPv6 by its family.
func skbAddress() asm.Instructions {
	v4 := address(afInet, ipSource{ip4: skbLocalIP4})()
	v6 := address(afInet6, ipSource{ip6: skbLocalIP6})()
	insns := asm.Instructions{
		asm.LoadMem(asm.R1, asm.R6, skbFamily, asm.Word),
		asm.JEq.Imm(asm.R1, afInet, "v4"),
	}
	insns = append(insns, v6...)
	insns = append(insns, asm.Ja.Label("addressed"))
	v4[0] = v4[0].WithSymbol("v4")
	insns = append(insns, v4...)
	insns = append(insns, asm.Mov.Imm(asm.R1, 0).WithSymbol("addressed"))
	return insns
}
