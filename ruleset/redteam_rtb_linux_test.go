//go:build linux

package ruleset

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/conntrack"
)

// Attack (red team rtb, issue 24): the proxy reads a batch of queries
// and only then asks conntrack, in one write, who opened each one's flow
// (conntrack.Conn.LookupReplyZoneBatch). Between a query's arrival and that
// lookup its client leaves and another proxy uid takes the client's port:
// (1) b sends on the same 5-tuple (a's flow, still in conntrack); (2) b
// sends from the same port to another resolver address, a new flow whose
// reply tuple (127.0.0.1:P -> the client) is the one a's flow holds. The
// queries wait in the proxy's socket, unread, until every datagram is
// there; then one batched lookup must tell a's queries a's and never give
// a datagram b sent a's uid (or the reverse). Control: a's and b's own
// queries from their own ports, in the same batch.
//
// What the kernel does (this test's finding): (1) b's write fails (EPERM,
// the owner check: ct mark . meta skuid @owners); (2) b's datagram reaches
// the proxy, but from another source port: the reply tuple a's flow holds
// is taken, so conntrack's null source binding moves b's flow to a free
// port, and the lookup of that port finds b's own flow. Each query is
// told its own sender.
func TestRedteamRTBKernelBatchPortTakenOver(t *testing.T) {
	e := newEnv(t)
	p := Render(Desired{
		Allowlists: []Allowlist{{Name: "a", Subject: UserSubject(uidA), Proxy: true}, {Name: "b", Subject: UserSubject(uidB), Proxy: true}},
		DenyLog:    config.Defaults().DenyLog,
		ProxyPort:  153,
	})
	if err := e.k.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, ProxySocketMark)
		}); err != nil {
			return err
		}
		return serr
	}}
	var pc net.PacketConn
	var ct *conntrack.Conn
	if err := e.w.NS.Do(func() error {
		var err error
		if pc, err = lc.ListenPacket(context.Background(), "udp", "127.0.0.1:153"); err != nil {
			return err
		}
		ct, err = conntrack.Open()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	defer ct.Close()
	uidOf := map[string]uint32{}
	sendAs := func(c *net.UDPConn, uid uint32, msg string) {
		t.Helper()
		uidOf[msg] = uid
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Logf("%s: write: %v", msg, err) // a datagram the kernel refuses is no hole
		}
	}
	// Control: each uid from its own port.
	a := e.udpAs(t, uidA, 40071, "192.0.2.53:53")
	defer a.Close()
	b := e.udpAs(t, uidB, 40072, "192.0.2.53:53")
	defer b.Close()
	sendAs(a, uidA, "a on its port")
	sendAs(b, uidB, "b on its port")
	// (1) the same 5-tuple.
	a1 := e.udpAs(t, uidA, 40073, "192.0.2.53:53")
	sendAs(a1, uidA, "a before leaving port 40073")
	a1.Close()
	b1 := e.udpAs(t, uidB, 40073, "192.0.2.53:53")
	defer b1.Close()
	sendAs(b1, uidB, "b on a's 5-tuple")
	// (2) the same address and port, another resolver address: the same
	// reply tuple.
	a2 := e.udpAs(t, uidA, 40074, "192.0.2.53:53")
	sendAs(a2, uidA, "a before leaving port 40074")
	a2.Close()
	b2 := e.udpFromAsRTB(t, uidB, "192.0.2.53:40074", "192.0.2.20:53")
	defer b2.Close()
	sendAs(b2, uidB, "b on a's port, to another resolver")
	sendAs(a, uidA, "a on its port again")

	// Every datagram that reached the proxy, read before any lookup.
	type got struct {
		msg  string
		from netip.AddrPort
	}
	var gots []got
	buf := make([]byte, 1500)
	for {
		pc.SetReadDeadline(time.Now().Add(500 * time.Millisecond)) //nolint:errcheck
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			break
		}
		ap := from.(*net.UDPAddr).AddrPort()
		gots = append(gots, got{string(buf[:n]), netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())})
	}
	dsts := make([]netip.AddrPort, len(gots))
	for i := range gots {
		dsts[i] = gots[i].from
	}
	flows, errs := make([]conntrack.Flow, len(dsts)), make([]error, len(dsts))
	ct.LookupReplyZoneBatch(DNSZone, unix.IPPROTO_UDP, netip.MustParseAddrPort("127.0.0.1:153"), dsts, flows, errs)
	arrived := map[string]bool{}
	for i, g := range gots {
		t.Logf("%q from %s: mark %d, %v", g.msg, g.from, flows[i].Mark, errs[i])
		arrived[g.msg] = true
		uid, ok := flows[i].OpenerUID()
		ok = ok && errs[i] == nil && flows[i].DstNAT()
		if want := uidOf[g.msg]; !ok || uid != want {
			t.Errorf("%q from %s: told uid %d (known %v, %v); its sender is uid %d", g.msg, g.from, uid, ok, errs[i], want)
		}
	}
	for _, m := range []string{"a on its port", "b on its port", "a before leaving port 40073", "a before leaving port 40074", "a on its port again"} {
		if !arrived[m] {
			t.Errorf("control: %q never reached the proxy", m)
		}
	}
	var through []string
	for _, m := range []string{"b on a's 5-tuple", "b on a's port, to another resolver"} {
		if arrived[m] {
			through = append(through, m)
		}
	}
	t.Logf("%d datagrams read in one batch; b's on a's port that reached the proxy: %q", len(gots), strings.Join(through, ", "))
}

// udpFromAsRTB opens, as uid, a UDP socket bound to laddr and connected to
// dst, in e's namespace.
func (e *env) udpFromAsRTB(t *testing.T, uid int, laddr, dst string) *net.UDPConn {
	t.Helper()
	var conn *net.UDPConn
	err := e.ns.Do(func() error {
		if _, err := unix.SetfsuidRetUid(uid); err != nil {
			return err
		}
		defer unix.SetfsuidRetUid(0) //nolint:errcheck
		var err error
		conn, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(laddr)), net.UDPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return conn
}
