package dnsproxy

import (
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/dnstest"
	"github.com/egressd/egressd/ruleset"
)

// Red team of the proxy's answer handling (issue 23): an attacker who
// controls the answers of a name the allowlist lists (`*.cdn.example.com`)
// shapes the upstream's reply. Whatever the reply, the kernel holds only the
// addresses of the name asked (by its CNAME chain), of the type asked, that
// the rebinding rules admit, and every address the service is handed is one
// the kernel holds.

const rtName = "api.cdn.example.com."

func rrs(t *testing.T, ss ...string) []dns.RR {
	t.Helper()
	var out []dns.RR
	for _, s := range ss {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		out = append(out, rr)
	}
	return out
}

// handedAddrs is every address record in any section of m.
func handedAddrs(m *dns.Msg) []string {
	var out []string
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if a, ok := rrAddr(rr); ok {
				out = append(out, a.String())
			}
		}
	}
	slices.Sort(out)
	return out
}

func TestRedteamAnswerShapes(t *testing.T) {
	type shape struct {
		name   string
		qtype  uint16
		mangle func(t *testing.T, m *dns.Msg)
		kernel []string // elements the kernel must hold after, exactly
		handed []string // addresses the service is handed, exactly
		rcode  int
		tcp    bool // asked over TCP (the answer is larger than 512 bytes)
	}
	answer := func(ss ...string) func(t *testing.T, m *dns.Msg) {
		return func(t *testing.T, m *dns.Msg) { m.Answer = rrs(t, ss...); m.Ns, m.Extra = nil, m.Extra[:0] }
	}
	for _, c := range []shape{
		{name: "control", qtype: dns.TypeA, mangle: answer(rtName + " 60 IN A 198.51.100.1"),
			kernel: []string{"198.51.100.1:443/tcp"}, handed: []string{"198.51.100.1"}},
		{name: "CNAME that branches: the second branch opens nothing", qtype: dns.TypeA, mangle: answer(
			rtName+" 60 IN CNAME e1.edge.example.net.", rtName+" 60 IN CNAME e2.edge.example.net.",
			"e1.edge.example.net. 60 IN A 198.51.100.1", "e2.edge.example.net. 60 IN A 198.51.100.2"),
			kernel: []string{"198.51.100.1:443/tcp"}, handed: []string{"198.51.100.1"}},
		{name: "CNAME that branches, first branch dead", qtype: dns.TypeA, mangle: answer(
			rtName+" 60 IN CNAME dead.example.net.", rtName+" 60 IN CNAME e1.edge.example.net.",
			"e1.edge.example.net. 60 IN A 198.51.100.1")},
		{name: "CNAME loop through case variants", qtype: dns.TypeA, mangle: answer(
			rtName+" 60 IN CNAME E1.Edge.Example.NET.", "e1.edge.example.net. 60 IN CNAME API.CDN.EXAMPLE.COM.",
			"e1.edge.example.net. 60 IN A 198.51.100.1"),
			kernel: []string{"198.51.100.1:443/tcp"}, handed: []string{"198.51.100.1"}},
		{name: "pure CNAME loop through case variants", qtype: dns.TypeA, mangle: answer(
			rtName+" 60 IN CNAME E1.Edge.Example.NET.", "e1.edge.example.net. 60 IN CNAME API.CDN.EXAMPLE.COM."),
			rcode: dns.RcodeServerFailure},
		{name: "A for the name asked after a CNAME for it", qtype: dns.TypeA, mangle: answer(
			rtName+" 60 IN CNAME e1.edge.example.net.", "e1.edge.example.net. 60 IN A 198.51.100.1",
			rtName+" 60 IN A 198.51.100.2"),
			kernel: []string{"198.51.100.2:443/tcp"}, handed: []string{"198.51.100.2"}},
		{name: "addresses in the authority and additional sections", qtype: dns.TypeA, mangle: func(t *testing.T, m *dns.Msg) {
			m.Answer = rrs(t, rtName+" 60 IN A 198.51.100.1")
			m.Ns = rrs(t, rtName+" 60 IN A 198.51.100.3", "cdn.example.com. 60 IN NS ns.cdn.example.com.")
			m.Extra = append(m.Extra, rrs(t, "ns.cdn.example.com. 60 IN A 198.51.100.4", "ns.cdn.example.com. 60 IN AAAA 2001:db8::4")...)
		}, kernel: []string{"198.51.100.1:443/tcp"}, handed: []string{"198.51.100.1"}},
		{name: "wildcard-looking owner", qtype: dns.TypeA, mangle: answer("*.cdn.example.com. 60 IN A 198.51.100.5")},
		{name: "escaped owners", qtype: dns.TypeA, mangle: answer(`api\.cdn.example.com. 60 IN A 198.51.100.6`,
			`api\046cdn.example.com. 60 IN A 198.51.100.6`, `api.cdn.example.com\000. 60 IN A 198.51.100.6`,
			`api.cdn\.example.com. 60 IN A 198.51.100.6`)},
		{name: "owner with a trailing extra label", qtype: dns.TypeA, mangle: answer("api.cdn.example.com.evil.example.net. 60 IN A 198.51.100.6")},
		{name: "DNAME without its synthesized CNAME", qtype: dns.TypeA, mangle: answer(
			"cdn.example.com. 60 IN DNAME evil.example.net.", "api.evil.example.net. 60 IN A 198.51.100.7")},
		{name: "NXDOMAIN with answers attached", qtype: dns.TypeA, mangle: func(t *testing.T, m *dns.Msg) {
			m.Rcode = dns.RcodeNameError
			m.Answer = rrs(t, rtName+" 60 IN A 198.51.100.8")
		}, rcode: dns.RcodeNameError},
		{name: "records of class CH, ANY, NONE", qtype: dns.TypeA, mangle: answer(
			rtName+" 60 CH A 198.51.100.9", rtName+" 60 CLASS255 A 198.51.100.9", rtName+" 60 CLASS254 A 198.51.100.9")},
		{name: "A records in an ANY answer", qtype: dns.TypeANY, mangle: answer(rtName + " 60 IN A 198.51.100.10")},
		{name: "A records in a type-0 answer", qtype: 0, mangle: answer(rtName + " 60 IN A 198.51.100.10")},
		{name: "A records in an HTTPS answer", qtype: dns.TypeHTTPS, mangle: answer(rtName + " 60 IN A 198.51.100.10")},
		{name: "AAAA that embed an internal IPv4 address", qtype: dns.TypeAAAA, mangle: answer(
			rtName+" 60 IN AAAA ::a9fe:a9fe", rtName+" 60 IN AAAA ::ffff:a9fe:a9fe", rtName+" 60 IN AAAA 64:ff9b::a9fe:a9fe",
			rtName+" 60 IN AAAA 64:ff9b:1::a9fe:a9fe", rtName+" 60 IN AAAA 2002:a9fe:a9fe::1",
			rtName+" 60 IN AAAA 2001:0:4136:e378:8000:63bf:5601:5601", rtName+" 60 IN AAAA ::1",
			rtName+" 60 IN AAAA fd00:ec2::254", rtName+" 60 IN AAAA fe80::1", rtName+" 60 IN AAAA 2001:db8::11"),
			kernel: []string{"[2001:db8::11]:443/tcp"}, handed: []string{"2001:db8::11"}},
		{name: "addresses the IANA registry marks not globally reachable", qtype: dns.TypeA, mangle: answer(
			rtName+" 60 IN A 192.0.0.192", rtName+" 60 IN A 198.18.0.1", rtName+" 60 IN A 240.0.0.1",
			rtName+" 60 IN A 192.0.2.12"),
			kernel: []string{"192.0.2.12:443/tcp"}, handed: []string{"192.0.2.12"}},
		{name: "site-local and IPv4-translated AAAA", qtype: dns.TypeAAAA, mangle: answer(
			rtName+" 60 IN AAAA fec0::1", rtName+" 60 IN AAAA 64:ff9b::c000:c0", rtName+" 60 IN AAAA 2001:db8::11"),
			kernel: []string{"[2001:db8::11]:443/tcp"}, handed: []string{"2001:db8::11"}},
		{name: "the address cap with duplicates and internal addresses", qtype: dns.TypeA, mangle: func(t *testing.T, m *dns.Msg) {
			m.Answer = nil
			for i := 0; i < 300; i++ { // duplicates count once, internal ones not at all
				m.Answer = append(m.Answer, rrs(t, rtName+" 60 IN A 10.0.0.1", rtName+" 60 IN A 198.51.100.1")...)
			}
			m.Answer = append(m.Answer, rrs(t, rtName+" 60 IN A 198.51.100.2")...)
		}, kernel: []string{"198.51.100.1:443/tcp", "198.51.100.2:443/tcp"}, handed: append(slices.Repeat([]string{"198.51.100.1"}, 300), "198.51.100.2"), tcp: true},
		{name: "question section emptied", qtype: dns.TypeA, mangle: func(t *testing.T, m *dns.Msg) {
			m.Question = nil
			m.Answer = rrs(t, rtName+" 60 IN A 198.51.100.1")
		}, rcode: dns.RcodeServerFailure},
		{name: "two questions", qtype: dns.TypeA, mangle: func(t *testing.T, m *dns.Msg) {
			m.Question = append(m.Question, dns.Question{Name: "evil.example.net.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
			m.Answer = rrs(t, "evil.example.net. 60 IN A 198.51.100.1")
		}, rcode: dns.RcodeServerFailure},
		{name: "question in another spelling", qtype: dns.TypeA, mangle: func(t *testing.T, m *dns.Msg) {
			m.Question[0].Name = `api\.cdn.example.com.`
			m.Answer = rrs(t, `api\.cdn.example.com. 60 IN A 198.51.100.1`)
		}, rcode: dns.RcodeServerFailure},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, ident{uid: uidWeb, ok: true}, webAllowlist(t, "*.cdn.example.com:443"))
			r.up.Set(rtName, dnstest.Record{A: addrs("198.51.100.1"), AAAA: addrs("2001:db8::1"), TTL: 60})
			probe := new(dns.Msg)
			probe.SetQuestion(rtName, c.qtype)
			c.mangle(t, probe) // its records parse (a Fatal in the server's goroutine would hang it)
			r.up.SetMangle(func(m *dns.Msg) { c.mangle(t, m) })
			network := "udp"
			if c.tcp {
				network = "tcp"
			}
			m := r.ask(network, rtName, c.qtype)
			if m.Rcode != c.rcode {
				t.Errorf("rcode %s, want %s", dns.RcodeToString[m.Rcode], dns.RcodeToString[c.rcode])
			}
			if got := r.inKernel(); !slices.Equal(got, c.kernel) {
				t.Errorf("kernel holds %v, want %v", got, c.kernel)
			}
			if got := handedAddrs(m); !slices.Equal(got, c.handed) {
				t.Errorf("service handed %v, want %v\n%v", got, c.handed, m)
			}
		})
	}
}

// TTLs at the edges of their range: what the kernel keeps, and what the
// service is handed for every record of the chain, is the chain's minimum,
// with the top bit counting as 0.
func TestRedteamTTLEdges(t *testing.T) {
	for _, c := range []struct {
		cname, a uint32
		hand     uint32
		keep     time.Duration
	}{
		{cname: 4294967295, a: 3600, hand: 0, keep: 5*time.Second + 5*time.Minute},
		{cname: 2147483648, a: 3600, hand: 0, keep: 5*time.Second + 5*time.Minute},
		{cname: 2147483647, a: 2147483647, hand: 600, keep: 10*time.Minute + 5*time.Minute},
		{cname: 3600, a: 1, hand: 1, keep: 5*time.Second + 5*time.Minute},
		{cname: 0, a: 3600, hand: 0, keep: 5*time.Second + 5*time.Minute},
	} {
		r := newRig(t, ident{uid: uidWeb, ok: true}, webAllowlist(t, "*.cdn.example.com:443"))
		r.up.Set(rtName, dnstest.Record{A: addrs("198.51.100.1"), TTL: 60})
		r.up.SetMangle(func(m *dns.Msg) {
			m.Answer = rrs(t, rtName+" 0 IN CNAME e1.edge.example.net.", "e1.edge.example.net. 0 IN A 198.51.100.1",
				rtName+" 0 IN CNAME e2.edge.example.net.") // a second branch, TTL as the first link's
			m.Answer[0].Header().Ttl, m.Answer[1].Header().Ttl, m.Answer[2].Header().Ttl = c.cname, c.a, c.cname
		})
		m := r.ask("udp", rtName, dns.TypeA)
		for _, rr := range m.Answer {
			if rr.Header().Ttl > c.hand {
				t.Errorf("CNAME %d, A %d: handed %v, want TTL at most %d", c.cname, c.a, rr, c.hand)
			}
		}
		es, _ := r.k.ReadProxy()
		if len(es) != 1 || es[0].Timeout != c.keep {
			t.Errorf("CNAME %d, A %d: kernel holds %v, want one element kept %s", c.cname, c.a, es, c.keep)
		}
	}
}

// A reply under another ID is no answer (over TCP miekg's client refuses
// it; over UDP the proxy waits for the real one until its timeout).
func TestRedteamReplyIDMismatch(t *testing.T) {
	for _, network := range []string{"udp", "tcp"} {
		r := newRig(t, ident{uid: uidWeb, ok: true}, webAllowlist(t, "*.cdn.example.com:443"))
		r.up.Set(rtName, dnstest.Record{A: addrs("198.51.100.1"), TTL: 60})
		r.up.SetMangle(func(m *dns.Msg) { m.Id++ })
		if m := r.ask(network, rtName, dns.TypeA); m.Rcode != dns.RcodeServerFailure || len(m.Answer) != 0 {
			t.Errorf("%s: answer %v, want SERVFAIL", network, m)
		}
		if got := r.inKernel(); len(got) != 0 {
			t.Errorf("%s: kernel holds %v", network, got)
		}
	}
}

// The reply codes egressd's own lookups refuse (anything but NOERROR and
// NXDOMAIN) open nothing through the proxy either: the next upstream is
// asked, then SERVFAIL (failed before: the address records of a FORMERR,
// NOTIMP, YXDOMAIN or NOTAUTH reply were put in the kernel and handed on).
func TestRedteamRcodes(t *testing.T) {
	for _, rc := range []int{dns.RcodeFormatError, dns.RcodeNotImplemented, dns.RcodeYXDomain, dns.RcodeNotAuth} {
		r := newRig(t, ident{uid: uidWeb, ok: true}, webAllowlist(t, "*.cdn.example.com:443"))
		r.up.Set(rtName, dnstest.Record{A: addrs("198.51.100.1"), TTL: 60})
		r.up.SetMangle(func(m *dns.Msg) { m.Rcode = rc })
		m := r.ask("udp", rtName, dns.TypeA)
		if got := r.inKernel(); len(got) != 0 || len(handedAddrs(m)) != 0 || m.Rcode != dns.RcodeServerFailure {
			t.Errorf("rcode %s: kernel holds %v, handed %v, want SERVFAIL and nothing", dns.RcodeToString[rc], got, m)
		}
	}
}

// A truncated UDP reply is never used, as in egressd's own lookups: the
// proxy asks again over TCP and admits that answer; the service, over UDP,
// is handed what fits in its buffer, all of it in the kernel, marked
// truncated (failed before: the truncated reply's own address, which the
// full answer does not give, was put in the kernel and handed on).
func TestRedteamTruncatedReply(t *testing.T) {
	r := newRig(t, ident{uid: uidWeb, ok: true}, webAllowlist(t, "*.cdn.example.com:443"))
	var many []netip.Addr
	for i := 1; i <= 40; i++ {
		many = append(many, netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}))
	}
	r.up.Set(rtName, dnstest.Record{A: many, TTL: 60})
	r.up.SetMangle(func(m *dns.Msg) {
		if m.Truncated { // the UDP reply (the test server truncates to 512 bytes)
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: rtName, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A: net.IPv4(203, 0, 113, 66)}}
		}
	})
	m := r.ask("udp", rtName, dns.TypeA)
	kernel := r.inKernel()
	if slices.Contains(kernel, "203.0.113.66:443/tcp") || len(kernel) != len(many) {
		t.Fatalf("kernel holds %d elements %v, want the %d addresses of the TCP answer", len(kernel), kernel, len(many))
	}
	if !m.Truncated || len(m.Answer) == 0 {
		t.Errorf("UDP answer not truncated or empty: %v", m)
	}
	for _, a := range handedAddrs(m) {
		if !slices.Contains(kernel, a+":443/tcp") {
			t.Errorf("handed %s, which the kernel does not hold", a)
		}
	}
	// Control: over TCP the service gets the whole answer.
	if m := r.ask("tcp", rtName, dns.TypeA); len(m.Answer) != len(many) || m.Truncated {
		t.Errorf("TCP answer has %d records (truncated %v), want %d", len(m.Answer), m.Truncated, len(many))
	}
}

// The service's own queries, as it likes to write them: names that spell a
// listed name in another way are refused (or answered as that name, never
// as another); classes and types other than IN A/AAAA open nothing.
func TestRedteamQueries(t *testing.T) {
	r := newRig(t, ident{uid: uidWeb, ok: true}, webAllowlist(t, "*.cdn.example.com:443"))
	r.up.Set("*.cdn.example.com", dnstest.Record{A: addrs("198.51.100.1"), TTL: 60})
	r.up.SetMangle(func(m *dns.Msg) {
		// The upstream answers whatever class was asked with address records of that class.
		for _, rr := range m.Answer {
			rr.Header().Class = m.Question[0].Qclass
		}
	})
	for _, c := range []struct {
		name   string
		qtype  uint16
		qclass uint16
		rcode  int
		handed int
	}{
		{name: `api\000.cdn.example.com.`, qtype: dns.TypeA, qclass: dns.ClassINET, rcode: dns.RcodeRefused},
		{name: `api\046cdn.example.com.`, qtype: dns.TypeA, qclass: dns.ClassINET, rcode: dns.RcodeRefused},
		{name: `caf\195\169.cdn.example.com.`, qtype: dns.TypeA, qclass: dns.ClassINET, rcode: dns.RcodeRefused},
		{name: `a.b.cdn.example.com.`, qtype: dns.TypeA, qclass: dns.ClassINET, rcode: dns.RcodeRefused},
		{name: `cdn.example.com.`, qtype: dns.TypeA, qclass: dns.ClassINET, rcode: dns.RcodeRefused},
		{name: `cdn.example.com.evil.example.net.`, qtype: dns.TypeA, qclass: dns.ClassINET, rcode: dns.RcodeRefused},
		{name: `API.CDN.Example.COM.`, qtype: dns.TypeA, qclass: dns.ClassINET, handed: 1},
		{name: `xn--caf-dma.cdn.example.com.`, qtype: dns.TypeA, qclass: dns.ClassINET, handed: 1},
		{name: rtName, qtype: dns.TypeA, qclass: dns.ClassCHAOS},
		{name: rtName, qtype: dns.TypeA, qclass: dns.ClassNONE},
		{name: rtName, qtype: dns.TypeANY, qclass: dns.ClassINET},
	} {
		q := new(dns.Msg)
		q.SetQuestion(c.name, c.qtype)
		q.Question[0].Qclass = c.qclass
		m, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(q, r.addr)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if m.Rcode != c.rcode || len(handedAddrs(m)) != c.handed {
			t.Errorf("%s %s %s: %s with %v, want %s with %d addresses", c.name, dns.ClassToString[c.qclass], dns.TypeToString[c.qtype],
				dns.RcodeToString[m.Rcode], handedAddrs(m), dns.RcodeToString[c.rcode], c.handed)
		}
	}
	if got := r.inKernel(); !slices.Equal(got, []string{"198.51.100.1:443/tcp"}) {
		t.Errorf("kernel holds %v, want only the listed names' 198.51.100.1:443/tcp", got)
	}
}

// Garbage, responses and messages the parser must refuse (a compression
// pointer to itself, a header alone, a length prefix with nothing after it
// over TCP) get no answer and do not stop the proxy: the next query is
// answered.
func TestRedteamMalformedQueries(t *testing.T) {
	r := newRig(t, ident{uid: uidWeb, ok: true}, webAllowlist(t, "*.cdn.example.com:443"))
	r.up.Set(rtName, dnstest.Record{A: addrs("198.51.100.1"), TTL: 60})
	hdr := []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
	loop := append(append([]byte(nil), hdr...), 0xc0, 12, 0, 1, 0, 1) // the name points at itself
	resp := append([]byte(nil), loop...)
	resp[2] |= 0x80
	u, err := net.Dial("udp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	for _, b := range [][]byte{loop, hdr[:5], hdr, resp, make([]byte, 4000)} {
		u.Write(b) //nolint:errcheck
	}
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte{0xff, 0xff, 1, 2}) //nolint:errcheck
	c.Close()
	if m := r.ask("udp", rtName, dns.TypeA); !slices.Equal(handedAddrs(m), []string{"198.51.100.1"}) {
		t.Errorf("after garbage: %v", m)
	}
	if m := r.ask("tcp", rtName, dns.TypeA); !slices.Equal(handedAddrs(m), []string{"198.51.100.1"}) {
		t.Errorf("after garbage, over TCP: %v", m)
	}
}

// An answer with TTL 0 for an address the kernel is about to drop renews
// it: the kernel holds every handed address a second at least (the TTL
// floor), not until the element it happened to find lapses (failed before:
// the answer was handed 1 ms before its element lapsed, and not written).
func TestRedteamTTLZeroNearExpiry(t *testing.T) {
	r := newRig(t, ident{uid: uidWeb, ok: true}, webAllowlist(t, "*.cdn.example.com:443"))
	pol := r.policyWith(webAllowlist(t, "*.cdn.example.com:443"))
	pol.MinTTL, pol.Linger = 0, 0
	r.p.SetPolicy(pol)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	r.p.w.mu.Lock()
	r.p.w.now = func() time.Time { return time.Unix(0, now.Load()) }
	r.p.w.mu.Unlock()
	r.up.Set(rtName, dnstest.Record{A: addrs("198.51.100.1"), TTL: 0})
	r.ask("udp", rtName, dns.TypeA)
	if n := r.k.Calls(ruleset.FakeAddProxy); n != 1 {
		t.Fatalf("%d kernel writes for the first answer, want 1", n)
	}
	now.Add(int64(999 * time.Millisecond)) // the element (kept 1 s) has 1 ms left
	r.ask("udp", rtName, dns.TypeA)
	if n := r.k.Calls(ruleset.FakeAddProxy); n != 2 {
		t.Errorf("%d kernel writes, want 2: the answer was handed with its element 1 ms from lapsing", n)
	}
	// Control: an answer while the element has most of its second left is
	// not written again.
	r.ask("udp", rtName, dns.TypeA)
	if n := r.k.Calls(ruleset.FakeAddProxy); n != 2 {
		t.Errorf("%d kernel writes, want 2 (held long enough already)", n)
	}
}
