//go:build linux

package integration

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/dnstest"
	"github.com/egressd/egressd/internal/event"
)

// resolveAs asks server for name with a socket owned by uid, as the
// service's own resolver would (any address: the kernel redirects it).
func (w *world) resolveAs(uid int, network, server, name string, qtype uint16) (*dns.Msg, error) {
	c, err := w.ns.DialAs(uid, network, server, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second)) //nolint:errcheck
	dc := &dns.Conn{Conn: c}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	if err := dc.WriteMsg(q); err != nil {
		return nil, err
	}
	return dc.ReadMsg()
}

func firstAddr(m *dns.Msg) (netip.Addr, bool) {
	for _, rr := range m.Answer {
		switch v := rr.(type) {
		case *dns.A:
			a, ok := netip.AddrFromSlice(v.A.To4())
			return a, ok
		case *dns.AAAA:
			a, ok := netip.AddrFromSlice(v.AAAA)
			return a, ok
		}
	}
	return netip.Addr{}, false
}

// cdnPool: a name behind a CDN answers each query with the next address.
var cdnPool = [][]netip.Addr{
	{netip.MustParseAddr("192.0.2.10")}, {netip.MustParseAddr("192.0.2.11")},
	{netip.MustParseAddr("192.0.2.12")}, {netip.MustParseAddr("198.51.100.20")},
}

const proxyMain = mainConfig + "dns_proxy_port: 153\n"

// Issue 14: a service behind dns: proxy connects to whatever address its
// own query got, at once, every time; the same name under dns: resolvers
// races egressd's own lookups (the reason dns: proxy exists).
func TestDNSProxyCDN(t *testing.T) {
	w := newWorld(t)
	w.write("egressd.yaml", proxyMain)
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\ndns: proxy\nallow:\n  - cdn.example.test:443\n", uidA))
	w.write("allow.d/web.yaml", fmt.Sprintf("user: %d\nallow:\n  - cdn.example.test:443\n", uidB))
	w.dns.Set("cdn.example.test", dnstest.Record{Rotate: cdnPool, TTL: 300})
	w.start()
	// Sent straight to the proxy's port by a process that is not
	// redirected (root here): refused.
	if m, err := w.resolveAs(0, "udp", "127.0.0.1:153", "cdn.example.test", dns.TypeA); err != nil || m.Rcode != dns.RcodeRefused {
		t.Errorf("a query sent straight to the proxy: %v %v, want REFUSED", m, err)
	}

	failures := map[int]int{}
	for i := 0; i < 12; i++ {
		for _, uid := range []int{uidA, uidB} {
			m, err := w.resolveAs(uid, "udp", "192.0.2.53:53", "cdn.example.test", dns.TypeA)
			if err != nil || m.Rcode != dns.RcodeSuccess {
				t.Fatalf("uid %d: query %d: %v %v\n%s", uid, i, m, err, w.logText())
			}
			a, ok := firstAddr(m)
			if !ok {
				t.Fatalf("uid %d: no address in %v", uid, m)
			}
			if w.connect(uid, "tcp", netip.AddrPortFrom(a, 443).String()) != okConnected {
				failures[uid]++
			}
		}
	}
	if failures[uidA] != 0 {
		t.Errorf("dns: proxy: %d of 12 connects to the address the service was just given failed\n%s", failures[uidA], w.logText())
	}
	if failures[uidB] == 0 {
		t.Errorf("dns: resolvers: every connect succeeded; the rotating name should have raced egressd's own lookup (is the CDN rotating?)")
	}
	t.Logf("connects refused right after the service's own answer: dns: proxy %d/12, dns: resolvers %d/12", failures[uidA], failures[uidB])
}

// Wildcards, refusals (logged), TCP and IPv6 transports, any resolver
// address, upstream failure.
func TestDNSProxyNames(t *testing.T) {
	w := newWorld(t)
	w.write("egressd.yaml", proxyMain)
	w.write("allow.d/billing.yaml", fmt.Sprintf(`user: %d
dns: proxy
allow:
  - "*.img.example.test:443"
  - "**.deep.example.test:443"
  - api.example.test:443
  - broken.example.test:443
`, uidA))
	w.dns.Set("*.img.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.11")}, TTL: 60})
	w.dns.Set("*.deep.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.12")}, AAAA: []netip.Addr{netip.MustParseAddr("2001:db8::20")}, TTL: 60})
	w.dns.Set("api.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, TTL: 60})
	w.dns.Set("exfil.attacker.example", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("203.0.113.5")}, TTL: 60})
	w.dns.Set("broken.example.test", dnstest.Record{Rcode: dns.RcodeServerFailure})
	w.start()

	// Wildcard-only destinations are closed until the service asks.
	w.expect(uidA, "tcp", "192.0.2.11:443", okRefused)
	for _, c := range []struct {
		network, server, name string
		qtype                 uint16
		rcode                 int
		connect               string
	}{
		{"udp", "192.0.2.53:53", "a.img.example.test", dns.TypeA, dns.RcodeSuccess, "192.0.2.11:443"},
		{"udp", "192.0.2.53:53", "a.b.img.example.test", dns.TypeA, dns.RcodeRefused, ""},
		{"tcp", "203.0.113.5:53", "x.y.z.deep.example.test", dns.TypeA, dns.RcodeSuccess, "192.0.2.12:443"},
		{"udp", "[2001:db8::10]:53", "v6.deep.example.test", dns.TypeAAAA, dns.RcodeSuccess, "[2001:db8::20]:443"},
		{"tcp", "[2001:db8::10]:53", "api.example.test", dns.TypeA, dns.RcodeSuccess, "192.0.2.10:443"},
		{"udp", "127.0.0.53:53", "exfil.attacker.example", dns.TypeTXT, dns.RcodeRefused, ""},
		{"udp", "192.0.2.53:53", "broken.example.test", dns.TypeA, dns.RcodeServerFailure, ""},
	} {
		m, err := w.resolveAs(uidA, c.network, c.server, c.name, c.qtype)
		if err != nil {
			t.Errorf("%s %s via %s: %v", c.name, c.network, c.server, err)
			continue
		}
		if m.Rcode != c.rcode {
			t.Errorf("%s %s via %s: %s, want %s", c.name, c.network, c.server, dns.RcodeToString[m.Rcode], dns.RcodeToString[c.rcode])
		}
		if c.connect != "" {
			w.expect(uidA, "tcp", c.connect, okConnected)
		}
	}
	if n := w.dns.QueriesFor("exfil.attacker.example."); n != 0 {
		t.Errorf("an unlisted name reached the upstream resolver %d times (a DNS tunnel)", n)
	}
	// dns_refused lines are written off the answer's path: wait for them.
	var got string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var refused []string
		for _, ev := range w.eventsSince(event.DNSRefused, 0) {
			refused = append(refused, fmt.Sprintf("%v/%v/%v", ev["allowlist"], ev["name"], ev["type"]))
		}
		got = strings.Join(refused, " ")
		if strings.Contains(got, "billing/exfil.attacker.example/TXT") && strings.Contains(got, "billing/a.b.img.example.test/A") || time.Now().After(deadline) {
			break
		}
	}
	if !strings.Contains(got, "billing/exfil.attacker.example/TXT") || !strings.Contains(got, "billing/a.b.img.example.test/A") {
		t.Errorf("dns_refused events: %s", got)
	}
}

// The proxy must not take DNS down, nor open it: while egressd restarts,
// a client asking in a loop gets answers that hold (their addresses
// connect) or failures, never an unfiltered answer.
func TestDNSProxyRestart(t *testing.T) {
	w := newWorld(t)
	w.write("egressd.yaml", proxyMain)
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\ndns: proxy\nallow:\n  - cdn.example.test:443\n", uidA))
	w.dns.Set("cdn.example.test", dnstest.Record{Rotate: cdnPool, TTL: 300})
	w.dns.Set("exfil.attacker.example", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("203.0.113.5")}, TTL: 60})
	w.start()

	stop := make(chan struct{})
	type result struct{ answered, failed, leaked, unlisted int }
	res := make(chan result)
	go func() {
		var r result
		for {
			select {
			case <-stop:
				res <- r
				return
			default:
			}
			if m, err := w.resolveAs(uidA, "udp", "192.0.2.53:53", "exfil.attacker.example", dns.TypeA); err == nil && m.Rcode == dns.RcodeSuccess {
				r.unlisted++
			} else if err != nil {
				r.failed++
			}
			m, err := w.resolveAs(uidA, "udp", "192.0.2.53:53", "cdn.example.test", dns.TypeA)
			if err != nil || m.Rcode != dns.RcodeSuccess {
				r.failed++
				continue
			}
			a, _ := firstAddr(m)
			r.answered++
			if c, err := w.ns.DialAs(uidA, "tcp", netip.AddrPortFrom(a, 443).String(), time.Second); err != nil {
				r.leaked++ // an answer the kernel did not hold
			} else {
				c.Close()
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	w.kill()
	time.Sleep(300 * time.Millisecond)
	w.start()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	r := <-res
	t.Logf("during a restart: %d answers (all held), %d failed queries", r.answered, r.failed)
	if r.unlisted != 0 || r.leaked != 0 {
		t.Errorf("during a restart: %d unlisted names answered, %d answers not in the kernel", r.unlisted, r.leaked)
	}
	if r.answered == 0 {
		t.Error("no answers at all")
	}
	if n := w.dns.QueriesFor("exfil.attacker.example."); n != 0 {
		t.Errorf("the unlisted name reached the upstream %d times", n)
	}
}

// mode: audit with dns: proxy (issue 15): unlisted names are answered, and
// the attempt to use them is logged as an audited deny.
func TestDNSProxyAudit(t *testing.T) {
	w := newWorld(t)
	w.write("egressd.yaml", proxyMain)
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\ndns: proxy\nmode: audit\nallow:\n  - api.example.test:443\n", uidA))
	w.dns.Set("other.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("198.51.100.20")}, TTL: 60})
	w.start()
	m, err := w.resolveAs(uidA, "udp", "192.0.2.53:53", "other.example.test", dns.TypeA)
	if err != nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
		t.Fatalf("audit mode: an unlisted name must be answered: %v %v", m, err)
	}
	mk := w.mark()
	w.expect(uidA, "tcp", "198.51.100.20:443", okConnected)
	if ev, err := w.waitEvent(event.Deny, mk, 2*time.Second); err != nil || ev["audit"] != true {
		t.Errorf("audited deny: %v %v", ev, err)
	}
}

// check --explain understands wildcards and what the proxy answered.
func TestDNSProxyExplain(t *testing.T) {
	w := newWorld(t)
	w.write("egressd.yaml", proxyMain)
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\ndns: proxy\nallow:\n  - \"*.img.example.test:443\"\n", uidA))
	w.dns.Set("*.img.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.11")}, TTL: 60})
	w.start()
	code, out := w.check("--explain", fmt.Sprint(uidA), "a.img.example.test:443")
	if code != 1 || !strings.Contains(out, "matches *.img.example.test:443") || !strings.Contains(out, "allowed once the service resolves") {
		t.Errorf("before the service asked: exit %d\n%s", code, out)
	}
	if _, err := w.resolveAs(uidA, "udp", "192.0.2.53:53", "a.img.example.test", dns.TypeA); err != nil {
		t.Fatal(err)
	}
	code, out = w.check("--explain", fmt.Sprint(uidA), "a.img.example.test:443")
	if code != 0 || !strings.Contains(out, "answered by the DNS proxy") || !strings.Contains(out, "proxy4") {
		t.Errorf("after the service asked: exit %d\n%s", code, out)
	}
	code, out = w.check()
	if !strings.Contains(out, "proxy") || !strings.Contains(out, "+ 1 answered") {
		t.Errorf("check does not show the dns: proxy allowlist's answers (exit %d):\n%s", code, out)
	}
	code, out = w.check("--explain", fmt.Sprint(uidA), "exfil.attacker.example:443")
	if code != 1 || !strings.Contains(out, "REFUSED") {
		t.Errorf("an unlisted name: exit %d\n%s", code, out)
	}
}

// egressd learn with dns: proxy (issue 15): in audit mode the service
// resolves names through the proxy and connects; learn proposes the names
// (a wildcard for siblings), not the addresses, and the proposal, enforced,
// allows what was observed and refuses the rest.
func TestDNSProxyLearn(t *testing.T) {
	w := newWorld(t)
	w.write("egressd.yaml", proxyMain)
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\ndns: proxy\nmode: audit\nallow:\n  - api.example.test:443\n", uidA))
	w.dns.Set("api.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, TTL: 60})
	w.dns.Set("a.img.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.11")}, TTL: 60})
	w.dns.Set("b.img.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.12")}, TTL: 60})
	w.dns.Set("c.img.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("198.51.100.20")}, TTL: 60})
	w.dns.Set("unused.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("203.0.113.5")}, TTL: 60})
	stateDir := filepath.Join(w.dir, "state")
	w.must(os.Mkdir(stateDir, 0o700))
	cmd := exec.Command(egressd, w.tw.RunArgs()...)
	cmd.Env = append(cmd.Environ(), "STATE_DIRECTORY="+stateDir)
	w.startCmd(cmd)
	for _, n := range []string{"a.img.example.test", "b.img.example.test", "c.img.example.test", "unused.example.test"} {
		m, err := w.resolveAs(uidA, "udp", "192.0.2.53:53", n, dns.TypeA)
		if err != nil || m.Rcode != dns.RcodeSuccess {
			t.Fatalf("%s in audit mode: %v %v", n, m, err)
		}
		if a, ok := firstAddr(m); ok && n != "unused.example.test" {
			w.expect(uidA, "tcp", netip.AddrPortFrom(a, 443).String(), okConnected) // audited
		}
	}
	// What the proxy saw survives a restart (observed.json under the state directory).
	w.stop(syscall.SIGTERM)
	cmd = exec.Command(egressd, w.tw.RunArgs()...)
	cmd.Env = append(cmd.Environ(), "STATE_DIRECTORY="+stateDir)
	w.startCmd(cmd)
	var out string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		_, out, _ = w.egressdCmd("learn", "--config", filepath.Join(w.dir, "egressd.yaml"), "--state-dir", stateDir, "--runtime-dir", w.runDir(), "billing")
		if strings.Count(out, "img.example.test:443:") == 3 {
			break
		}
	}
	t.Logf("egressd learn billing:\n%s", out)
	if !strings.Contains(out, `- "*.img.example.test:443"`) && !strings.Contains(out, "- *.img.example.test:443") {
		t.Fatalf("no wildcard proposed for three sibling names")
	}
	if strings.Contains(out, "- 192.0.2.11:443") || strings.Contains(out, "unused.example.test:443 ") {
		t.Errorf("an address proposed as a literal though the proxy answered a name for it, or a name never connected to")
	}
	if _, err := config.ParseAllowlist("billing.yaml", "billing", []byte(out)); err != nil {
		t.Fatalf("the proposal does not load: %v", err)
	}
	w.write("allow.d/billing.yaml", strings.Replace(out, "\nmode: audit ", "\nmode: enforce ", 1))
	w.eventually(uidA, "tcp", "198.51.100.20:4444", okRefused, 5*time.Second) // served: connected while audited
	if m, err := w.resolveAs(uidA, "udp", "192.0.2.53:53", "d.img.example.test", dns.TypeA); err != nil || m.Rcode == dns.RcodeRefused {
		t.Errorf("a new sibling under the learned wildcard: %v %v", m, err)
	}
	if m, err := w.resolveAs(uidA, "udp", "192.0.2.53:53", "unused.example.test", dns.TypeA); err != nil || m.Rcode != dns.RcodeRefused {
		t.Errorf("a name never connected to, once enforced: %v %v, want REFUSED", m, err)
	}
	// In audit mode the unlisted names were answered but their addresses
	// not added; enforced, the learned wildcard allows what the proxy answers.
	w.expect(uidA, "tcp", "192.0.2.11:443", okRefused)
	if m, err := w.resolveAs(uidA, "udp", "192.0.2.53:53", "a.img.example.test", dns.TypeA); err != nil || m.Rcode != dns.RcodeSuccess {
		t.Fatalf("a learned name, once enforced: %v %v", m, err)
	}
	w.expect(uidA, "tcp", "192.0.2.11:443", okConnected)
}

// Issue 22: an answer never outlives the policy that allowed it. The
// service asked for names under three entries; an edit removes one
// wildcard and moves another to a new port: what they allowed closes at the
// reload, not when the answers' TTL and linger run out, and check --explain
// says so. The entry that stays keeps its answers (control). A restart
// over an edit (the answers adopted from the kernel) closes them too.
func TestDNSProxyEditClosesAnswers(t *testing.T) {
	w := newWorld(t)
	w.write("egressd.yaml", proxyMain) // answers live max_ttl (10m) + linger
	allow := func(entries ...string) {
		w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\ndns: proxy\nallow:\n", uidA)+"  - \""+strings.Join(entries, "\"\n  - \"")+"\"\n")
	}
	allow("*.cdn.example.test:443", "*.img.example.test:443", "api.example.test:443", "*.svc.example.test:443")
	w.dns.Set("a.cdn.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.11")}, TTL: 3600})
	w.dns.Set("b.img.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, TTL: 3600})
	w.dns.Set("api.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.12")}, TTL: 3600})
	w.dns.Set("c.svc.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("198.51.100.20")}, TTL: 3600})
	w.start()
	for _, name := range []string{"a.cdn.example.test", "b.img.example.test", "api.example.test", "c.svc.example.test"} {
		if m, err := w.resolveAs(uidA, "udp", "192.0.2.53:53", name, dns.TypeA); err != nil || m.Rcode != dns.RcodeSuccess {
			t.Fatalf("%s: %v %v", name, m, err)
		}
	}
	for _, to := range []string{"192.0.2.11:443", "192.0.2.10:443", "192.0.2.12:443", "198.51.100.20:443"} {
		w.expect(uidA, "tcp", to, okConnected)
	}

	mk := w.mark()
	allow("*.img.example.test:8443", "api.example.test:443", "*.svc.example.test:443")
	if _, err := w.waitEvent(event.DNSProxyRevoked, mk, 5*time.Second); err != nil {
		t.Fatalf("no dns_proxy_revoked after the edit: %v\n%s", err, w.logText())
	}
	w.expect(uidA, "tcp", "192.0.2.11:443", okRefused)      // removed wildcard
	w.expect(uidA, "tcp", "192.0.2.10:443", okRefused)      // wildcard moved to 8443
	w.expect(uidA, "tcp", "192.0.2.12:443", okConnected)    // kept name (control)
	w.expect(uidA, "tcp", "198.51.100.20:443", okConnected) // kept wildcard (control)
	if code, out := w.check("--explain", fmt.Sprint(uidA), "192.0.2.11:443"); code != 1 {
		t.Errorf("check --explain of the removed wildcard's answer: exit %d, want 1 (denied)\n%s", code, out)
	}
	if m, err := w.resolveAs(uidA, "udp", "192.0.2.53:53", "b.img.example.test", dns.TypeA); err != nil || m.Rcode != dns.RcodeSuccess {
		t.Fatalf("b.img.example.test under the new port: %v %v", m, err)
	}
	w.expect(uidA, "tcp", "192.0.2.10:8443", okConnected) // the new port, once asked again (control)

	// Stopped, edited, started: the answers it adopts from the kernel
	// follow the new configuration too.
	w.kill()
	allow("*.svc.example.test:443")
	mk = w.mark()
	w.start()
	if _, err := w.waitEvent(event.DNSProxyRevoked, mk, 5*time.Second); err != nil {
		t.Fatalf("no dns_proxy_revoked after a restart over an edit: %v\n%s", err, w.logText())
	}
	w.expect(uidA, "tcp", "192.0.2.10:8443", okRefused)
	w.expect(uidA, "tcp", "192.0.2.12:443", okRefused)
	w.expect(uidA, "tcp", "198.51.100.20:443", okConnected) // adopted, still allowed (control)

	// Switching the allowlist to dns: resolvers closes every answer.
	mk = w.mark()
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nallow:\n  - c.svc.example.test:4444\n", uidA))
	if _, err := w.waitEvent(event.DNSProxyRevoked, mk, 5*time.Second); err != nil {
		t.Fatalf("no dns_proxy_revoked after leaving dns: proxy: %v\n%s", err, w.logText())
	}
	w.expect(uidA, "tcp", "198.51.100.20:443", okRefused)
	w.expect(uidA, "tcp", "198.51.100.20:4444", okConnected) // what dns: resolvers allows (control)
}

// Issue 22: learn must not launder a name the service chose. In audit
// mode the service asks a legitimate name once and an attacker's name five
// times, both answered with one address, and a name that is no valid entry;
// it connects to both addresses. The proposal loads, proposes the shared
// address as a literal marked REVIEW with both names beneath, never the
// attacker's name as an entry, and the odd name only in a comment.
func TestDNSProxyLearnNoLaundering(t *testing.T) {
	w := newWorld(t)
	w.write("egressd.yaml", proxyMain)
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\ndns: proxy\nmode: audit\nallow:\n  - api.example.test:443\n", uidA))
	w.dns.Set("files.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.11")}, TTL: 60})
	w.dns.Set("c2.attacker.example", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.11")}, TTL: 60})
	w.dns.Set("x#y.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.12")}, TTL: 60})
	stateDir := filepath.Join(w.dir, "state")
	w.must(os.Mkdir(stateDir, 0o700))
	cmd := exec.Command(egressd, w.tw.RunArgs()...)
	cmd.Env = append(cmd.Environ(), "STATE_DIRECTORY="+stateDir)
	w.startCmd(cmd)
	for _, q := range []struct {
		name  string
		times int
	}{{"files.example.test", 1}, {"c2.attacker.example", 5}, {"x#y.example.test", 1}} {
		for i := 0; i < q.times; i++ {
			if m, err := w.resolveAs(uidA, "udp", "192.0.2.53:53", q.name, dns.TypeA); err != nil || m.Rcode != dns.RcodeSuccess {
				t.Fatalf("%s in audit mode: %v %v", q.name, m, err)
			}
		}
	}
	w.expect(uidA, "tcp", "192.0.2.11:443", okConnected) // audited
	w.expect(uidA, "tcp", "192.0.2.12:443", okConnected) // audited
	var out string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		_, out, _ = w.egressdCmd("learn", "--config", filepath.Join(w.dir, "egressd.yaml"), "--state-dir", stateDir, "--runtime-dir", w.runDir(), "billing")
		if strings.Contains(out, "192.0.2.11:443") && strings.Contains(out, "192.0.2.12") {
			break
		}
	}
	t.Logf("egressd learn billing:\n%s", out)
	a, err := config.ParseAllowlist("billing.yaml", "billing", []byte(out))
	if err != nil {
		t.Fatalf("the proposal does not load: %v", err)
	}
	var entries []string
	for _, e := range a.Entries {
		entries = append(entries, e.Raw)
	}
	if got := strings.Join(entries, " "); got != "api.example.test:443 192.0.2.11:443 192.0.2.12:443" {
		t.Errorf("entries %s: want the existing one and the two addresses as literals", got)
	}
	for _, s := range []string{"REVIEW", "c2.attacker.example:443", "files.example.test:443", "x#y.example.test led to 192.0.2.12"} {
		if !strings.Contains(out, s) {
			t.Errorf("the proposal does not mention %q", s)
		}
	}
}
