//go:build linux

package integration

// Red team of the DNS proxy (dns: proxy, issue 14). Each test is an attack
// by a process of a protected user with dns: proxy (or of another protected
// user, or of an unprotected local user) on the redirect, the proxy's
// attribution of queries, its name matching and its bounds, next to the
// control that must keep working. The ones here are closed (regression
// tests); those still open are in redteam_dns_open_test.go, behind the build
// tag redteam.
//
// The attacker's sockets are made in-process with the attacker's uid as
// fsuid (netns.NS.DialAs does the same): the kernel's `meta skuid` of such a
// socket is that uid, and the process holds no capability the socket could
// use (binding a port below 1024 aside, which no test does as the attacker).

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/internal/dnstest"
)

// exchangeAs sends q from a socket owned by uid, bound to local port lport
// (0: any), to server over network, and returns the reply and the local
// port used.
func (w *world) exchangeAs(uid int, network string, lport int, server string, q *dns.Msg) (*dns.Msg, int, error) {
	var r *dns.Msg
	var port int
	err := w.ns.Do(func() error {
		if _, err := unix.SetfsuidRetUid(uid); err != nil {
			return err
		}
		defer unix.SetfsuidRetUid(0) //nolint:errcheck
		d := net.Dialer{Timeout: 2 * time.Second}
		switch network {
		case "udp", "udp4", "udp6":
			d.LocalAddr = &net.UDPAddr{Port: lport}
		default:
			d.LocalAddr = &net.TCPAddr{Port: lport}
		}
		c, err := d.Dial(network, server)
		if err != nil {
			return err
		}
		defer c.Close()
		switch a := c.LocalAddr().(type) {
		case *net.UDPAddr:
			port = a.Port
		case *net.TCPAddr:
			port = a.Port
		}
		c.SetDeadline(time.Now().Add(2 * time.Second)) //nolint:errcheck
		dc := &dns.Conn{Conn: c}
		if err := dc.WriteMsg(q); err != nil {
			return err
		}
		r, err = dc.ReadMsg()
		return err
	})
	return r, port, err
}

func question(name string, qtype uint16) *dns.Msg {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	return q
}

func rcodeOf(m *dns.Msg, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	return dns.RcodeToString[m.Rcode]
}

// ---------------------------------------------------------------------------
// D1. Name matching on the presentation form. A label may hold any byte,
// '.' included; the presentation form writes it `\.`. A matcher that cuts
// the presentation string at ".suffix" takes the wire name
// [x.cdn][example][test] — a child of example.test, a sibling of
// cdn.example.test — for a name below cdn.example.test, which
// `**.cdn.example.test` allows: a name the allowlist does not list is
// resolved, and its addresses enter the user's kernel set.
func TestRedteamDNSEscapedDotSibling(t *testing.T) {
	w := newWorld(t)
	w.write("egressd.yaml", proxyMain)
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\ndns: proxy\nallow:\n  - \"**.cdn.example.test:443\"\n  - \"*.img.example.test:443\"\n", uidA))
	w.dns.Set("a.cdn.example.test", dnstest.Record{A: addrs("192.0.2.11"), TTL: 60})
	// Siblings of the wildcards' suffixes, whose first label holds a dot.
	w.dns.Set(`x\.cdn.example.test`, dnstest.Record{A: addrs("198.51.100.20"), TTL: 60})
	w.dns.Set(`y\.img.example.test`, dnstest.Record{A: addrs("198.51.100.20"), TTL: 60})
	w.start()
	// Control: a name below the suffix is answered and connects.
	if m, _, err := w.exchangeAs(uidA, "udp", 0, "192.0.2.53:53", question("a.cdn.example.test.", dns.TypeA)); err != nil || m.Rcode != dns.RcodeSuccess {
		t.Fatalf("control: a.cdn.example.test: %s", rcodeOf(m, err))
	}
	w.expect(uidA, "tcp", "192.0.2.11:443", okConnected)
	for _, name := range []string{`x\.cdn.example.test.`, `y\.img.example.test.`} {
		m, _, err := w.exchangeAs(uidA, "udp", 0, "192.0.2.53:53", question(name, dns.TypeA))
		t.Logf("%s: %s", name, rcodeOf(m, err))
		if err == nil && m.Rcode != dns.RcodeRefused {
			t.Errorf("%s (not below the wildcard's suffix) answered %s, want REFUSED", name, dns.RcodeToString[m.Rcode])
		}
		if n := w.dns.QueriesFor(name); n != 0 {
			t.Errorf("%s reached the upstream %d times", name, n)
		}
	}
	w.expect(uidA, "tcp", "198.51.100.20:443", okRefused)
}

// ---------------------------------------------------------------------------
// D2. Riding another user's redirected flow. The proxy tells who asked by
// the label of the query's conntrack entry. A UDP flow lives on in
// conntrack after its socket closed (30 s unanswered, 120 s answered); a
// socket of another user that binds the same source port would join it:
// its datagrams redirected by the flow's NAT binding, carrying the label of
// the user who opened it. (a) Another protected dns: proxy user would get
// the names of the opener's allowlist answered: a tunnel through the
// opener's wildcard (closed: the restricted chain lets a packet reach the
// proxy only on a flow its own uid opened). (b) An unprotected local user
// would have its queries answered, refused and logged as the opener's
// (closed: proxy users' DNS flows are in conntrack zone 53, which nobody
// else's packets join; its query goes where it sent it, as its own).
func TestRedteamDNSRideRedirectedFlow(t *testing.T) {
	w := newWorld(t)
	w.write("egressd.yaml", proxyMain)
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\ndns: proxy\nallow:\n  - \"**.deep.example.test:443\"\n", uidA))
	w.write("allow.d/web.yaml", fmt.Sprintf("user: %d\ndns: proxy\nallow:\n  - api.example.test:443\n", uidB))
	w.dns.Set("*.deep.example.test", dnstest.Record{A: addrs("192.0.2.12"), TTL: 60})
	w.start()
	// Control: web asks a name of billing's wildcard from a port of its own.
	if m, _, err := w.exchangeAs(uidB, "udp", 0, "192.0.2.53:53", question("own.deep.example.test.", dns.TypeA)); err != nil || m.Rcode != dns.RcodeRefused {
		t.Fatalf("control: web's own query for a name only billing lists: %s, want REFUSED", rcodeOf(m, err))
	}
	for _, rider := range []struct {
		uid  int
		what string
	}{{uidB, "another dns: proxy user (web)"}, {uidNone, "an unprotected local user"}} {
		// billing asks from port P and closes its socket; the flow stays.
		m, port, err := w.exchangeAs(uidA, "udp", 0, "192.0.2.53:53", question("a.deep.example.test.", dns.TypeA))
		if err != nil || m.Rcode != dns.RcodeSuccess {
			t.Fatalf("billing's own query: %s", rcodeOf(m, err))
		}
		name := fmt.Sprintf("tunnel-%d.deep.example.test.", rider.uid)
		mk := w.mark()
		m, _, err = w.exchangeAs(rider.uid, "udp", port, "192.0.2.53:53", question(name, dns.TypeA))
		t.Logf("%s, from billing's port %d: %s", rider.what, port, rcodeOf(m, err))
		if rider.uid != uidNone && err == nil && m.Rcode == dns.RcodeSuccess && w.dns.QueriesFor(name) > 0 {
			t.Errorf("%s asked %s on billing's flow (port %d): answered through billing's wildcard", rider.what, name, port)
		}
		// An unlisted name on the same flow: refused and logged as whose?
		m, _, err = w.exchangeAs(rider.uid, "udp", port, "192.0.2.53:53", question(fmt.Sprintf("exfil-%d.attacker.example.", rider.uid), dns.TypeA))
		t.Logf("%s, an unlisted name from billing's port: %s", rider.what, rcodeOf(m, err))
		time.Sleep(100 * time.Millisecond)
		for _, ev := range w.eventsSince("dns_refused", mk) {
			if ev["allowlist"] == "billing" {
				t.Errorf("%s's query was attributed to billing: dns_refused %v", rider.what, ev)
			}
		}
	}
}

// ---------------------------------------------------------------------------
// D5. Ways around the redirect, each with a query for a name the allowlist
// does not list, to a host that would answer it: UDP-Lite to port 53 (not
// UDP, so not redirected), IPv4-mapped IPv6 (UDP and TCP), IPv6, the
// proxy's port directly (127.0.0.1 and ::1), a forged source
// (IP_FREEBIND), another process's un-redirected flow to a resolver (its
// source port taken after it closed), and a flow the service opened while
// its allowlist still said dns: resolvers. None may reach a resolver; the
// proxy may answer (REFUSED).

// rawSendAs sends payload from a socket owned by uid (domain, type,
// protocol), bound to bind when valid (with IP_FREEBIND when freebind), to
// dst; it returns the send's errno name.
func (w *world) rawSendAs(uid, domain, typ, proto int, bind netip.AddrPort, freebind bool, dst netip.AddrPort, payload []byte) string {
	res := ""
	err := w.ns.Do(func() error {
		if _, err := unix.SetfsuidRetUid(uid); err != nil {
			return err
		}
		defer unix.SetfsuidRetUid(0) //nolint:errcheck
		fd, err := unix.Socket(domain, typ|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			res = "socket: " + errName(err)
			return nil
		}
		defer unix.Close(fd)
		if freebind {
			unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_FREEBIND, 1) //nolint:errcheck
		}
		if bind.IsValid() {
			if err := unix.Bind(fd, sockaddr(bind)); err != nil {
				res = "bind: " + errName(err)
				return nil
			}
		}
		if typ == unix.SOCK_STREAM {
			tv := unix.NsecToTimeval(time.Second.Nanoseconds())
			unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv) //nolint:errcheck
			if err := unix.Connect(fd, mapped(domain, dst)); err != nil {
				res = "connect: " + errName(err)
				return nil
			}
			framed := append([]byte{byte(len(payload) >> 8), byte(len(payload))}, payload...)
			_, err := unix.Write(fd, framed)
			res = errName(err)
			return nil
		}
		res = errName(unix.Sendto(fd, payload, 0, mapped(domain, dst)))
		return nil
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return res
}

// mapped is dst's socket address for a socket of domain: IPv4 as
// IPv4-mapped IPv6 on an AF_INET6 socket.
func mapped(domain int, dst netip.AddrPort) unix.Sockaddr {
	if domain == unix.AF_INET6 {
		return &unix.SockaddrInet6{Addr: dst.Addr().As16(), Port: int(dst.Port())}
	}
	return sockaddr(dst)
}

// udpliteSink counts UDP-Lite datagrams arriving on addr (root, in the world).
func (w *world) udpliteSink(addr netip.AddrPort) func() int {
	var fd int
	err := w.ns.Do(func() error {
		var err error
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDPLITE); err != nil {
			return err
		}
		return unix.Bind(fd, sockaddr(addr))
	})
	if err != nil {
		w.t.Skipf("UDP-Lite: %v", err)
	}
	w.t.Cleanup(func() { unix.Close(fd) })
	return func() int {
		n := 0
		for {
			_, _, err := unix.Recvfrom(fd, make([]byte, 1500), unix.MSG_DONTWAIT)
			if err != nil {
				return n
			}
			n++
		}
	}
}

func TestRedteamDNSAroundTheRedirect(t *testing.T) {
	w := newWorld(t)
	w.write("egressd.yaml", proxyMain)
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\ndns: proxy\nallow:\n  - api.example.test:443\n", uidA))
	w.dns.Set("api.example.test", dnstest.Record{A: addrs("192.0.2.10"), TTL: 60})
	// A second resolver that answers anything, on an address the allowlist
	// does not hold: what a tunnel needs.
	w.must(w.ns.AddAddrs(netip.MustParseAddr("198.51.100.53"), netip.MustParseAddr("2001:db8::53")))
	evil := map[string]*dnstest.Server{}
	for _, a := range []string{"198.51.100.53:53", "[2001:db8::53]:53"} {
		s, err := dnstest.ListenIn(w.ns.Do, a)
		w.must(err)
		t.Cleanup(s.Close)
		s.Set("*.tunnel.example", dnstest.Record{A: addrs("198.51.100.20"), TTL: 60})
		evil[a] = s
	}
	lite := w.udpliteSink(netip.MustParseAddrPort("198.51.100.53:53"))
	w.start()
	asked := func(name string) int64 {
		n := w.dns.QueriesFor(name)
		for _, s := range evil {
			n += s.QueriesFor(name)
		}
		return n
	}
	pack := func(name string) []byte {
		b, err := question(name, dns.TypeTXT).Pack()
		w.must(err)
		return b
	}
	v4, v6 := netip.MustParseAddrPort("198.51.100.53:53"), netip.MustParseAddrPort("[2001:db8::53]:53")
	none := netip.AddrPort{}
	for _, c := range []struct {
		what               string
		domain, typ, proto int
		bind               netip.AddrPort
		freebind           bool
		dst                netip.AddrPort
	}{
		{"UDP-Lite to port 53", unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDPLITE, none, false, v4},
		{"UDP, IPv4-mapped IPv6", unix.AF_INET6, unix.SOCK_DGRAM, 0, none, false, v4},
		{"TCP, IPv4-mapped IPv6", unix.AF_INET6, unix.SOCK_STREAM, 0, none, false, v4},
		{"UDP, IPv6", unix.AF_INET6, unix.SOCK_DGRAM, 0, none, false, v6},
		{"TCP, IPv6", unix.AF_INET6, unix.SOCK_STREAM, 0, none, false, v6},
		{"UDP straight to 127.0.0.1:153", unix.AF_INET, unix.SOCK_DGRAM, 0, none, false, netip.MustParseAddrPort("127.0.0.1:153")},
		{"TCP straight to [::1]:153", unix.AF_INET6, unix.SOCK_STREAM, 0, none, false, netip.MustParseAddrPort("[::1]:153")},
		{"UDP from a forged source (IP_FREEBIND)", unix.AF_INET, unix.SOCK_DGRAM, 0, netip.MustParseAddrPort("203.0.113.99:5300"), true, v4},
	} {
		name := fmt.Sprintf("%s.tunnel.example.", strings.NewReplacer(" ", "-", ",", "", "(", "", ")", "", ":", "-", "[", "", "]", "").Replace(strings.ToLower(c.what)))
		res := w.rawSendAs(uidA, c.domain, c.typ, c.proto, c.bind, c.freebind, c.dst, pack(name))
		time.Sleep(50 * time.Millisecond)
		t.Logf("%-40s send: %s", c.what, res)
		if n := asked(name); n != 0 {
			t.Errorf("%s: a resolver received the unlisted %s (%d)", c.what, name, n)
		}
	}
	if n := lite(); n != 0 {
		t.Errorf("UDP-Lite: %d datagram(s) to port 53 reached the resolver's host", n)
	}

	// Another process's flow to a resolver: root asks and closes; billing
	// takes the source port while conntrack still holds the flow.
	port := w.rootQuery("198.51.100.53:53", "root.tunnel.example")
	m, _, err := w.exchangeAs(uidA, "udp", port, "198.51.100.53:53", question("ride.tunnel.example.", dns.TypeTXT))
	t.Logf("from root's former port %d: %s", port, rcodeOf(m, err))
	if n := asked("ride.tunnel.example."); n != 0 {
		t.Errorf("billing's query on root's flow to a resolver reached it")
	}

	// A flow opened while the allowlist said dns: resolvers, kept across
	// the switch to dns: proxy.
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nallow:\n  - api.example.test:443\n", uidA))
	mk := w.mark()
	if _, err := w.waitEvent("ruleset_applied", mk, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	old, err := w.ns.DialAs(uidA, "udp", "192.0.2.53:53", time.Second)
	w.must(err)
	defer old.Close()
	dc := &dns.Conn{Conn: old}
	old.SetDeadline(time.Now().Add(2 * time.Second)) //nolint:errcheck
	w.must(dc.WriteMsg(question("api.example.test.", dns.TypeA)))
	if _, err := dc.ReadMsg(); err != nil {
		t.Fatalf("control: a query under dns: resolvers: %v", err)
	}
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\ndns: proxy\nallow:\n  - api.example.test:443\n", uidA))
	mk = w.mark()
	if _, err := w.waitEvent("ruleset_applied", mk, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	old.SetDeadline(time.Now().Add(time.Second)) //nolint:errcheck
	werr := dc.WriteMsg(question("old-flow.example.test.", dns.TypeTXT))
	t.Logf("on the flow opened under dns: resolvers, after the switch: write %v", errName(werr))
	time.Sleep(50 * time.Millisecond)
	if n := w.dns.QueriesFor("old-flow.example.test."); n != 0 {
		t.Errorf("a query on a flow opened before the switch to dns: proxy reached the resolver (%d)", n)
	}
}
