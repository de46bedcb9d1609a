package config

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// PolicyTest is one destination of an allowlist's tests: that its entries
// must allow (Allow) or must not allow. It is checked from the entries
// alone, with no DNS: a name is allowed by an entry for that name (or a
// wildcard matching it), an address by a literal entry containing it.
type PolicyTest struct {
	Dest  Entry // one host (name or address), one port, a protocol
	Allow bool
}

// tests parses tests: {allow: [...], deny: [...]}.
func (p *parser) tests(v *yaml.Node) []PolicyTest {
	if v.Kind != yaml.MappingNode {
		p.errorf(v, "tests: expected a mapping with allow: and deny: lists of HOST:PORT[/udp]")
		return nil
	}
	var out []PolicyTest
	p.fields(v, []string{"allow", "deny"}, func(key string, k, v *yaml.Node) {
		for _, n := range p.sequence(v, "tests."+key) {
			s, ok := p.scalar(n, "tests."+key)
			if !ok {
				continue
			}
			e, err := ParseEntry(s)
			if err == nil {
				err = testDest(e)
			}
			if err != nil {
				p.errorf(n, "tests.%s: %v", key, err)
				continue
			}
			e.Pos = Pos{File: p.file, Line: n.Line, Col: n.Column}
			out = append(out, PolicyTest{Dest: e, Allow: key == "allow"})
		}
	})
	return out
}

// testDest rejects what is not one destination.
func testDest(e Entry) error {
	switch {
	case e.IsWildcard():
		return fmt.Errorf("%q: a test names one host, not a wildcard", e.Raw)
	case !e.IsName() && e.Prefix.Bits() != e.Prefix.Addr().BitLen():
		return fmt.Errorf("%q: a test names one address, not a prefix", e.Raw)
	case e.PortFrom != e.PortTo:
		return fmt.Errorf("%q: a test names one port, not a range", e.Raw)
	}
	return nil
}

// Allowing returns the first entry of the allowlist that allows dst (one
// host, one port), judged from the entries alone: a name by an entry for
// that name or a wildcard matching it, an address by a literal entry that
// contains it. What names resolve to is not considered.
func (a *Allowlist) Allowing(dst Entry) (Entry, bool) {
	for _, e := range a.Entries {
		if e.Proto != dst.Proto || dst.PortFrom < e.PortFrom || dst.PortFrom > e.PortTo {
			continue
		}
		if dst.IsName() && e.MatchesName(dst.Host) {
			return e, true
		}
		if !dst.IsName() && !e.IsName() && e.Prefix.Contains(dst.Prefix.Addr()) {
			return e, true
		}
	}
	return Entry{}, false
}

// RunTests checks every allowlist's tests against its entries (its own and
// those of its includes); a test that fails is an error at its line.
func RunTests(lists []*Allowlist) error {
	var errs Errors
	for _, a := range lists {
		for _, t := range a.Tests {
			e, allowed := a.Allowing(t.Dest)
			switch {
			case t.Allow && !allowed:
				msg := fmt.Sprintf("tests.allow: %s is not allowed by any entry of allowlist %s", t.Dest.Raw, a.Name)
				if near := a.nearest(t.Dest); near != "" {
					msg += " (entries for the same host: " + near + ")"
				}
				errs = append(errs, &Error{Pos: t.Dest.Pos, Msg: msg, Fix: "add an entry that allows it, or correct the test"})
			case !t.Allow && allowed:
				errs = append(errs, &Error{Pos: t.Dest.Pos, Msg: fmt.Sprintf("tests.deny: %s is allowed by entry %q (%s) of allowlist %s", t.Dest.Raw, e.Raw, e.Pos, a.Name),
					Fix: "narrow or remove that entry, or correct the test"})
			}
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// nearest lists the entries for the test's host with another port or protocol.
func (a *Allowlist) nearest(dst Entry) string {
	var out []string
	for _, e := range a.Entries {
		if (dst.IsName() && e.MatchesName(dst.Host)) || (!dst.IsName() && !e.IsName() && e.Prefix.Contains(dst.Prefix.Addr())) {
			out = append(out, e.Raw)
		}
	}
	return strings.Join(out, ", ")
}
