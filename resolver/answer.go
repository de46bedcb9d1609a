package resolver

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// This file is the one home of "a DNS answer → the addresses it may open and
// for how long", for egressd's own lookups (Client, Cache) and for the DNS
// proxy's answers alike (docs/security.md, "DNS answers: one set of rules").

// DefaultMaxChain is the longest CNAME chain an answer may have; a longer
// one, or one that loops, is a failure (ErrChainTooLong), not an answer.
const DefaultMaxChain = 8

// ReadReply reads one reply to the question (qname, qtype) by the rules
// Client.Query reads its replies by, without asking anything further:
//   - only the chain of CNAMEs from qname counts: records of other names
//     (answers for a name that was not asked) and of other sections are
//     ignored;
//   - only address records of the type asked, class IN, count: an A record
//     in a AAAA answer, or an IPv4-mapped AAAA (::ffff:0:0/96), opens
//     nothing (the latter would open an IPv4 address that no A answer gave);
//   - the chain is at most maxChain CNAMEs (DefaultMaxChain when 0) and
//     does not loop, or the reply is an error (ErrChainTooLong);
//   - TTL is the minimum over the chain (a TTL with its top bit set counts
//     as 0, RFC 2181 §8).
//
// next is the chain's last name when the reply ends the chain without
// records for it (Client.Query asks for it; the proxy hands on what it got).
// What the addresses may open, and for how long, is Policy.Admit.
func ReadReply(msg *dns.Msg, qname string, qtype uint16, maxChain int) (res Result, next string, err error) {
	if maxChain <= 0 {
		maxChain = DefaultMaxChain
	}
	res.TTL = -1
	next, err = walk(msg, dns.Fqdn(strings.ToLower(qname)), qtype, &res, maxChain)
	if err != nil {
		return Result{}, "", fmt.Errorf("%s: %w", qname, err)
	}
	if res.TTL < 0 {
		res.TTL = 0
	}
	res.seen = nil
	return res, next, nil
}

// Answers reports whether reply r answers question q: one question, the
// same name (in any case), type and class. Any other reply is ignored, as a
// possible spoof: its records are for a question nobody asked.
func Answers(r *dns.Msg, q dns.Question) bool {
	if len(r.Question) != 1 {
		return false
	}
	rq := r.Question[0]
	return dns.IsFqdn(rq.Name) && strings.EqualFold(rq.Name, dns.Fqdn(q.Name)) && rq.Qtype == q.Qtype && rq.Qclass == q.Qclass
}

// Admit is an answer under the policy: the addresses it may open (the
// rebinding filter, then at most MaxAddrs, in answer order; see
// FilterAnswer), how many it refused, and how long the answer holds (its TTL
// clamped, Clamp). Every path that turns an answer into allowed addresses
// (the cache, the DNS proxy) goes through it.
func (p Policy) Admit(res Result, privateOK bool) (addrs []netip.Addr, dropped int, ttl time.Duration) {
	ttl = p.Clamp(res.TTL)
	if res.Negative {
		return nil, 0, ttl
	}
	addrs, dropped = FilterAnswer(res, privateOK, p.MaxAddrs)
	return addrs, dropped, ttl
}

// ttlOf is a record's TTL; one with the top bit set counts as 0 (RFC 2181
// §8), not as 68 years.
func ttlOf(ttl uint32) time.Duration {
	if ttl > 1<<31-1 {
		return 0
	}
	return time.Duration(ttl) * time.Second
}

// walk follows the CNAME chain from qname inside one reply, collecting
// addresses and the minimum TTL into res. It returns a CNAME target to ask for
// when the reply ends the chain without an answer for it.
func walk(msg *dns.Msg, qname string, qtype uint16, res *Result, maxChain int) (string, error) {
	minTTL := func(d time.Duration) {
		if res.TTL < 0 || d < res.TTL {
			res.TTL = d
		}
	}
	if msg.Rcode == dns.RcodeNameError {
		res.Negative, res.NXDomain = true, true
		minTTL(negativeTTL(msg))
		return "", nil
	}
	cur := qname
	for {
		var next string
		found := false
		for _, rr := range msg.Answer {
			h := rr.Header()
			if !strings.EqualFold(h.Name, cur) || h.Class != dns.ClassINET {
				continue
			}
			switch v := rr.(type) {
			case *dns.CNAME:
				if next == "" { // one alias per name; a second one is ignored
					next = strings.ToLower(v.Target)
					minTTL(ttlOf(h.Ttl))
				}
			case *dns.A:
				if qtype == dns.TypeA {
					if a, ok := netip.AddrFromSlice(v.A.To4()); ok {
						res.add(a)
						minTTL(ttlOf(h.Ttl))
						found = true
					}
				}
			case *dns.AAAA:
				if qtype == dns.TypeAAAA {
					if a, ok := netip.AddrFromSlice(v.AAAA.To16()); ok && !a.Is4In6() {
						res.add(a)
						minTTL(ttlOf(h.Ttl))
						found = true
					}
				}
			}
		}
		if found || next == "" {
			if !found && len(res.Addrs) == 0 {
				res.Negative = true // NODATA
				minTTL(negativeTTL(msg))
			}
			return "", nil
		}
		if len(res.Chain) >= maxChain {
			return "", ErrChainTooLong
		}
		for _, c := range res.Chain {
			if c == next {
				return "", fmt.Errorf("%w (loop at %s)", ErrChainTooLong, next)
			}
		}
		res.Chain = append(res.Chain, next)
		cur = next
		if !hasOwner(msg, cur) {
			return cur, nil
		}
	}
}

func hasOwner(msg *dns.Msg, name string) bool {
	for _, rr := range msg.Answer {
		if strings.EqualFold(rr.Header().Name, name) {
			return true
		}
	}
	return false
}

// negativeTTL is how long a negative answer may be cached (RFC 2308: the
// minimum of the SOA's TTL and its MINIMUM field); 0 when there is no SOA,
// which Clamp raises to min_ttl.
func negativeTTL(msg *dns.Msg) time.Duration {
	for _, rr := range msg.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return min(ttlOf(soa.Hdr.Ttl), ttlOf(soa.Minttl))
		}
	}
	return 0
}
