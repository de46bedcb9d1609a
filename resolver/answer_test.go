package resolver

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Records for hand-made replies.
func rrA(name, addr string, ttl uint32) dns.RR {
	return &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: net.ParseIP(addr)}
}

func rrAAAA(name, addr string, ttl uint32) dns.RR {
	return &dns.AAAA{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: ttl}, AAAA: net.ParseIP(addr)}
}

func rrCNAME(name, target string, ttl uint32) dns.RR {
	return &dns.CNAME{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: ttl}, Target: target}
}

// chain is n CNAMEs from q.test. (c1.test., …, cn.test.) and an A record of
// the last name.
func chain(n int) []dns.RR {
	var out []dns.RR
	prev := "q.test."
	for i := 1; i <= n; i++ {
		next := fmt.Sprintf("c%d.test.", i)
		out = append(out, rrCNAME(prev, next, 60))
		prev = next
	}
	return append(out, rrA(prev, "198.51.100.7", 60))
}

// The rules by which an answer's records become addresses, each once
// (the DNS proxy's TestProxy* tests show it follows them).
func TestReadReply(t *testing.T) {
	chaos := rrA("q.test.", "198.51.100.8", 60)
	chaos.Header().Class = dns.ClassCHAOS
	for _, c := range []struct {
		name     string
		qtype    uint16
		answer   []dns.RR
		extra    []dns.RR
		rcode    int
		want     []string
		ttl      time.Duration
		negative bool
		chainLen int
		next     string
		err      error
	}{
		{name: "plain A", qtype: dns.TypeA, answer: []dns.RR{rrA("q.test.", "198.51.100.7", 300), rrA("Q.TEST.", "198.51.100.8", 60)},
			want: []string{"198.51.100.7", "198.51.100.8"}, ttl: 60 * time.Second},
		{name: "plain AAAA", qtype: dns.TypeAAAA, answer: []dns.RR{rrAAAA("q.test.", "2001:db8::7", 300)},
			want: []string{"2001:db8::7"}, ttl: 300 * time.Second},
		// An AAAA of ::ffff:198.51.100.7 would open an IPv4 address that no
		// A answer gave: it opens nothing.
		{name: "IPv4-mapped AAAA", qtype: dns.TypeAAAA, answer: []dns.RR{rrAAAA("q.test.", "::ffff:198.51.100.7", 300)},
			negative: true},
		{name: "IPv4-mapped AAAA beside a real one", qtype: dns.TypeAAAA,
			answer: []dns.RR{rrAAAA("q.test.", "::ffff:198.51.100.7", 300), rrAAAA("q.test.", "2001:db8::7", 300)},
			want:   []string{"2001:db8::7"}, ttl: 300 * time.Second},
		// Only the type asked: an A record in a AAAA answer opens nothing, and
		// the reverse.
		{name: "A in a AAAA answer", qtype: dns.TypeAAAA, answer: []dns.RR{rrA("q.test.", "198.51.100.7", 300)}, negative: true},
		{name: "AAAA in an A answer", qtype: dns.TypeA, answer: []dns.RR{rrAAAA("q.test.", "2001:db8::7", 300)}, negative: true},
		{name: "class CHAOS", qtype: dns.TypeA, answer: []dns.RR{chaos}, negative: true},
		// Answers for a name that was not asked, and records in other sections.
		{name: "another name's records", qtype: dns.TypeA,
			answer: []dns.RR{rrA("other.test.", "203.0.113.9", 300), rrA("q.test.", "198.51.100.7", 300)},
			extra:  []dns.RR{rrA("q.test.", "203.0.113.10", 300)},
			want:   []string{"198.51.100.7"}, ttl: 300 * time.Second},
		{name: "only another name's records", qtype: dns.TypeA, answer: []dns.RR{rrA("other.test.", "203.0.113.9", 300)}, negative: true},
		// The CNAME chain: its end's addresses, the minimum TTL over it.
		{name: "chain", qtype: dns.TypeA, answer: []dns.RR{rrCNAME("q.test.", "edge.test.", 30), rrA("edge.test.", "198.51.100.7", 300)},
			want: []string{"198.51.100.7"}, ttl: 30 * time.Second, chainLen: 1},
		{name: "chain of the cap", qtype: dns.TypeA, answer: chain(DefaultMaxChain),
			want: []string{"198.51.100.7"}, ttl: 60 * time.Second, chainLen: DefaultMaxChain},
		{name: "chain past the cap", qtype: dns.TypeA, answer: chain(DefaultMaxChain + 1), err: ErrChainTooLong},
		{name: "loop", qtype: dns.TypeA, answer: []dns.RR{rrCNAME("q.test.", "a.test.", 60), rrCNAME("a.test.", "q.test.", 60)}, err: ErrChainTooLong},
		{name: "self loop", qtype: dns.TypeA, answer: []dns.RR{rrCNAME("q.test.", "q.test.", 60)}, err: ErrChainTooLong},
		{name: "two aliases: the first", qtype: dns.TypeA,
			answer: []dns.RR{rrCNAME("q.test.", "a.test.", 60), rrCNAME("q.test.", "b.test.", 60), rrA("a.test.", "198.51.100.7", 60), rrA("b.test.", "203.0.113.9", 60)},
			want:   []string{"198.51.100.7"}, ttl: 60 * time.Second, chainLen: 1},
		{name: "chain leaves the reply", qtype: dns.TypeA, answer: []dns.RR{rrCNAME("q.test.", "edge.test.", 30)}, ttl: 30 * time.Second, chainLen: 1, next: "edge.test."},
		// TTLs: 0 is 0 (Admit raises it); the top bit set counts as 0, not 68 years.
		{name: "TTL 0", qtype: dns.TypeA, answer: []dns.RR{rrA("q.test.", "198.51.100.7", 0)}, want: []string{"198.51.100.7"}, ttl: 0},
		{name: "TTL top bit", qtype: dns.TypeA, answer: []dns.RR{rrA("q.test.", "198.51.100.7", 1<<31)}, want: []string{"198.51.100.7"}, ttl: 0},
		{name: "TTL 2^31-1", qtype: dns.TypeA, answer: []dns.RR{rrA("q.test.", "198.51.100.7", 1<<31-1)}, want: []string{"198.51.100.7"}, ttl: (1<<31 - 1) * time.Second},
		{name: "NXDOMAIN", qtype: dns.TypeA, rcode: dns.RcodeNameError, negative: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := new(dns.Msg)
			m.SetQuestion("q.test.", c.qtype)
			m.Response, m.Rcode, m.Answer, m.Extra = true, c.rcode, c.answer, c.extra
			res, next, err := ReadReply(m, "q.test.", c.qtype, 0)
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("err = %v, want %v", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !same(res.Addrs, c.want...) || res.Negative != c.negative || len(res.Chain) != c.chainLen || next != c.next {
				t.Errorf("got %v negative %v chain %v next %q; want %v negative %v chain of %d next %q",
					res.Addrs, res.Negative, res.Chain, next, c.want, c.negative, c.chainLen, c.next)
			}
			if !c.negative && res.TTL != c.ttl {
				t.Errorf("TTL %s, want %s", res.TTL, c.ttl)
			}
		})
	}
}

// What an answer's addresses may open, and for how long, under the policy.
func TestPolicyAdmit(t *testing.T) {
	p := Policy{MinTTL: 0, MaxTTL: 10 * time.Minute, MaxAddrs: 2}
	for _, c := range []struct {
		name      string
		res       Result
		privateOK bool
		want      []string
		dropped   int
		ttl       time.Duration
	}{
		// A TTL of 0 with min_ttl 0: held a second, not an element that
		// lapses before the client connects (nor none at all).
		{name: "TTL 0", res: ok(0, "198.51.100.7"), want: []string{"198.51.100.7"}, ttl: time.Second},
		{name: "TTL below a second", res: ok(300*time.Millisecond, "198.51.100.7"), want: []string{"198.51.100.7"}, ttl: time.Second},
		// The longest TTL: max_ttl, never an element that never lapses.
		{name: "TTL 2^31-1 s", res: ok((1<<31-1)*time.Second, "198.51.100.7"), want: []string{"198.51.100.7"}, ttl: 10 * time.Minute},
		// More addresses than the cap: the first ones, in answer order.
		{name: "over the cap", res: ok(time.Minute, "198.51.100.9", "198.51.100.7", "198.51.100.8"), want: []string{"198.51.100.9", "198.51.100.7"}, dropped: 1, ttl: time.Minute},
		// Rebinding: internal addresses do not count against the cap.
		{name: "rebinding", res: ok(time.Minute, "127.0.0.1", "10.0.0.1", "169.254.169.254", "64:ff9b::a9fe:a9fe", "fd00::1", "198.51.100.7"),
			want: []string{"198.51.100.7"}, dropped: 5, ttl: time.Minute},
		{name: "rebinding, allow_private_answers", res: ok(time.Minute, "10.0.0.1", "198.51.100.7"), privateOK: true,
			want: []string{"10.0.0.1", "198.51.100.7"}, ttl: time.Minute},
		{name: "the hosts file, as written", res: Result{Addrs: addrs("10.0.0.1"), TTL: time.Minute, Source: SourceHosts},
			want: []string{"10.0.0.1"}, ttl: time.Minute},
		{name: "negative", res: Result{Negative: true, TTL: 0}, ttl: time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, dropped, ttl := p.Admit(c.res, c.privateOK)
			if !slices.Equal(got, addrs(c.want...)) || dropped != c.dropped || ttl != c.ttl {
				t.Errorf("Admit = %v, %d dropped, %s; want %v, %d, %s", got, dropped, ttl, c.want, c.dropped, c.ttl)
			}
		})
	}
}

// A reply is read only when it answers the question asked: name (any
// case), type and class.
func TestAnswers(t *testing.T) {
	q := dns.Question{Name: "q.test.", Qtype: dns.TypeA, Qclass: dns.ClassINET}
	for _, c := range []struct {
		name string
		qs   []dns.Question
		want bool
	}{
		{"same", []dns.Question{q}, true},
		{"case", []dns.Question{{Name: "Q.TEST.", Qtype: dns.TypeA, Qclass: dns.ClassINET}}, true},
		{"another name", []dns.Question{{Name: "evil.test.", Qtype: dns.TypeA, Qclass: dns.ClassINET}}, false},
		{"not fully qualified", []dns.Question{{Name: "q.test", Qtype: dns.TypeA, Qclass: dns.ClassINET}}, false},
		{"another type", []dns.Question{{Name: "q.test.", Qtype: dns.TypeAAAA, Qclass: dns.ClassINET}}, false},
		{"another class", []dns.Question{{Name: "q.test.", Qtype: dns.TypeA, Qclass: dns.ClassCHAOS}}, false},
		{"none", nil, false},
		{"two", []dns.Question{q, q}, false},
	} {
		m := &dns.Msg{Question: c.qs}
		if got := Answers(m, q); got != c.want {
			t.Errorf("%s: Answers = %v, want %v", c.name, got, c.want)
		}
	}
}

// Addresses are kept once each, in answer order, whether add looks
// through them (a few) or keeps a map (past dedupScan).
func TestResultAddDeduplicates(t *testing.T) {
	for _, n := range []int{3, dedupScan, dedupScan + 1, 3 * dedupScan} {
		var r Result
		var want []netip.Addr
		for i := 0; i < n; i++ {
			a := netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
			want = append(want, a)
			r.add(a)
			r.add(want[i/2]) // an earlier one again
			r.add(a)
		}
		if !slices.Equal(r.Addrs, want) {
			t.Errorf("%d addresses: got %v", n, r.Addrs)
		}
	}
}
