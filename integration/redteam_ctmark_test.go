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
// host's. A protected user (or a process of a restricted unit) binds that
// address with IPV6_FREEBIND (no privilege needed) and sends "the reply" to
// the peer: the packet is established, in the reply direction of a flow it
// did not open, so the owner check accepted it; but its source is not local
// (SPEC: never with a non-local source address) and the peer is not in the
// allowlist. It must not leave. Control: the peer's exchange with the
// user's own socket. IPv4: the kernel refuses the send itself (ENETUNREACH).
func TestRedteamCtMarkForwardedReply(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	cg := newUnitCgroups(t)
	unit := fmt.Sprintf("egressdtest%d-fwd.service", os.Getpid())
	w.write("allow.d/fwd.yaml", "unit: "+unit+"\nallow:\n  - 192.0.2.12:443\ndns: none\n")
	unitDir := cg.make(unit)
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

	port := 4440
	for _, who := range []struct {
		name string
		uid  int
		dir  string // a restricted unit's cgroup, or "" (the user's allowlist)
	}{{"user billing", uidA, ""}, {"unit " + unit, uidNone, unitDir}} {
		for _, tc := range []struct {
			family, remote, target, public string
		}{
			{"IPv4", remote4, target4, worldWire4},
			{"IPv6", remote6, target6, worldWire6},
		} {
			port++
			remote := net.JoinHostPort(tc.remote, strconv.Itoa(port))
			target := net.JoinHostPort(tc.target, "7777")
			sink := w.record(p, remote, false)
			fwd := w.record(p, target, false)
			// The peer opens the flow through the port forward (from the sink's socket).
			open := fmt.Sprintf("open-%d", time.Now().UnixNano())
			if _, err := sink.pc.WriteTo([]byte(open), net.UDPAddrFromAddrPort(netip.MustParseAddrPort(net.JoinHostPort(tc.public, "7777")))); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for !fwd.seen(open) {
				if time.Now().After(deadline) {
					t.Fatalf("%s: the peer's datagram to %s was not forwarded to %s: the test world is broken", tc.family, tc.public, target)
				}
				time.Sleep(5 * time.Millisecond)
			}
			fwd.pc.Close()

			nonce := strconv.FormatInt(time.Now().UnixNano(), 36)
			res := w.runChildIn(who.dir, who.uid, "freebind-reply", "ATTACK_FROM="+target, "ATTACK_TO="+remote, "ATTACK_NONCE="+nonce)
			w.barrier(w.ns, sink, remote)
			t.Logf("%s, %s: the kernel let it bind %s: %v; send to %s: %v", who.name, tc.family, target, res["bind"], remote, res["send"])
			if sink.seen("exfil-" + nonce) {
				t.Errorf("%s, %s: a datagram with the forged source %s reached the unlisted peer %s on the reply direction of a forwarded flow", who.name, tc.family, target, remote)
			}
		}
		// Control: the peer's exchange with the user's own socket.
		for _, served := range []string{net.JoinHostPort(worldWire4, "7778"), net.JoinHostPort(worldWire6, "7778")} {
			c := w.startChildIn(who.dir, who.uid, "serve", served)
			c.next(t, 15*time.Second)
			if err := pingPong(p, -1, "udp", served); err != nil {
				t.Errorf("%s: control: the peer's exchange with its own socket %s: %v", who.name, served, err)
			}
			c.wait(t)
		}
	}
}

// startChildIn is startChild inside the cgroup dir ("" : where the test runs).
func (w *world) startChildIn(dir string, uid int, mode, addr string, env ...string) *child {
	if dir == "" {
		return w.startChild(uid, mode, addr, env...)
	}
	w.t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		w.t.Fatal(err)
	}
	defer f.Close()
	w.cgroupFD = int(f.Fd())
	defer func() { w.cgroupFD = 0 }()
	return w.startChild(uid, mode, addr, env...)
}

// runChildIn is runChild inside the cgroup dir.
func (w *world) runChildIn(dir string, uid int, mode string, env ...string) map[string]any {
	w.t.Helper()
	c := w.startChildIn(dir, uid, mode, "", env...)
	m := c.next(w.t, 15*time.Second)
	c.wait(w.t)
	return m
}
