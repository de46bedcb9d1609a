// Package conntrack reads single entries of the kernel's connection tracking
// table over ctnetlink: given a flow as a local socket sees it, which uid
// opened it, where it was really going, and whether it was NATed. egressd's
// DNS proxy uses it to learn who sent a query that the kernel redirected to
// it: the opener's uid is the flow's conntrack mark, written by the
// `restricted` chain (ruleset) on the flow's first packet.
//
// The package only reads; it never creates, changes or deletes an entry.
package conntrack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// ErrNotFound: the kernel has no entry for the tuple (ENOENT): the flow was
// never tracked, or its entry has expired.
var ErrNotFound = errors.New("conntrack: no such entry")

// Status bits (enum ip_conntrack_status, linux/netfilter/nf_conntrack_common.h).
const (
	StatusExpected  = 1 << 0 // IPS_EXPECTED: opened from a helper's expectation; its mark is its master's
	StatusSeenReply = 1 << 1 // IPS_SEEN_REPLY
	StatusConfirmed = 1 << 3 // IPS_CONFIRMED: the entry is in the table
	StatusSrcNAT    = 1 << 4 // IPS_SRC_NAT
	StatusDstNAT    = 1 << 5 // IPS_DST_NAT: redirect and dnat set it
)

// Tuple is one direction of a flow.
type Tuple struct {
	Proto    uint8 // IPPROTO_UDP, IPPROTO_TCP, ...
	Src, Dst netip.AddrPort
}

// Flow is what the kernel holds about one tracked flow.
type Flow struct {
	// Orig is the flow as its opener sent it, before any NAT: for a DNS
	// query redirected to the proxy, Orig.Dst is the resolver the client
	// asked.
	Orig Tuple
	// Reply is the tuple of the answer direction, after NAT.
	Reply  Tuple
	Status uint32 // Status* bits
	// Mark is the flow's conntrack mark (CTA_MARK); 0 when the kernel
	// sends none.
	Mark uint32
}

// OpenerUID is the uid that egressd recorded as the flow's opener (its
// conntrack mark, `ct mark set meta skuid`); false when the mark is 0,
// i.e. the flow was not opened by a protected user while egressd's rules
// were in place, and false for a flow opened from a helper's expectation,
// which inherits its master's mark (as the ruleset's owner check). uid 0
// cannot be told apart from "unmarked"; root is never a protected user.
func (f Flow) OpenerUID() (uint32, bool) {
	if f.Status&StatusExpected != 0 {
		return 0, false
	}
	return f.Mark, f.Mark != 0
}

// DstNAT reports whether the flow's destination was rewritten (redirect or
// dnat): Orig.Dst is then not where the packets went.
func (f Flow) DstNAT() bool { return f.Status&StatusDstNAT != 0 }

// ctnetlink message types and attributes (linux/netfilter/nfnetlink.h,
// nfnetlink_conntrack.h).
const (
	nfnlSubsysCTNetlink = 1
	ctMsgNew            = 0
	ctMsgGet            = 1

	ctaTupleOrig  = 1
	ctaTupleReply = 2
	ctaZone       = 18 // CTA_ZONE, be16
	ctaStatus     = 3
	ctaMark       = 8 // CTA_MARK, be32

	ctaTupleIP    = 1
	ctaTupleProto = 2

	ctaIPv4Src = 1
	ctaIPv4Dst = 2
	ctaIPv6Src = 3
	ctaIPv6Dst = 4

	ctaProtoNum     = 1
	ctaProtoSrcPort = 2
	ctaProtoDstPort = 3

	nlaNested   = 1 << 15 // NLA_F_NESTED
	nlaTypeMask = 1<<14 - 1
	nlmRequest  = 1 // NLM_F_REQUEST
)

const (
	afInet  = 2
	afInet6 = 10
)

// appendGetRequest appends to b the netlink message IPCTNL_MSG_CT_GET,
// sequence number seq, for the flow whose reply tuple is t, in zone 0: the
// nlmsghdr, the nfgenmsg header, then CTA_TUPLE_REPLY. Built by hand (a
// fixed layout, into a reused buffer) because the proxy sends one per
// query.
func appendGetRequest(b []byte, seq uint32, t Tuple) ([]byte, error) {
	return appendRequest(b, seq, t, 0, ctMsgGet, ctaTupleReply, nlmRequest)
}

// appendGetRequestZone is appendGetRequest in conntrack zone zone.
func appendGetRequestZone(b []byte, seq uint32, t Tuple, zone uint16) ([]byte, error) {
	return appendRequest(b, seq, t, zone, ctMsgGet, ctaTupleReply, nlmRequest)
}

func appendRequest(b []byte, seq uint32, t Tuple, zone, msgType, tupleAttr, flags uint16) ([]byte, error) {
	src, dst := t.Src.Addr().Unmap(), t.Dst.Addr().Unmap()
	if !src.IsValid() || !dst.IsValid() || src.Is4() != dst.Is4() {
		return b, fmt.Errorf("tuple %s -> %s: addresses of one family needed", t.Src, t.Dst)
	}
	fam, srcType, dstType, alen := byte(afInet), uint16(ctaIPv4Src), uint16(ctaIPv4Dst), 4
	if src.Is6() {
		fam, srcType, dstType, alen = afInet6, ctaIPv6Src, ctaIPv6Dst, 16
	}
	ipLen := 4 + 2*(4+alen)
	protoLen := 4 + 8 + 8 + 8 // header, num (u8 padded), two ports (be16 padded)
	tupleLen := 4 + ipLen + protoLen
	msgLen := 16 + 4 + tupleLen
	if zone != 0 {
		msgLen += 8 // CTA_ZONE: header, be16, padding
	}
	b = binary.NativeEndian.AppendUint32(b, uint32(msgLen))
	b = binary.NativeEndian.AppendUint16(b, nfnlSubsysCTNetlink<<8|msgType)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 0) // port id: the kernel fills it in
	b = append(b, fam, 0, 0, 0)                // nfgenmsg: family, version 0, res_id 0
	attr := func(typ uint16, length int) {
		b = binary.NativeEndian.AppendUint16(b, uint16(length))
		b = binary.NativeEndian.AppendUint16(b, typ)
	}
	if zone != 0 {
		attr(ctaZone, 6)
		b = binary.BigEndian.AppendUint16(b, zone)
		b = append(b, 0, 0)
	}
	attr(tupleAttr|nlaNested, tupleLen)
	attr(ctaTupleIP|nlaNested, ipLen)
	attr(srcType, 4+alen)
	b = append(b, src.AsSlice()...)
	attr(dstType, 4+alen)
	b = append(b, dst.AsSlice()...)
	attr(ctaTupleProto|nlaNested, protoLen)
	attr(ctaProtoNum, 5)
	b = append(b, t.Proto, 0, 0, 0)
	attr(ctaProtoSrcPort, 6)
	b = binary.BigEndian.AppendUint16(b, t.Src.Port())
	b = append(b, 0, 0)
	attr(ctaProtoDstPort, 6)
	b = binary.BigEndian.AppendUint16(b, t.Dst.Port())
	b = append(b, 0, 0)
	return b, nil
}

// parseFlow decodes the payload of an IPCTNL_MSG_CT_NEW message. By hand,
// like the request: a decoder that allocates per nested attribute cost a
// fifth of a lookup.
func parseFlow(b []byte) (Flow, error) {
	var f Flow
	if len(b) < 4 {
		return f, errors.New("short ctnetlink message")
	}
	var seenOrig bool
	a := attrs{b: b[4:]}
	for a.next() {
		switch a.typ {
		case ctaTupleOrig:
			seenOrig = true
			f.Orig = parseTuple(a.val)
		case ctaTupleReply:
			f.Reply = parseTuple(a.val)
		case ctaStatus:
			if len(a.val) != 4 {
				return f, errors.New("malformed status")
			}
			f.Status = binary.BigEndian.Uint32(a.val)
		case ctaMark:
			if len(a.val) != 4 {
				return f, fmt.Errorf("mark of %d bytes", len(a.val))
			}
			f.Mark = binary.BigEndian.Uint32(a.val)
		}
	}
	if a.err {
		return f, errors.New("malformed ctnetlink attributes")
	}
	if !seenOrig || !f.Orig.Src.IsValid() || !f.Orig.Dst.IsValid() {
		return f, errors.New("entry without an original tuple")
	}
	return f, nil
}

// parseTuple decodes a CTA_TUPLE_* nest; what is missing or malformed
// stays zero (an invalid netip.AddrPort).
func parseTuple(b []byte) Tuple {
	var t Tuple
	var src, dst netip.Addr
	var sport, dport uint16
	a := attrs{b: b}
	for a.next() {
		switch a.typ {
		case ctaTupleIP:
			ip := attrs{b: a.val}
			for ip.next() {
				switch ip.typ {
				case ctaIPv4Src, ctaIPv6Src:
					src, _ = netip.AddrFromSlice(ip.val)
				case ctaIPv4Dst, ctaIPv6Dst:
					dst, _ = netip.AddrFromSlice(ip.val)
				}
			}
		case ctaTupleProto:
			p := attrs{b: a.val}
			for p.next() {
				switch {
				case p.typ == ctaProtoNum && len(p.val) == 1:
					t.Proto = p.val[0]
				case p.typ == ctaProtoSrcPort && len(p.val) == 2:
					sport = binary.BigEndian.Uint16(p.val)
				case p.typ == ctaProtoDstPort && len(p.val) == 2:
					dport = binary.BigEndian.Uint16(p.val)
				}
			}
		}
	}
	if src.IsValid() && dst.IsValid() {
		t.Src, t.Dst = netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport)
	}
	return t
}

// attrs walks a run of netlink attributes (struct nlattr, 4-byte aligned).
type attrs struct {
	b   []byte
	typ uint16 // without the NLA_F_NESTED and NLA_F_NET_BYTEORDER flags
	val []byte
	err bool
}

func (a *attrs) next() bool {
	if len(a.b) < 4 {
		a.err = a.err || len(a.b) != 0
		return false
	}
	l := int(binary.NativeEndian.Uint16(a.b[0:2]))
	if l < 4 || l > len(a.b) {
		a.err = true
		return false
	}
	a.typ = binary.NativeEndian.Uint16(a.b[2:4]) & nlaTypeMask
	a.val = a.b[4:l]
	a.b = a.b[min(len(a.b), (l+3)&^3):]
	return true
}
