//go:build linux

package integration

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dnstest"
	"github.com/miekg/dns"
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
	for _, network := range []string{"udp", "tcp"} {
		secret := fmt.Sprintf("exfil-%s-%d", network, time.Now().UnixNano())
		q := question("wWw.aPi.ExAmPlE.tEsT.", dns.TypeA)
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
		if fq.Question[0].Name != "www.api.example.test." {
			t.Errorf("%s: the upstream got the client's letter case %q: bits of the client's choosing", network, fq.Question[0].Name)
		}
	}
}
