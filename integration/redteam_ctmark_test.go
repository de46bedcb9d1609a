//go:build linux

package integration

// Red team of the owner check in the conntrack mark (issue 23, part 1):
// attacks on the established/related rules, performed by an unprivileged
// process of the protected user, verdict on the receiving side.

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"
)

func init() {
	childModes["freebind-reply"] = childFreebindReply
}

// childFreebindReply binds ATTACK_FROM with IP_FREEBIND (an address that is
// not the host's) and sends one datagram to ATTACK_TO.
func childFreebindReply(string) int {
	from := netip.MustParseAddrPort(os.Getenv("ATTACK_FROM"))
	to := netip.MustParseAddrPort(os.Getenv("ATTACK_TO"))
	bind, send := freebindSend(from, to, "exfil-"+os.Getenv("ATTACK_NONCE"))
	report(map[string]any{"bind": bind, "send": send})
	return 0
}

// A host that forwards (a router, a container host publishing a port with
// DNAT): a peer outside opens a UDP flow through it to another address.
// The reply direction of that flow starts at an address that is not the
// host's. A protected user binds that address with IP_FREEBIND (no
// privilege needed) and sends "the reply" to the peer: the packet is
// established, in the reply direction of a flow the user did not open, so
// the owner check would accept it; but its source is not local (SPEC:
// never with a non-local source address) and the peer is not in the
// allowlist. It must not leave. Control: the user answering a flow the peer
// opened to the user's own socket still works.
func TestRedteamCtMarkForwardedReply(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	const (
		remote4, target4 = "203.0.113.66", "203.0.113.88"
		remote6, target6 = "2001:db8:66::1", "2001:db8:88::1"
	)
	p := w.addPeer(remote4, target4, remote6, target6)
	w.must(w.ns.Sysctl("net/ipv4/ip_forward", "1"))
	w.must(w.ns.Sysctl("net/ipv6/conf/all/forwarding", "1"))
	// Another tool's port forward on the world: wire:7777 → target:7777 (on the peer).
	nftIn(t, w.ns, fmt.Sprintf(`table inet portfwd {
  chain pre { type nat hook prerouting priority dstnat;
    ip daddr %s udp dport 7777 dnat ip to %s
    ip6 daddr %s udp dport 7777 dnat ip6 to %s
  }
}
`, worldWire4, target4, worldWire6, target6))
	w.start()

	for _, tc := range []struct {
		family                 string
		remote, target, public string
		served                 string
	}{
		{"IPv4", net.JoinHostPort(remote4, "4444"), net.JoinHostPort(target4, "7777"), net.JoinHostPort(worldWire4, "7777"), net.JoinHostPort(worldWire4, "7778")},
		{"IPv6", net.JoinHostPort(remote6, "4444"), net.JoinHostPort(target6, "7777"), net.JoinHostPort(worldWire6, "7777"), net.JoinHostPort(worldWire6, "7778")},
	} {
		sink := w.record(p, tc.remote, false)
		fwd := w.record(p, tc.target, false)
		// The peer opens the flow through the port forward (from the sink's socket).
		open := fmt.Sprintf("open-%d", time.Now().UnixNano())
		dst := netip.MustParseAddrPort(tc.public)
		if _, err := sink.pc.WriteTo([]byte(open), net.UDPAddrFromAddrPort(dst)); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for !fwd.seen(open) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the peer's datagram to %s was not forwarded to %s: the test world is broken", tc.family, tc.public, tc.target)
			}
			time.Sleep(5 * time.Millisecond)
		}

		nonce := strconv.FormatInt(time.Now().UnixNano(), 36)
		_, res := w.runChild(uidA, "freebind-reply", "", "ATTACK_FROM="+tc.target, "ATTACK_TO="+tc.remote, "ATTACK_NONCE="+nonce)
		w.barrier(w.ns, sink, tc.remote)
		t.Logf("%s: the kernel let the user bind %s: %v; send to %s: %v", tc.family, tc.target, res["bind"], tc.remote, res["send"])
		if sink.seen("exfil-" + nonce) {
			t.Errorf("%s: a protected user's datagram with the forged source %s reached the unlisted peer %s on the reply direction of a forwarded flow", tc.family, tc.target, tc.remote)
		}

		// Control: the user serves on its own address; the peer opens a
		// flow to it and gets the answer.
		c := w.startChild(uidA, "serve", tc.served)
		c.next(t, 15*time.Second)
		if err := pingPong(p, -1, "udp", tc.served); err != nil {
			t.Errorf("%s: control: the peer's exchange with the protected user's own socket %s: %v", tc.family, tc.served, err)
		}
		c.wait(t)
	}
}
