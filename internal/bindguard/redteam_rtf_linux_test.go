//go:build linux

package bindguard

import (
	"fmt"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rtfErrorCase is a forged ICMP (ICMPv6) error a peer sends to a restricted
// uid's UDP socket, whose IP_RECVERR (IPV6_RECVERR) went on before the
// restriction (TestICMPErrorLayerVariants): the error queue would hand it
// the quoted payload.
type rtfErrorCase struct {
	name string
	v6   bool
	hdr  [8]byte
}

// receive runs the case once as the restricted uid and returns the
// helper's answer ("got door" when the error reached the error queue).
func (c rtfErrorCase) receive(r *rig) string {
	r.t.Helper()
	mode, op := "errq", "udp4,127.0.0.1,0"
	if c.v6 {
		mode, op = "errq6", "udp6,::1,0"
	}
	r.apply(Policy{})
	return r.rtuReceive(protected, mode, op, func(port int) error {
		r.apply(policy) // the socket is open, its option on
		if c.v6 {
			return r.sendError6(c.hdr, port, "door")
		}
		return r.sendError(c.hdr, port, [4]byte{127, 0, 0, 2}, 4444, "door")
	})
}

// Red team of issue 28's ICMP error layer (RTF): forged errors (conntrack
// relates them to no flow: ct state invalid) of types and codes the layer
// might not list. The kernel hands an ICMPv6 message of any type below 128
// to the quoted socket's error handler (icmpv6_rcv: "error of unknown type
// must pass to upper level", icmpv6_notify), and conntrack treats them all
// as errors; the layer listed only the four defined ones, so types 0 and
// 5-127 reached the error queue (HOLE before the fix: "got door"). IPv4:
// the kernel queues types 3, 11 and 12 only, whatever the code (odd codes,
// RFC 4884 length), all listed (source quench is discarded, RFC 6633; a
// redirect updates the route, udp_err queues nothing; a time exceeded in
// reassembly is dropped by icmp_unreach: none reached the
// error queue even without the layer). Each case first runs without the
// layer: the kernel must deliver it (the attack is real).
func TestRedteamRTFICMPErrorTypes(t *testing.T) {
	r := newRig(t)
	r.tagInbound()
	cases := []rtfErrorCase{
		{"ICMPv6 type 0 (reserved error)", true, [8]byte{0, 0}},
		{"ICMPv6 type 5 (unassigned error)", true, [8]byte{5, 0}},
		{"ICMPv6 type 127 (reserved for expansion)", true, [8]byte{127, 0}},
		{"ICMPv6 packet too big to a UDP socket", true, [8]byte{2, 0, 4: 0, 0, 0x05, 0x00}},
		{"ICMPv6 parameter problem, code 3 (first fragment lacks headers)", true, [8]byte{4, 3}},
		{"ICMPv6 destination unreachable, code 7 (source routing header)", true, [8]byte{1, 7}},
		{"ICMP destination unreachable, code 15 (precedence cutoff)", false, [8]byte{3, 15}},
		{"ICMP destination unreachable with an RFC 4884 length", false, [8]byte{3, 3, 5: 7}},
		{"ICMP time exceeded (TTL)", false, [8]byte{11, 0}},
		{"ICMP parameter problem, code 2 (bad length)", false, [8]byte{12, 2}},
	}
	for _, c := range cases {
		if got := c.receive(r); got != "got door" {
			t.Fatalf("%s, without the layer: %q, want the payload (else the case proves nothing)", c.name, got)
		}
	}
	r.dropICMPErrors()
	for _, c := range cases {
		if got := c.receive(r); got != "none" {
			t.Errorf("HOLE: %s reached the restricted uid's error queue: %q", c.name, got)
		}
	}
}

// Red team of issue 28's ICMP error layer (RTF): an administrator's notrack
// rule (a table of another tool: DNS servers often skip conntrack) leaves an
// ICMP error untracked: neither related nor invalid, so every rule of the
// layer missed it (HOLE before the fix: "got door"). The layer treats an
// untracked error as one about no flow: dropped unless it quotes TCP.
// Control: the same error without the notrack table is dropped too, and an
// error quoting TCP passes (TestICMPErrorLayerTCPPMTU).
func TestRedteamRTFUntracked(t *testing.T) {
	r := newRig(t)
	r.tagInbound()
	r.dropICMPErrors()
	c := rtfErrorCase{"ICMP port unreachable", false, [8]byte{3, 3}}
	c6 := rtfErrorCase{"ICMPv6 port unreachable", true, [8]byte{1, 4}}
	for _, c := range []rtfErrorCase{c, c6} {
		if got := c.receive(r); got != "none" {
			t.Fatalf("control, tracked: %s: %q", c.name, got)
		}
	}
	r.nft(notrackTable("icmp, icmpv6"))
	for _, c := range []rtfErrorCase{c, c6} {
		if got := c.receive(r); got != "none" {
			t.Errorf("HOLE: %s, untracked (notrack in another table), reached the restricted uid's error queue: %q", c.name, got)
		}
	}
}

// Red team of issue 28's ICMP error layer (RTF): the layer lets errors
// about no flow through when they quote TCP (path MTU discovery), so a
// peer forges a quote that claims TCP, or UDP-Lite, SCTP, DCCP, GRE or
// ESP, with the restricted UDP socket's own ports. The kernel hands an
// error to the quoted protocol's handler (icmp_socket_deliver by the
// inner header's protocol), never to a UDP socket: none reached its error
// queue. Control: the same quote claiming UDP is delivered without the
// layer (the ports and addresses are right).
func TestRedteamRTFQuotedProtocol(t *testing.T) {
	r := newRig(t)
	r.tagInbound()
	recv := func(proto byte) string {
		r.apply(Policy{})
		return r.rtuReceive(protected, "errq", "udp4,127.0.0.1,0", func(port int) error {
			r.apply(policy)
			return r.sendErrorProto([8]byte{3, 3}, proto, port, [4]byte{127, 0, 0, 2}, 4444, "door")
		})
	}
	if got := recv(unix.IPPROTO_UDP); got != "got door" {
		t.Fatalf("control, a quote claiming UDP without the layer: %q", got)
	}
	r.dropICMPErrors()
	for _, p := range []struct {
		name  string
		proto byte
	}{{"TCP", unix.IPPROTO_TCP}, {"UDP-Lite", unix.IPPROTO_UDPLITE}, {"SCTP", unix.IPPROTO_SCTP}, {"DCCP", unix.IPPROTO_DCCP}, {"GRE", unix.IPPROTO_GRE}, {"ESP", unix.IPPROTO_ESP}} {
		if got := recv(p.proto); got != "none" {
			t.Errorf("HOLE: a quote claiming %s with the UDP socket's ports reached its error queue: %q", p.name, got)
		}
	}
}

// Red team of issue 28's ICMP error layer (RTF): the forged error in
// fragments (the namespace's loopback MTU lowered to 1280, a quote of 3000
// bytes): netfilter reassembles before conntrack and the chain (nf_defrag),
// so the layer reads the whole error and drops it. Control: without the
// layer the fragmented error is delivered (the attack is real), and IPv4
// reassembled it. Not tried: a first fragment cut before the inner header
// by hand (IP_HDRINCL); nf_defrag reassembles whatever the cut.
func TestRedteamRTFFragmentedError(t *testing.T) {
	r := newRig(t)
	r.tagInbound()
	ip(t, r.ns, "link", "set", "lo", "mtu", "1280")
	big := "door" + strings.Repeat("x", 3000)
	recv := func(v6 bool) string {
		mode, op := "errq", "udp4,127.0.0.1,0"
		if v6 {
			mode, op = "errq6", "udp6,::1,0"
		}
		r.apply(Policy{})
		return r.rtuReceive(protected, mode, op, func(port int) error {
			r.apply(policy)
			if v6 {
				return r.sendError6([8]byte{1, 4}, port, big)
			}
			return r.sendError([8]byte{3, 3}, port, [4]byte{127, 0, 0, 2}, 4444, big)
		})
	}
	for _, v6 := range []bool{false, true} {
		if got := recv(v6); !strings.HasPrefix(got, "got door") {
			t.Fatalf("control, without the layer (IPv6 %v): %.20q", v6, got)
		}
	}
	if v := r.reasmOKs(); v < 1 {
		t.Fatalf("control: IPv4 ReasmOKs %d: the error was not fragmented", v)
	}
	r.dropICMPErrors()
	for _, v6 := range []bool{false, true} {
		if got := recv(v6); got != "none" {
			t.Errorf("HOLE: a fragmented forged error (IPv6 %v) reached the error queue: %.20q", v6, got)
		}
	}
}

// notrackTable is another tool's table that exempts protos from conntrack
// in the namespace (on loopback conntrack runs at output, so there too).
func notrackTable(protos string) string {
	return fmt.Sprintf(`table inet othertool {
	chain pre {
		type filter hook prerouting priority raw; policy accept;
		meta l4proto { %s } notrack
	}
	chain out {
		type filter hook output priority raw; policy accept;
		meta l4proto { %s } notrack
	}
}
`, protos, protos)
}

// Red team of issue 28, seen while attacking the ICMP error layer (RTF),
// outside it: the inbound chain tags a datagram of a flow the peer opened
// by ct direction original, which has no value for an untracked packet
// (another table's notrack for UDP, as DNS servers often have): the
// datagram goes untagged and the ingress program lets it reach a
// restricted uid's unlisted bind-0 port. Left open: tagging untracked
// datagrams as the peer's would also drop the replies a restricted client
// gets on such a host (nothing tells them apart without conntrack); the
// limit is in docs/security.md. This test asserts the hole; it fails once
// it is closed. Control: tracked, the same datagram is dropped.
func TestRedteamRTFUntrackedDatagram(t *testing.T) {
	r := newRig(t)
	r.tagInbound()
	r.apply(policy)
	if got := r.receive(protected, "udp4", "udp4,127.0.0.1,0"); !strings.HasPrefix(got, "none") {
		t.Fatalf("control, tracked: the peer's datagram reached the restricted uid: %q", got)
	}
	r.nft(notrackTable("udp"))
	got := r.receive(protected, "udp4", "udp4,127.0.0.1,0")
	if got != "got door" {
		t.Fatalf("the untracked datagram did not reach the restricted uid (%q): the hole is closed, update this test and docs/security.md", got)
	}
	t.Log("HOLE: with another table's notrack for UDP, a peer's datagram reaches a restricted uid's unlisted bind-0 port (untagged: ct direction has no value)")
}

// marksHelper is the helper's "marks": a UDP socket tries to set its
// packets' mark (SO_MARK) and a netlink socket to update a conntrack entry
// (ctnetlink: IPCTNL_MSG_CT_NEW, the way to rewrite a flow's ct mark);
// prints each errno name, "ok" when it was allowed.
func marksHelper() int {
	name := func(err error) string {
		if err == nil {
			return "ok"
		}
		if errno, ok := err.(unix.Errno); ok {
			return unix.ErrnoName(errno)
		}
		return err.Error()
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDP)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	somark := name(unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, 0))
	nl, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_NETFILTER)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	// An empty IPCTNL_MSG_CT_NEW with ack: the capability check comes first.
	msg := make([]byte, unix.NLMSG_HDRLEN+4)
	*(*uint32)(unsafe.Pointer(&msg[0])) = uint32(len(msg))
	*(*uint16)(unsafe.Pointer(&msg[4])) = unix.NFNL_SUBSYS_CTNETLINK<<8 | 0 // IPCTNL_MSG_CT_NEW
	*(*uint16)(unsafe.Pointer(&msg[6])) = unix.NLM_F_REQUEST | unix.NLM_F_ACK
	msg[unix.NLMSG_HDRLEN] = unix.AF_INET
	ct := "no answer"
	if err := unix.Sendto(nl, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		ct = name(err)
	} else {
		buf := make([]byte, 256)
		if n, _, err := unix.Recvfrom(nl, buf, 0); err != nil {
			ct = name(err)
		} else if n >= unix.NLMSG_HDRLEN+4 && *(*uint16)(unsafe.Pointer(&buf[4])) == unix.NLMSG_ERROR {
			ct = name(unix.Errno(-*(*int32)(unsafe.Pointer(&buf[unix.NLMSG_HDRLEN]))))
			if ct == "" {
				ct = "ok"
			}
		}
	}
	fmt.Println(somark, ct)
	return 0
}

// Red team of issue 28's ICMP error layer (RTF): the layer tells a
// restricted uid's flow by its conntrack mark, which the restricted chain
// writes once, from the opener's uid (ct mark set meta skuid map
// @uidmarks). Could the restricted process rewrite it, to take its flow
// out of @listenmarks? Only through a packet mark rule of another table
// (SO_MARK needs CAP_NET_ADMIN or CAP_NET_RAW) or ctnetlink (CAP_NET_ADMIN):
// both refused. The unit's key is in the ct label, written the same way.
// Control: root in the namespace may do both (the probes are right).
func TestRedteamRTFCtMark(t *testing.T) {
	r := newRig(t)
	r.apply(policy)
	if got := r.run(protected, "marks"); got != "EPERM EPERM" {
		t.Errorf("HOLE: the restricted uid set a mark or updated conntrack: %q, want EPERM EPERM", got)
	}
	if got := r.run(0, "marks"); !strings.HasPrefix(got, "ok ") || strings.HasSuffix(got, "EPERM") {
		t.Errorf("control, root: %q (the probes prove nothing)", got)
	} else {
		t.Logf("root: %s", got)
	}
}
