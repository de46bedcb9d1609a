package dnsproxy

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/dnstest"
)

// The proxy reads answers by the resolver's rules (resolver.ReadReply,
// resolver.Policy.Admit; each rule is tested once in resolver's
// TestReadReply and TestPolicyAdmit). One test per rule shows the proxy
// follows it: what the kernel holds, and what the service is handed.

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// An AAAA of ::ffff:198.51.100.7 opens nothing: egressd's own lookups never
// took it, and through the proxy it opened 198.51.100.7, an IPv4 address no
// A answer gave (failed before: the kernel held 198.51.100.7:443/tcp).
func TestProxyMappedAAAAOpensNothing(t *testing.T) {
	r := newRig(t, ident{uid: uidWeb, ok: true}, webAllowlist(t, "*.cdn.example.com:443"))
	r.up.Set("v6.cdn.example.com", dnstest.Record{AAAA: addrs("::ffff:198.51.100.7", "2001:db8::7"), TTL: 60})
	m := r.ask("udp", "v6.cdn.example.com", dns.TypeAAAA)
	if m.Rcode != dns.RcodeSuccess || strings.Join(addrsOf(m), ",") != "2001:db8::7" {
		t.Fatalf("answer %v: want only 2001:db8::7", m)
	}
	if got := strings.Join(r.inKernel(), " "); got != "[2001:db8::7]:443/tcp" {
		t.Fatalf("kernel holds %q, want only [2001:db8::7]:443/tcp", got)
	}
	// Control: the same address as an A answer opens it.
	r.up.Set("v4.cdn.example.com", dnstest.Record{A: addrs("198.51.100.7"), TTL: 60})
	if m := r.ask("udp", "v4.cdn.example.com", dns.TypeA); strings.Join(addrsOf(m), ",") != "198.51.100.7" {
		t.Fatalf("A answer %v", m)
	}
	if got := strings.Join(r.inKernel(), " "); got != "198.51.100.7:443/tcp [2001:db8::7]:443/tcp" {
		t.Fatalf("kernel holds %q", got)
	}
}

// A TTL of 0, with min_ttl and linger 0, is held a second: not an element
// that lapses before the client connects (failed before: timeout 0, which
// the kernel adapter raised to 1 ms). A TTL with its top bit set counts as
// 0 (RFC 2181), not as max_ttl (failed before: kept and handed out for
// max_ttl).
func TestProxyTTLFloor(t *testing.T) {
	r := newRig(t, ident{uid: uidWeb, ok: true}, webAllowlist(t, "*.cdn.example.com:443"))
	pol := r.policyWith(webAllowlist(t, "*.cdn.example.com:443"))
	pol.MinTTL, pol.Linger = 0, 0
	r.p.SetPolicy(pol)
	r.up.Set("zero.cdn.example.com", dnstest.Record{A: addrs("198.51.100.7"), TTL: 0})
	r.up.Set("top.cdn.example.com", dnstest.Record{A: addrs("198.51.100.8"), TTL: 1 << 31})
	for _, name := range []string{"zero.cdn.example.com", "top.cdn.example.com"} {
		m := r.ask("udp", name, dns.TypeA)
		if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 || m.Answer[0].Header().Ttl != 0 {
			t.Errorf("%s: answer %v, want one address with TTL 0", name, m)
		}
	}
	es, _ := r.k.ReadProxy()
	if len(es) != 2 {
		t.Fatalf("kernel holds %v", es)
	}
	for _, pe := range es {
		if pe.Timeout != time.Second {
			t.Errorf("%s: kernel keeps it %s, want a second", pe.Element, pe.Timeout)
		}
	}
}

// A CNAME chain longer than the resolver's cap (8), or one that loops, is a
// failure (SERVFAIL) and opens nothing (failed before: 9 links were
// followed, up to 16, and the end's address opened; a loop was answered).
func TestProxyChainCap(t *testing.T) {
	r := newRig(t, ident{uid: uidWeb, ok: true}, webAllowlist(t, "*.cdn.example.com:443"))
	links := func(first, prefix string, n int, end string) {
		prev := first
		for i := 1; i <= n; i++ {
			next := fmt.Sprintf("%s%d.example.net", prefix, i)
			r.up.Set(prev, dnstest.Record{CNAME: next, TTL: 60})
			prev = next
		}
		r.up.Set(prev, dnstest.Record{A: addrs(end), TTL: 60})
	}
	links("long.cdn.example.com", "l", 9, "198.51.100.9")
	links("ok.cdn.example.com", "o", 8, "198.51.100.8")
	r.up.Set("loop.cdn.example.com", dnstest.Record{CNAME: "back.example.net", TTL: 60})
	r.up.Set("back.example.net", dnstest.Record{CNAME: "loop.cdn.example.com", TTL: 60})
	for _, name := range []string{"long.cdn.example.com", "loop.cdn.example.com"} {
		if m := r.ask("udp", name, dns.TypeA); m.Rcode != dns.RcodeServerFailure || len(m.Answer) != 0 {
			t.Errorf("%s: %v, want SERVFAIL", name, m)
		}
	}
	// Control: a chain of 8 is answered.
	if m := r.ask("udp", "ok.cdn.example.com", dns.TypeA); strings.Join(addrsOf(m), ",") != "198.51.100.8" {
		t.Errorf("8-link chain: %v", m)
	}
	if got := strings.Join(r.inKernel(), " "); got != "198.51.100.8:443/tcp" {
		t.Errorf("kernel holds %q, want only the 8-link chain's address", got)
	}
}

// More addresses than max_addresses_per_name: the first ones, in answer
// order; internal ones do not count.
func TestProxyAddressCap(t *testing.T) {
	r := newRig(t, ident{uid: uidWeb, ok: true}, webAllowlist(t, "*.cdn.example.com:443"))
	pol := r.policyWith(webAllowlist(t, "*.cdn.example.com:443"))
	pol.MaxAddrs = 2
	r.p.SetPolicy(pol)
	r.up.Set("many.cdn.example.com", dnstest.Record{A: addrs("10.0.0.1", "198.51.100.3", "198.51.100.1", "198.51.100.2"), TTL: 60})
	m := r.ask("udp", "many.cdn.example.com", dns.TypeA)
	if got := strings.Join(addrsOf(m), ","); got != "198.51.100.3,198.51.100.1" {
		t.Errorf("answer %q, want the first two public addresses", got)
	}
	if got := strings.Join(r.inKernel(), " "); got != "198.51.100.1:443/tcp 198.51.100.3:443/tcp" {
		t.Errorf("kernel holds %q", got)
	}
}

// Only what was asked: records of the type not asked (an A in a AAAA
// answer), of class CHAOS, of another name, or in another section, open
// nothing and are not handed out (failed before: the A record and the
// CHAOS one opened their addresses).
func TestProxyOnlyWhatWasAsked(t *testing.T) {
	r := newRig(t, ident{uid: uidWeb, ok: true}, webAllowlist(t, "*.cdn.example.com:443"))
	r.up.Set("api.cdn.example.com", dnstest.Record{AAAA: addrs("2001:db8::7"), TTL: 60})
	r.up.SetMangle(func(m *dns.Msg) {
		hdr := func(name string, t, class uint16) dns.RR_Header {
			return dns.RR_Header{Name: name, Rrtype: t, Class: class, Ttl: 60}
		}
		m.Answer = append(m.Answer,
			&dns.A{Hdr: hdr("api.cdn.example.com.", dns.TypeA, dns.ClassINET), A: net.ParseIP("198.51.100.7")},
			&dns.AAAA{Hdr: hdr("api.cdn.example.com.", dns.TypeAAAA, dns.ClassCHAOS), AAAA: net.ParseIP("2001:db8::8")},
			&dns.AAAA{Hdr: hdr("other.example.", dns.TypeAAAA, dns.ClassINET), AAAA: net.ParseIP("2001:db8::9")})
		m.Extra = append(m.Extra, &dns.AAAA{Hdr: hdr("api.cdn.example.com.", dns.TypeAAAA, dns.ClassINET), AAAA: net.ParseIP("2001:db8::a")})
	})
	m := r.ask("udp", "api.cdn.example.com", dns.TypeAAAA)
	if got := strings.Join(addrsOf(m), ","); got != "2001:db8::7" || len(m.Extra) != 0 {
		t.Errorf("answer %v: want only 2001:db8::7", m)
	}
	if got := strings.Join(r.inKernel(), " "); got != "[2001:db8::7]:443/tcp" {
		t.Errorf("kernel holds %q, want only [2001:db8::7]:443/tcp", got)
	}
}

// The rebinding filter, as for egressd's own lookups: internal addresses
// (IPv4, IPv6, NAT64 of the metadata service) open nothing unless the
// allowlist opted in with allow_private_answers.
func TestProxyRebinding(t *testing.T) {
	for _, privateOK := range []bool{false, true} {
		t.Run(fmt.Sprint("allow_private_answers=", privateOK), func(t *testing.T) {
			al := webAllowlist(t, "*.cdn.example.com:443")
			al.PrivateOK = privateOK
			r := newRig(t, ident{uid: uidWeb, ok: true}, al)
			r.up.Set("r.cdn.example.com", dnstest.Record{
				A:    addrs("127.0.0.1", "10.0.0.1", "169.254.169.254", "198.51.100.7"),
				AAAA: addrs("64:ff9b::a9fe:a9fe", "fd00::1", "2001:db8::7"), TTL: 60})
			a := r.ask("udp", "r.cdn.example.com", dns.TypeA)
			aaaa := r.ask("udp", "r.cdn.example.com", dns.TypeAAAA)
			got := strings.Join(append(addrsOf(a), addrsOf(aaaa)...), ",")
			want := "198.51.100.7,2001:db8::7"
			if privateOK {
				want = "127.0.0.1,10.0.0.1,169.254.169.254,198.51.100.7,64:ff9b::a9fe:a9fe,fd00::1,2001:db8::7"
			}
			if got != want {
				t.Errorf("answers %s, want %s", got, want)
			}
			if n, w := len(r.inKernel()), strings.Count(want, ",")+1; n != w {
				t.Errorf("kernel holds %v, want %d elements", r.inKernel(), w)
			}
		})
	}
}

// A reply to another question (name, type or class) is no answer: the
// upstream failed, SERVFAIL, nothing opened (failed before for the class:
// answered, its address opened).
func TestProxyReplyToAnotherQuestion(t *testing.T) {
	r := newRig(t, ident{uid: uidWeb, ok: true}, webAllowlist(t, "*.cdn.example.com:443"))
	r.up.Set("api.cdn.example.com", dnstest.Record{A: addrs("198.51.100.7"), TTL: 60})
	for _, mangle := range []func(q *dns.Question){
		func(q *dns.Question) { q.Qclass = dns.ClassCHAOS },
		func(q *dns.Question) { q.Qtype = dns.TypeAAAA },
		func(q *dns.Question) { q.Name = "evil.cdn.example.com." },
	} {
		r.up.SetMangle(func(m *dns.Msg) { mangle(&m.Question[0]) })
		if m := r.ask("udp", "api.cdn.example.com", dns.TypeA); m.Rcode != dns.RcodeServerFailure || len(m.Answer) != 0 {
			t.Errorf("answer %v, want SERVFAIL", m)
		}
	}
	if got := r.inKernel(); len(got) != 0 {
		t.Errorf("kernel holds %v", got)
	}
	// Control: the question answered.
	r.up.SetMangle(nil)
	if m := r.ask("udp", "api.cdn.example.com", dns.TypeA); strings.Join(addrsOf(m), ",") != "198.51.100.7" {
		t.Errorf("answer %v", m)
	}
}
