// Package learn proposes an allowlist from what a service was observed
// doing: the attempts its allowlist denied or, in audit mode, would have
// denied (internal/deny keeps them, across restarts, under the state
// directory). The proposal is YAML that loads as an allowlist as it is, every
// line commented with what was seen, for a person to review.
package learn

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/deny"

	"golang.org/x/net/publicsuffix"
)

type dest struct {
	proto string
	dst   string
	dport uint16
}

type seen struct {
	dest
	names         []string
	count         int
	audited       int
	first, last   time.Time
	coveredBy     string // an entry of the allowlist that allows it now
	notAllowlists bool   // a protocol allowlists cannot name
	viaProxy      bool   // names: what the DNS proxy answered the service with this address
	// Of the proxy's names: several led to the address (proposed as the
	// address, every name listed for review), and those that are no valid
	// entry (listed, escaped, in a comment only).
	ambiguous []string
	invalid   []string
}

// SiblingsForWildcard is how many names under one parent domain, used on
// one port, make learn propose a one-label wildcard (*.parent) instead.
const SiblingsForWildcard = 3

// Propose writes the proposed allowlist for a, from the observations of
// that allowlist last seen at or after since (zero: all).
func Propose(a *config.Allowlist, obs []deny.RecentEntry, since time.Time) string {
	return ProposeDoc(a, deny.RecentDoc{Entries: obs}, since)
}

// ProposeDoc is Propose with the DNS proxy's observations too (dns: proxy):
// an address the service connected to is proposed as the name the proxy
// answered it for; many sibling names as a wildcard; names the proxy
// refused are listed as comments to review.
func ProposeDoc(a *config.Allowlist, doc deny.RecentDoc, since time.Time) string {
	obs := doc.Entries
	// The names the proxy answered with each address, most asked first.
	var resolved []deny.ResolvedEntry
	for _, r := range doc.Resolved {
		if r.Allowlist == a.Name && !r.Last.Before(since) {
			resolved = append(resolved, r)
		}
	}
	// By name, never by count: a service (or an attacker in it) decides how
	// often it asks.
	sort.SliceStable(resolved, func(i, j int) bool { return resolved[i].Name < resolved[j].Name })
	namesOf := map[string][]string{}
	asked := map[string]int{}
	for _, r := range resolved {
		asked[r.Name] += r.Count
		for _, ad := range r.Addrs {
			if !slices.Contains(namesOf[ad], r.Name) {
				namesOf[ad] = append(namesOf[ad], r.Name)
			}
		}
	}
	byDest := map[dest]*seen{}
	binds := map[dest]*seen{} // refused or audited binds (listen:): dst is the local address
	for _, o := range obs {
		if o.Allowlist != a.Name || o.Last.Before(since) {
			continue
		}
		if o.Listen {
			tally(binds, dest{o.Proto, "", o.DPort}, o)
			continue
		}
		s := tally(byDest, dest{o.Proto, o.Dst, o.DPort}, o)
		if len(o.Names) > 0 {
			s.names = o.Names
		}
	}
	var list []*seen
	var total, audited int
	var first, last time.Time
	for _, s := range byDest {
		if len(s.names) == 0 && len(namesOf[s.dst]) > 0 {
			// The proxy's names are the service's choice: only a valid
			// entry is proposed, and only where it is the one name that led
			// to the address.
			var valid []string
			for _, n := range namesOf[s.dst] {
				if validName(n, s.dest) {
					valid = append(valid, n)
				} else {
					s.invalid = append(s.invalid, n)
				}
			}
			s.viaProxy = true
			if len(namesOf[s.dst]) == 1 && len(valid) == 1 {
				s.names = valid
			} else if len(valid) > 0 {
				s.ambiguous = valid
			}
		}
		s.coveredBy = covered(a, s.dest)
		s.notAllowlists = s.proto != "tcp" && s.proto != "udp"
		list = append(list, s)
		total += s.count
		audited += s.audited
		if first.IsZero() || s.first.Before(first) {
			first = s.first
		}
		last = maxTime(last, s.last)
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].count != list[j].count {
			return list[i].count > list[j].count
		}
		return list[i].dest.dst+strconv.Itoa(int(list[i].dport)) < list[j].dest.dst+strconv.Itoa(int(list[j].dport))
	})

	var b strings.Builder
	fmt.Fprintf(&b, "# egressd learn %s: a proposed allowlist, from %d attempts to %d destinations", a.Name, total, len(list))
	if total > 0 {
		fmt.Fprintf(&b, "\n# observed %s to %s (%d denied, %d audited: let through in mode: audit)",
			first.UTC().Format(time.RFC3339), last.UTC().Format(time.RFC3339), total-audited, audited)
	}
	b.WriteString("\n# Review every line before enforcing: an attempt is not a need. Addresses are proposed\n" +
		"# as literals; a name is proposed only where the allowlist's own name, or the DNS proxy's\n" +
		"# answer to the service (dns: proxy), gave the address.\n")
	if a.IsUnit() {
		fmt.Fprintf(&b, "unit: %s\n", strconv.Quote(a.Unit))
	} else {
		fmt.Fprintf(&b, "user: %s\n", strconv.Quote(a.User))
	}
	if a.Mode == config.ModeAudit {
		b.WriteString("mode: audit                    # switch to enforce once reviewed\n")
	}
	if a.DNS != config.DNSResolvers {
		fmt.Fprintf(&b, "dns: %s\n", a.DNS)
	}
	if a.AllowPrivateAnswers {
		b.WriteString("allow_private_answers: true\n")
	}
	if len(a.Includes) > 0 {
		var names []string
		for _, inc := range a.Includes {
			names = append(names, inc.Name)
		}
		fmt.Fprintf(&b, "include: [%s]\n", strings.Join(names, ", "))
	}
	b.WriteString("allow:\n")
	for _, e := range a.Entries {
		if e.Pos.File != a.File {
			continue // from an included list
		}
		fmt.Fprintf(&b, "  - %-40s # already in the allowlist (%s)\n", quote(e.Raw), e.Pos)
	}
	wild := wildcards(list, a)
	done := map[string]bool{}
	for _, s := range list {
		note := fmt.Sprintf("observed %d× (%s), first %s, last %s", s.count, verdicts(s), s.first.UTC().Format(time.RFC3339), s.last.UTC().Format(time.RFC3339))
		if s.viaProxy && len(s.names) > 0 {
			note += ", name from the DNS proxy's answer"
		}
		if len(s.ambiguous) > 0 && s.coveredBy == "" && !s.notAllowlists {
			fmt.Fprintf(&b, "  - %-40s # REVIEW: %s\n", quote(entryFor(s)), note)
			fmt.Fprintf(&b, "  #   reached through %d names, proposed as the address: a name allows whatever it points to later,\n"+
				"  #   and any of them may be the service's own choice. Replace the address by the name it needs:\n", len(s.ambiguous)+len(s.invalid))
			for _, n := range s.ambiguous {
				fmt.Fprintf(&b, "  #   - %-38s # asked %d×\n", quote(nameEntry(n, s.dest)), asked[n])
			}
		}
		var invalid strings.Builder
		for _, n := range s.invalid {
			fmt.Fprintf(&invalid, "  #   %s led to %s; not proposed: not a valid entry (asked %d×)\n", commentText(n), s.dst, asked[n])
		}
		if len(s.ambiguous) > 0 && s.coveredBy == "" && !s.notAllowlists {
			b.WriteString(invalid.String())
			continue
		}
		if w, ok := wild[s]; ok {
			if !done[w.entry] {
				done[w.entry] = true
				fmt.Fprintf(&b, "  - %-40s # %d sibling names used: %s\n", quote(w.entry), len(w.names), commentText(strings.Join(w.names, ", ")))
			}
			fmt.Fprintf(&b, "  #   %s: %s\n", entryFor(s), note)
			continue
		}
		switch {
		case s.notAllowlists:
			fmt.Fprintf(&b, "  # %s to %s: allowlists name tcp and udp only; %s\n", s.proto, s.dst, note)
		case s.coveredBy != "":
			fmt.Fprintf(&b, "  # %s: allowed now by %s; %s\n", entryFor(s), s.coveredBy, note)
		default:
			fmt.Fprintf(&b, "  - %-40s # %s\n", quote(entryFor(s)), note)
		}
		b.WriteString(invalid.String())
	}
	var refused []deny.ResolvedEntry
	for _, r := range resolved {
		if r.Refused > 0 {
			refused = append(refused, r)
		}
	}
	if len(refused) > 0 {
		b.WriteString("  # Names the DNS proxy refused (no entry matches them). Add one only if the service needs it:\n" +
			"  # a name nobody configured may be data smuggled out in DNS questions.\n")
		for _, r := range refused {
			fmt.Fprintf(&b, "  #   %s: refused %d×, last %s\n", commentText(r.Name), r.Refused, r.Last.UTC().Format(time.RFC3339))
		}
	}
	b.WriteString(proposeListen(a, binds))
	return b.String()
}

type wildcard struct {
	entry string
	names []string
}

// wildcards groups attempts whose names (from the proxy) are siblings —
// the same parent domain, protocol and port — into one *.parent entry
// when at least SiblingsForWildcard distinct names share it. Never over a
// top-level domain or another public suffix, and never for an allowlist without dns: proxy (a
// wildcard needs it).
func wildcards(list []*seen, a *config.Allowlist) map[*seen]wildcard {
	out := map[*seen]wildcard{}
	if a.DNS != config.DNSProxy {
		return out
	}
	type group struct {
		names   map[string]bool
		members []*seen
	}
	groups := map[string]*group{}
	for _, s := range list {
		if len(s.names) == 0 || s.coveredBy != "" || s.notAllowlists {
			continue
		}
		_, parent, ok := strings.Cut(s.names[0], ".")
		if !ok || !strings.Contains(parent, ".") || isPublicSuffix(parent) {
			continue
		}
		e := fmt.Sprintf("*.%s:%d", parent, s.dport)
		if s.proto == "udp" {
			e += "/udp"
		}
		g := groups[e]
		if g == nil {
			g = &group{names: map[string]bool{}}
			groups[e] = g
		}
		g.names[s.names[0]] = true
		g.members = append(g.members, s)
	}
	for e, g := range groups {
		if len(g.names) < SiblingsForWildcard {
			continue
		}
		var names []string
		for n := range g.names {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, s := range g.members {
			out[s] = wildcard{entry: e, names: names}
		}
	}
	return out
}

// isPublicSuffix: names under parent are registered by anyone (co.uk,
// github.io, s3.amazonaws.com: the Public Suffix List, ICANN and private
// sections), so *.parent would allow every site under it, an attacker's
// included.
func isPublicSuffix(parent string) bool {
	ps, _ := publicsuffix.PublicSuffix(parent)
	return ps == parent
}

func verdicts(s *seen) string {
	switch {
	case s.audited == 0:
		return "denied"
	case s.audited == s.count:
		return "audited"
	}
	return fmt.Sprintf("%d audited, %d denied", s.audited, s.count-s.audited)
}

// entryFor is the allowlist entry that allows what was seen: the
// allowlist's own name where it answered with the address, or the one name
// the DNS proxy answered it for, else the address.
func entryFor(s *seen) string {
	host := s.dst
	if len(s.names) > 0 {
		return nameEntry(s.names[0], s.dest)
	} else if a, err := netip.ParseAddr(s.dst); err == nil && a.Is6() {
		host = "[" + s.dst + "]"
	}
	return nameEntry(host, s.dest)
}

// nameEntry is the entry for host on d's port and protocol.
func nameEntry(host string, d dest) string {
	e := fmt.Sprintf("%s:%d", host, d.dport)
	if d.proto == "udp" {
		e += "/udp"
	}
	return e
}

// validName reports whether name, on d's port, is an entry the allowlist
// would load: a DNS name by the entry grammar, not a wildcard (a name the
// service asked is never one).
func validName(name string, d dest) bool {
	e, err := config.ParseEntry(nameEntry(name, d))
	return err == nil && e.Resolvable() && e.Host == name
}

// commentText is text for a YAML comment: printable ASCII as it is, anything
// else quoted with Go escapes (a newline would end the comment).
func commentText(s string) string {
	for _, r := range s {
		if r < 0x20 || r >= 0x7f {
			return strconv.QuoteToASCII(s)
		}
	}
	return s
}

// covered names the entry of a that allows d by address now (a literal or
// a CIDR), or "".
func covered(a *config.Allowlist, d dest) string {
	addr, err := netip.ParseAddr(d.dst)
	if err != nil {
		return ""
	}
	for _, e := range a.Entries {
		if e.IsName() || e.Proto.String() != d.proto || d.dport < e.PortFrom || d.dport > e.PortTo {
			continue
		}
		if e.Prefix.Contains(addr) {
			return e.Raw
		}
	}
	return ""
}

// quote writes an entry as YAML: a leading '[' (an IPv6 literal) starts a
// flow sequence, a leading '*' (a wildcard) an alias, unless quoted.
func quote(raw string) string {
	if strings.HasPrefix(raw, "[") || strings.HasPrefix(raw, "*") || strings.ContainsAny(raw, "#:") && strings.Contains(raw, " ") {
		return strconv.Quote(raw)
	}
	return raw
}

// tally adds one observation to what was seen of d: its counts (audited
// apart) and the span from the first to the last time.
func tally(m map[dest]*seen, d dest, o deny.RecentEntry) *seen {
	s := m[d]
	if s == nil {
		s = &seen{dest: d, first: o.First, last: o.Last}
		m[d] = s
	}
	s.count += o.Count
	if o.Audit {
		s.audited += o.Count
	}
	if o.First.Before(s.first) {
		s.first = o.First
	}
	s.last = maxTime(s.last, o.Last)
	return s
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// proposeListen is the listen: key: the allowlist's own entries, then the
// ports its service bound (in audit mode) or tried to, from bind_denied.
// Without a listen: key and nothing observed, listening stays unrestricted.
func proposeListen(a *config.Allowlist, binds map[dest]*seen) string {
	if a.Listen == nil && len(binds) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("listen:\n")
	for _, l := range a.Listen {
		fmt.Fprintf(&b, "  - %-40s # already in the allowlist (%s)\n", l, l.Pos)
	}
	list := make([]*seen, 0, len(binds))
	for _, s := range binds {
		list = append(list, s)
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].proto != list[j].proto {
			return list[i].proto < list[j].proto
		}
		return list[i].dport < list[j].dport
	})
	for _, s := range list {
		entry := fmt.Sprintf("%s:%d", s.proto, s.dport)
		note := fmt.Sprintf("bound %d× (%s), first %s, last %s", s.count, verdicts(s), s.first.UTC().Format(time.RFC3339), s.last.UTC().Format(time.RFC3339))
		if _, ok := a.ListenAllowed(s.proto, s.dport); ok && a.Listen != nil {
			fmt.Fprintf(&b, "  # %s: allowed now; %s\n", entry, note)
			continue
		}
		if s.proto != "tcp" && s.proto != "udp" {
			fmt.Fprintf(&b, "  # %s: listen: names tcp and udp only; %s\n", entry, note)
			continue
		}
		fmt.Fprintf(&b, "  - %-40s # %s\n", entry, note)
	}
	return b.String()
}
