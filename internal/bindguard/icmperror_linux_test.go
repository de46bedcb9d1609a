//go:build linux

package bindguard

import (
	"encoding/binary"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// icmpErrorChain is what the ruleset does against ICMP errors a restricted
// service could read (issue 28; ruleset.icmpErrorRules, whose real rules the
// integration tier runs: TestListenInboundICMPErrors): the opener's uid as
// the flow's conntrack mark (ruleset.restrictedRules, here for the protected
// uid only), and in the chain icmperr, where the inbound chain sends ICMP
// and ICMPv6, a drop of every ICMP error about a
// non-TCP flow a peer opened, or one a uid with listen: opened, and of every
// error conntrack relates to no flow or never saw (untracked) unless it
// quotes TCP (ICMPv6: every type below 128).
var icmpErrorChain = fmt.Sprintf(`table inet bindguardicmp {
	set listenmarks {
		type mark
		elements = { 0x%08x }
	}
	chain output {
		type filter hook output priority filter; policy accept;
		ct state new meta skuid %d ct mark set 0x%08x
	}
	chain icmperr {
		ct state related ct protocol != tcp ct direction original drop
		ct state related ct protocol != tcp ct mark @listenmarks drop
		icmp type { destination-unreachable, source-quench, redirect, time-exceeded, parameter-problem } ct state invalid,untracked @th,136,8 != 6 drop
		icmpv6 type < 128 ct state invalid,untracked @th,112,8 != 6 drop
	}
	chain inbound {
		type filter hook input priority 2147483646; policy accept;
		meta l4proto { icmp, icmpv6 } jump icmperr
	}
}
`, protected, protected, protected)

// dropICMPErrors loads icmpErrorChain into the test's namespace.
func (r *rig) dropICMPErrors() {
	r.t.Helper()
	r.nft(icmpErrorChain)
}

// nft loads script into the test's namespace.
func (r *rig) nft(script string) {
	r.t.Helper()
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := r.ns.Start(cmd); err != nil {
		r.t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		r.t.Fatalf("nft: %v: %s", err, out.String())
	}
}

// openFlow sends, as root in the namespace, a UDP datagram from
// 127.0.0.1:port to 127.0.0.2:4444 through a raw socket (the port is the
// helper's): conntrack then holds the flow that sendPortUnreachable quotes,
// opened by a uid that is not restricted (root), in the reply direction of
// the error, as when an unrestricted process sends from its socket. A
// socket of root's on 127.0.0.2:4444 takes the datagram (no port
// unreachable of the kernel's own).
func (r *rig) openFlow(port int) error {
	udp := make([]byte, 8+3)
	binary.BigEndian.PutUint16(udp[0:], uint16(port))
	binary.BigEndian.PutUint16(udp[2:], 4444)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], "ask") // checksum 0: none (IPv4)
	return r.ns.Do(func() error {
		sink, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDP)
		if err != nil {
			return err
		}
		defer unix.Close(sink)
		if err := unix.Bind(sink, &unix.SockaddrInet4{Port: 4444, Addr: [4]byte{127, 0, 0, 2}}); err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_UDP)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			return err
		}
		if err := unix.Sendto(fd, udp, 0, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 2}}); err != nil {
			return err
		}
		tv := unix.Timeval{Sec: 1}
		unix.SetsockoptTimeval(sink, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		_, _, err = unix.Recvfrom(sink, make([]byte, 16), 0)
		return err
	})
}

// Issue 28: the ICMP error layer (icmpErrorChain) for every kind of socket
// whose error queue a restricted uid could read: a socket whose
// IP_RECVERR/IPV6_RECVERR went on before the restriction (the setsockopt
// program keeps it on: TestRedteamRT28RecverrBeforeRestriction), then an
// ICMP error a peer sends. IPv4, an IPv6 socket on an IPv4-mapped address,
// IPv6 (ICMPv6), a ping socket (a forged error quoting an echo request it
// never sent), and an error quoting the socket's own flow to its resolver
// (related: the flow's mark is the restricted uid). Each failed without the
// layer (the payload arrived).
func TestICMPErrorLayerVariants(t *testing.T) {
	r := newRig(t)
	r.tagInbound()
	r.dropICMPErrors()
	if err := r.ns.Sysctl("net/ipv4/ping_group_range", "0 2147483647"); err != nil {
		t.Fatal(err)
	}
	r.server(5300)
	push := func(port int) error { return r.sendPortUnreachable(port, "door") }
	for _, c := range []struct {
		name, mode, op string
		push           func(int) error
	}{
		{"IP_RECVERR, a forged error", "errq", "udp4,127.0.0.1,0", push},
		{"IP_RECVERR on an IPv6 socket bound to an IPv4-mapped address, a forged error", "errq", "udp6,::ffff:127.0.0.1,0", push},
		{"IPV6_RECVERR, a forged ICMPv6 error", "errq6", "udp6,::1,0", func(port int) error { return r.sendPortUnreachable6(port, "door") }},
		{"IP_RECVERR on a ping socket, a forged error", "errq", "ping4,4242", func(id int) error { return r.sendEchoUnreachable(id, "door") }},
		{"IP_RECVERR, an error quoting its own flow to its resolver", "errq,ask", "udp4,127.0.0.1,0", func(port int) error {
			return r.sendQuoting(port, [4]byte{127, 0, 0, 1}, 5300, "door")
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r.apply(Policy{})
			got := r.rtuReceive(protected, c.mode, c.op, func(port int) error {
				r.apply(policy) // the socket is open, its option on
				return c.push(port)
			})
			if got != "none" {
				t.Errorf("%q", got)
			}
		})
	}
}

// tcpMTUHelper connects over TCP to 127.0.0.1:5301, prints "ok PORT", then
// prints "got MTU" for the first IP_MTU that differs from the one it
// started with, or "none (MTU)" after 3 s.
func tcpMTUHelper() int {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_TCP)
	if err == nil {
		err = unix.Connect(fd, &unix.SockaddrInet4{Port: 5301, Addr: [4]byte{127, 0, 0, 1}})
	}
	var sa unix.Sockaddr
	if err == nil {
		sa, err = unix.Getsockname(fd)
	}
	start, merr := unix.GetsockoptInt(fd, unix.SOL_IP, unix.IP_MTU)
	if err == nil {
		err = merr
	}
	if err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println("ok", sa.(*unix.SockaddrInet4).Port)
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if m, err := unix.GetsockoptInt(fd, unix.SOL_IP, unix.IP_MTU); err == nil && m != start {
			fmt.Println("got", m)
			return 0
		}
	}
	fmt.Printf("none (%d)\n", start)
	return 0
}

// Issue 28: TCP keeps its ICMP errors. A "fragmentation needed" quoting a
// restricted uid's TCP connection (its sequence number, which the kernel
// checks, read from the server's end with TCP_REPAIR) still lowers the
// path MTU with the ICMP error layer loaded: path MTU discovery works.
// The attack beside it: the same error quoting a forged datagram flow of
// the same uid is dropped (TestRedteamRT28PMTU).
func TestICMPErrorLayerTCPPMTU(t *testing.T) {
	r := newRig(t)
	r.tagInbound()
	r.dropICMPErrors()
	r.apply(policy)
	var lfd int
	if err := r.ns.Do(func() error {
		var err error
		if lfd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_TCP); err != nil {
			return err
		}
		if err := unix.Bind(lfd, &unix.SockaddrInet4{Port: 5301, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			return err
		}
		return unix.Listen(lfd, 1)
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(lfd)
	const mtu = 1234
	got := r.rtuNS(protected, "tcpmtu", func(port int) error {
		cfd, _, err := unix.Accept(lfd)
		if err != nil {
			return err
		}
		defer unix.Close(cfd)
		if err := unix.SetsockoptInt(cfd, unix.SOL_TCP, unix.TCP_REPAIR, 1); err != nil {
			return fmt.Errorf("TCP_REPAIR: %w", err)
		}
		// TCP_RECV_QUEUE (1): TCP_QUEUE_SEQ is then rcv_nxt, the client's snd_una.
		if err := unix.SetsockoptInt(cfd, unix.SOL_TCP, unix.TCP_REPAIR_QUEUE, 1); err != nil {
			return err
		}
		seq, err := unix.GetsockoptInt(cfd, unix.SOL_TCP, unix.TCP_QUEUE_SEQ)
		if err != nil {
			return err
		}
		inner := make([]byte, 28)
		inner[0] = 0x45
		binary.BigEndian.PutUint16(inner[2:], 40)
		inner[8], inner[9] = 64, unix.IPPROTO_TCP
		copy(inner[12:], []byte{127, 0, 0, 1})
		copy(inner[16:], []byte{127, 0, 0, 1})
		binary.BigEndian.PutUint16(inner[10:], csum(inner[:20]))
		binary.BigEndian.PutUint16(inner[20:], uint16(port))
		binary.BigEndian.PutUint16(inner[22:], 5301)
		binary.BigEndian.PutUint32(inner[24:], uint32(seq))
		msg := append([]byte{3, 4, 0, 0, 0, 0, mtu >> 8, mtu & 0xff}, inner...)
		binary.BigEndian.PutUint16(msg[2:], csum(msg))
		return r.sendICMP4(msg)
	})
	if got != fmt.Sprintf("got %d", mtu) {
		t.Errorf("a restricted uid's TCP connection: %q, want its path MTU lowered to %d", got, mtu)
	}
}
