// Package dnsproxy answers the DNS queries of users with `dns: proxy`.
//
// The kernel redirects every such query (UDP and TCP port 53, to any
// address, IPv4 and IPv6) to the proxy's port on loopback (ruleset's nat
// chain). The proxy learns which uid sent it from the flow's conntrack mark
// (the opener's uid, written by the filter chain), answers only names that
// the uid's allowlist names (exactly or by a wildcard), from the configured
// resolvers, and puts the answer's addresses in the uid's kernel sets before
// the answer is sent back: a connect right after the answer succeeds. Every
// other name is answered REFUSED (dns_unlisted: answer opts out).
package dnsproxy

import (
	"net/netip"
	"strings"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/resolver"
)

// Allowlist is what the proxy needs to know of one dns: proxy allowlist.
type Allowlist struct {
	Name      string
	User      string
	UID       uint32
	Entries   []config.Entry
	Answer    bool // dns_unlisted: answer: unlisted names are answered (their addresses allow nothing)
	Audit     bool // mode: audit: unlisted names are answered and recorded
	PrivateOK bool // allow_private_answers
}

// Match returns the entries that allow the name asked (normalized: lower
// case, no trailing dot): exact names and wildcards. Literals never match.
// A name with an escape (`\.`, `\\`, `\DDD`: a label that holds a dot, a
// backslash or a byte outside the printable) matches nothing: entries are
// matched on the text, and the wire name [x.cdn][example][com], written
// `x\.cdn.example.com`, is a sibling of cdn.example.com, not a name below
// it. No host name has such a label.
func (a *Allowlist) Match(name string) []config.Entry {
	if strings.ContainsRune(name, '\\') {
		return nil
	}
	var out []config.Entry
	for _, e := range a.Entries {
		if e.MatchesName(name) {
			out = append(out, e)
		}
	}
	return out
}

// Policy is everything the proxy answers by; it is replaced as a whole on
// every configuration change.
type Policy struct {
	ByUID     map[uint32]*Allowlist
	Upstreams []netip.AddrPort
	MinTTL    time.Duration
	MaxTTL    time.Duration
	Linger    time.Duration
	MaxAddrs  int // per answer
	// MaxAnswers bounds the live answers (kernel elements) per allowlist;
	// 0 keeps the proxy's default.
	MaxAnswers int
}

// PolicyFrom builds the proxy's policy from a configuration and the uids
// its allowlists' users have now (allowlist name -> uid).
func PolicyFrom(c *config.Config, uids map[string]uint32) *Policy {
	p := &Policy{ByUID: map[uint32]*Allowlist{}, Upstreams: c.Resolvers, MinTTL: c.MinTTL, MaxTTL: c.MaxTTL,
		Linger: c.Linger, MaxAddrs: c.MaxAddressesPerName, MaxAnswers: c.DNSProxyMaxAnswers}
	for _, a := range c.Allowlists {
		uid, ok := uids[a.Name]
		if !ok || a.DNS != config.DNSProxy {
			continue
		}
		p.ByUID[uid] = &Allowlist{Name: a.Name, User: a.User, UID: uid, Entries: a.Entries,
			Answer: a.DNSUnlisted == config.UnlistedAnswer, Audit: a.Mode == config.ModeAudit, PrivateOK: a.AllowPrivateAnswers}
	}
	return p
}

// answers is the policy the proxy reads answers under: the same knobs, and
// so the same rules (resolver.Policy.Admit, Clamp), as egressd's own lookups.
func (p *Policy) answers() resolver.Policy {
	return resolver.Policy{MinTTL: p.MinTTL, MaxTTL: p.MaxTTL, Linger: p.Linger, MaxAddrs: p.MaxAddrs}
}

// Lifetimes: what the kernel keeps for an answer whose records have ttl
// (resolver.Policy.Clamp: min_ttl..max_ttl, at least a second, plus linger),
// and the TTL handed to the service (never longer than max_ttl, so never
// past what the kernel keeps).
func (p *Policy) lifetimes(ttl time.Duration) (keep, hand time.Duration) {
	return p.answers().Clamp(ttl) + p.Linger, min(ttl, p.MaxTTL)
}

// normalize is a question's name as config matches it.
func normalize(qname string) string {
	return strings.TrimSuffix(strings.ToLower(qname), ".")
}
