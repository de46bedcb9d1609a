// Package learn proposes an allowlist from what a service was observed
// doing: the attempts its allowlist denied or, in audit mode, would have
// denied (internal/deny keeps them, across restarts, under the state
// directory). The proposal is YAML that loads as an allowlist as it is, every
// line commented with what was seen, for a person to review.
package learn

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/deny"
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
}

// Propose writes the proposed allowlist for a, from the observations of
// that allowlist last seen at or after since (zero: all).
func Propose(a *config.Allowlist, obs []deny.RecentEntry, since time.Time) string {
	byDest := map[dest]*seen{}
	for _, o := range obs {
		if o.Allowlist != a.Name || o.Last.Before(since) {
			continue
		}
		d := dest{o.Proto, o.Dst, o.DPort}
		s := byDest[d]
		if s == nil {
			s = &seen{dest: d, first: o.First, last: o.Last}
			byDest[d] = s
		}
		s.count += o.Count
		if o.Audit {
			s.audited += o.Count
		}
		if o.First.Before(s.first) {
			s.first = o.First
		}
		if o.Last.After(s.last) {
			s.last = o.Last
		}
		if len(o.Names) > 0 {
			s.names = o.Names
		}
	}
	var list []*seen
	var total, audited int
	var first, last time.Time
	for _, s := range byDest {
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
		"# as literals; a name is proposed only where the allowlist's own name answered with it.\n")
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
	for _, s := range list {
		note := fmt.Sprintf("observed %d× (%s), first %s, last %s", s.count, verdicts(s), s.first.UTC().Format(time.RFC3339), s.last.UTC().Format(time.RFC3339))
		switch {
		case s.notAllowlists:
			fmt.Fprintf(&b, "  # %s to %s: allowlists name tcp and udp only; %s\n", s.proto, s.dst, note)
		case s.coveredBy != "":
			fmt.Fprintf(&b, "  # %s: allowed now by %s; %s\n", entryFor(s), s.coveredBy, note)
		default:
			fmt.Fprintf(&b, "  - %-40s # %s\n", quote(entryFor(s)), note)
		}
	}
	return b.String()
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
// allowlist's own name where it answered with the address, else the address.
func entryFor(s *seen) string {
	host := s.dst
	if len(s.names) > 0 {
		host = s.names[0]
	} else if a, err := netip.ParseAddr(s.dst); err == nil && a.Is6() {
		host = "[" + s.dst + "]"
	}
	e := fmt.Sprintf("%s:%d", host, s.dport)
	if s.proto == "udp" {
		e += "/udp"
	}
	return e
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
// flow sequence unless quoted.
func quote(raw string) string {
	if strings.HasPrefix(raw, "[") || strings.ContainsAny(raw, "#:") && strings.Contains(raw, " ") {
		return strconv.Quote(raw)
	}
	return raw
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
