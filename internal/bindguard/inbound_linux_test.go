//go:build linux

package bindguard

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/netns"
	"golang.org/x/sys/unix"
)

// inboundChain is what the ruleset's inbound chain does (ruleset.inboundRules;
// the integration tier runs the real one): it tags the datagrams of flows the
// peer opened and unsolicited echo replies.
var inboundChain = fmt.Sprintf(`table inet bindguardtest {
	chain inbound {
		type filter hook input priority 2147483646; policy accept;
		meta priority set meta priority & 0x%x
		meta l4proto { udp, udplite } ct direction original meta priority set meta priority | 0x%x
		icmp type echo-reply ct state invalid meta priority set meta priority | 0x%x
		icmpv6 type echo-reply ct state invalid meta priority set meta priority | 0x%x
	}
}
`, ^uint32(InboundTag), InboundTag, InboundTag, InboundTag)

// tagInbound loads inboundChain into the test's namespace.
func (r *rig) tagInbound() {
	r.t.Helper()
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(inboundChain)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := r.ns.Start(cmd); err != nil {
		r.t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		r.t.Fatalf("nft: %v: %s", err, out.String())
	}
}

// recvHelper is the helper's recv=ASK;OP: bind as OP says, print "ok PORT",
// send "ask" to 127.0.0.1:ASK first unless ASK is 0 (a client's request),
// then print "got PAYLOAD" for the first datagram within 3 s or "none".
func recvHelper(ask string, op string) int {
	res, err := bindOp(op)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println("ok", res.port)
	if p, _ := strconv.Atoi(ask); p != 0 {
		if err := unix.Sendto(res.fd, []byte("ask"), 0, &unix.SockaddrInet4{Port: p, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			fmt.Println("sendto:", err)
			return 1
		}
	}
	tv := unix.Timeval{Sec: 3}
	unix.SetsockoptTimeval(res.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	buf := make([]byte, 256)
	n, _, err := unix.Recvfrom(res.fd, buf, 0)
	if err != nil {
		fmt.Println("none:", err)
		return 0
	}
	fmt.Println("got", string(buf[:n]))
	return 0
}

// sendDatagram sends payload as root in the namespace from a fresh socket of
// network (udp4, udp6, udplite4) to the loopback address at port: a peer
// that opens the flow.
func (r *rig) sendDatagram(network string, port int, payload string) error {
	return r.ns.Do(func() error {
		family, proto := unix.AF_INET, unix.IPPROTO_UDP
		var sa unix.Sockaddr = &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}
		if strings.HasSuffix(network, "6") {
			family = unix.AF_INET6
			sa = &unix.SockaddrInet6{Port: port, Addr: [16]byte{15: 1}}
		}
		if strings.HasPrefix(network, "udplite") {
			proto = unix.IPPROTO_UDPLITE
		}
		fd, err := unix.Socket(family, unix.SOCK_DGRAM, proto)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, []byte(payload), 0, sa)
	})
}

// receive starts the helper's recv as uid with op, has the peer send "door"
// to the port it reports over network, and returns what the helper got.
func (r *rig) receive(uid int, network, op string) string {
	r.t.Helper()
	cmd, out := r.start(uid, "recv=0;"+op)
	first, _ := out.ReadString('\n')
	port, ok := strings.CutPrefix(strings.TrimSpace(first), "ok ")
	if !ok {
		cmd.Wait()
		r.t.Fatalf("receiver: %q", first)
	}
	p, _ := strconv.Atoi(port)
	if err := r.sendDatagram(network, p, "door"); err != nil {
		r.t.Fatal(err)
	}
	second, _ := out.ReadString('\n')
	cmd.Wait()
	return strings.TrimSpace(second)
}

// server answers, as root in the namespace, every datagram to 127.0.0.1:port
// with "reply" (a resolver); it stops with the test.
func (r *rig) server(port int) {
	r.t.Helper()
	replyServer(r.t, r.ns, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
}

// replyServer answers, as root in ns, every datagram to sa with "reply"; it
// stops with the test.
func replyServer(t testing.TB, ns *netns.NS, sa *unix.SockaddrInet4) {
	t.Helper()
	var fd int
	err := ns.Do(func() error {
		var err error
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDP); err != nil {
			return err
		}
		return unix.Bind(fd, sa)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Shutdown(fd, unix.SHUT_RDWR); unix.Close(fd) })
	go func() {
		buf := make([]byte, 256)
		for {
			_, from, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				return
			}
			unix.Sendto(fd, []byte("reply"), 0, from)
		}
	}()
}

// The second stage pushed in: a restricted service takes a UDP port the
// kernel picks (bind to port 0) and waits for a peer's datagram there. The
// ruleset tags the datagrams of flows the peer opened; the ingress program
// drops them for a port the service may not listen on. Replies to what the
// service sent are untagged: an unconnected client (a stub resolver, QUIC)
// still gets them on its ephemeral port.
func TestInboundDatagrams(t *testing.T) {
	r := newRig(t)
	r.tagInbound()
	unitPath, id := r.mkCgroup(r.cg, "svc.service")
	if err := r.guard.ApplyCgroups(Cgroups{id: unitPorts}); err != nil {
		t.Fatal(err)
	}
	r.apply(policy)
	unit := r.in(unitPath)
	r.server(5300)
	for _, c := range []struct {
		name string
		r    *rig
		uid  int
	}{{"user", r, protected}, {"unit", unit, other}} {
		for _, a := range []struct{ name, network, op string }{
			{"bind-0 UDP", "udp4", "udp4,127.0.0.1,0"},
			{"bind-0 UDP over IPv6", "udp6", "udp6,::1,0"},
			{"bind-0 UDP over IPv4-mapped IPv6", "udp4", "udp6,::,0"},
			{"bind-0 UDP-Lite", "udplite4", "udplite4,127.0.0.1,0"},
			{"ephemeral range steered to an unlisted port", "udp4", "udp4,127.0.0.1,0,range=9999-9999"},
		} {
			t.Run(c.name+"/attack: "+a.name, func(t *testing.T) {
				if got := c.r.receive(c.uid, a.network, a.op); strings.HasPrefix(got, "got") {
					t.Fatalf("the peer's datagram reached the service: %q", got)
				}
			})
		}
		t.Run(c.name+"/control: listed UDP port receives", func(t *testing.T) {
			if got := c.r.receive(c.uid, "udp4", "udp4,127.0.0.1,5353"); got != "got door" {
				t.Fatalf("listed port: %q", got)
			}
		})
		t.Run(c.name+"/control: a client's reply on its ephemeral port", func(t *testing.T) {
			cmd, out := c.r.start(c.uid, "recv=5300;udp4,127.0.0.1,0")
			first, _ := out.ReadString('\n')
			second, _ := out.ReadString('\n')
			cmd.Wait()
			if !strings.HasPrefix(first, "ok ") || strings.TrimSpace(second) != "got reply" {
				t.Fatalf("resolver's reply: %q, %q", first, second)
			}
		})
	}
	t.Run("control: another user's bind-0 UDP receives", func(t *testing.T) {
		if got := r.receive(other, "udp4", "udp4,127.0.0.1,0"); got != "got door" {
			t.Fatalf("unrestricted socket: %q", got)
		}
	})
}
