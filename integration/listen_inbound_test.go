//go:build linux

package integration

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func init() { childModes["udp-inbound"] = childUDPInbound }

// childUDPInbound: "peer NETWORK ADDR" binds a UDP socket to ADDR (port 0:
// the kernel's pick, steered by IP_LOCAL_PORT_RANGE to peerPort) and waits
// for a peer's datagram (the test sends them); "ask NETWORK ADDR" binds to
// port 0 and sends to ADDR, a UDP echo service, as a client does. Either way
// okConnected when a datagram arrives within 2 s, timedOut when none does.
func childUDPInbound(arg string) int {
	var mode, network, addr string
	fmt.Sscan(arg, &mode, &network, &addr) //nolint:errcheck
	local := addr
	if mode == "ask" {
		local = ":0"
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_LOCAL_PORT_RANGE, peerPort|peerPort<<16)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	c, err := lc.ListenPacket(context.Background(), network, local)
	if err != nil {
		return classify(err)
	}
	defer c.Close()
	if p := c.LocalAddr().(*net.UDPAddr).Port; mode == "peer" && p != peerPort && p != 5353 {
		return otherError // not where the peer sends: the test would prove nothing
	}
	if mode == "ask" {
		to, err := net.ResolveUDPAddr(network, addr)
		if err != nil {
			return classify(err)
		}
		if _, err := c.WriteTo([]byte("ask"), to); err != nil {
			return classify(err)
		}
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second)) //nolint:errcheck
	_, _, err = c.ReadFrom(make([]byte, 64))
	return classify(err)
}

// peerPort is the port a bind to port 0 gets in childUDPInbound.
const peerPort = 40999 // in the default ip_local_port_range, which bounds IP_LOCAL_PORT_RANGE

// peer sends, as root in the namespace, a datagram to the loopback
// addresses at peerPort and 5353 every 50 ms until the test ends: a peer
// outside that opens the flow.
func (w *world) peer() {
	w.t.Helper()
	var socks []net.PacketConn
	w.must(w.ns.Do(func() error {
		for _, n := range []string{"udp4", "udp6"} {
			c, err := net.ListenPacket(n, ":0")
			if err != nil {
				return err
			}
			socks = append(socks, c)
		}
		return nil
	}))
	stop := make(chan struct{})
	w.t.Cleanup(func() {
		close(stop)
		for _, c := range socks {
			c.Close()
		}
	})
	go func() {
		for {
			for _, port := range []int{peerPort, 5353} {
				socks[0].WriteTo([]byte("door"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}) //nolint:errcheck
				socks[1].WriteTo([]byte("door"), &net.UDPAddr{IP: net.IPv6loopback, Port: port})       //nolint:errcheck
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
}

// udpInbound runs childUDPInbound as uid in the rig's cgroup.
func (w *world) udpInbound(r *listenRig, uid int, arg string) int {
	w.t.Helper()
	cmd := exec.Command(clientBin)
	cmd.Env = []string{"EGRESSD_TEST_CLIENT=udp-inbound", "EGRESSD_TEST_ADDR=" + arg}
	done := inCgroup(w.t, cmd, r.cg)
	defer done()
	code, err := w.tw.RunAs(uid, cmd)
	w.must(err)
	return code
}

// The second stage pushed in: a service restricted by listen: takes a UDP
// port the kernel picks and waits for a peer's datagram there. The daemon's
// ruleset tags the datagrams of flows the peer opened (the inbound chain);
// the ingress program drops them on a port the service may not listen on.
// Its listed port still receives, and a client's reply on its ephemeral
// port (a flow it opened) arrives.
func TestListenInboundDatagrams(t *testing.T) {
	w := newWorld(t)
	r := newListenRig(t)
	w.standardConfig()
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nallow: [\"203.0.113.5:5353/udp\"]\nlisten: [udp:5353]\n", uidA))
	w.start(r.args()...)
	since := w.mark()
	w.peer()
	for _, c := range []struct {
		name string
		uid  int
		arg  string
		want int
	}{
		{"control: an unrestricted user's bind-0 UDP receives", uidNone, "peer udp4 127.0.0.1:0", okConnected},
		{"attack: bind-0 UDP, a peer's datagram", uidA, "peer udp4 127.0.0.1:0", timedOut},
		{"attack: bind-0 UDP over IPv6, a peer's datagram", uidA, "peer udp6 [::1]:0", timedOut},
		{"attack: bind-0 dual-stack UDP, an IPv4 peer's datagram", uidA, "peer udp6 [::]:0", timedOut},
		{"control: the listed port receives", uidA, "peer udp4 127.0.0.1:5353", okConnected},
		{"control: a client's reply on its ephemeral port", uidA, "ask udp4 203.0.113.5:5353", okConnected},
	} {
		if got := w.udpInbound(r, c.uid, c.arg); got != c.want {
			t.Errorf("%s (uid %d %s): %s, want %s", c.name, c.uid, c.arg, resultName[got], resultName[c.want])
		}
	}
	// A dropped datagram is reported like a refused bind: the local port.
	ev, err := w.waitEvent("bind_denied", since, 5*time.Second)
	if err != nil {
		t.Fatalf("no bind_denied event: %v\n%s", err, w.logText())
	}
	if ev["allowlist"] != "billing" || ev["proto"] != "udp" || ev["port"] != float64(peerPort) {
		t.Errorf("bind_denied %v", ev)
	}
	if _, out, err := w.tw.Run("nft", "list", "chain", "inet", "egressd", "inbound"); err != nil || !strings.Contains(string(out), "priority 2147483646") {
		t.Errorf("the inbound chain: %v\n%s", err, out)
	}
}
