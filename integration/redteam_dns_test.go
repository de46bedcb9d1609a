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
