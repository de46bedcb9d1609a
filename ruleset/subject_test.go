package ruleset

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/egressd/egressd/config"
)

// nthOf is the i-th allowlist of kind k in p, to change in place.
func nthOf(t testing.TB, p *Plan, k SubjectKind, i int) *AllowlistPlan {
	t.Helper()
	for j := range p.Allowlists {
		if p.Allowlists[j].Subject.Kind != k {
			continue
		}
		if i == 0 {
			return &p.Allowlists[j]
		}
		i--
	}
	t.Fatalf("the plan has no %s allowlist number %d", k, i)
	return nil
}

// One list of allowlists, each with its subject: a user and a unit of the
// same desired state land on it in name order, each kind keyed by its own id.
func TestRenderSubjects(t *testing.T) {
	e := ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.1/32"), 443, 443)
	p := Render(Desired{Allowlists: []Allowlist{
		{Name: "web", Unit: "web.service", UID: 77, DNS: true, Elements: []Element{e}},
		{Name: "app", UID: 1000, Proxy: true, Audit: true, Elements: []Element{e}},
	}})
	want := []AllowlistPlan{
		{Allowlist: "app", Subject: UserSubject(1000), Proxy: true, Audit: true},
		{Allowlist: "web", Subject: UnitSubject("web.service", 77), DNS: true},
	}
	if len(p.Allowlists) != 2 || p.Allowlists[0] != want[0] || p.Allowlists[1] != want[1] {
		t.Fatalf("allowlists %+v, want %+v", p.Allowlists, want)
	}
	if us, ns := p.Of(SubjectUser), p.Of(SubjectUnit); len(us) != 1 || us[0] != want[0] || len(ns) != 1 || ns[0] != want[1] {
		t.Fatalf("users %+v, units %+v", us, ns)
	}
	if got := UserSubject(1000).String() + "; " + UnitSubject("web.service", 77).String(); got != "uid 1000; unit web.service (key 0x0000004d)" {
		t.Fatalf("subjects print as %q", got)
	}
	if SubjectKind(9).String() != "kind9" {
		t.Fatal(SubjectKind(9).String())
	}
}

// A logical set named for one kind of subject cannot be placed for an
// allowlist of the other kind: its elements would be keyed by a uid where a
// unit key belongs (or the reverse), allowing another subject's traffic.
func TestPlaceElementsKindMismatch(t *testing.T) {
	e := ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.1/32"), 443, 443)
	for _, tc := range []struct {
		set string
		sub Subject
		ok  bool
	}{
		{SetID{Allowlist: "a"}.Name(), UserSubject(1000), true},
		{SetID{Allowlist: "a", Unit: true}.Name(), UnitSubject("a.service", 5), true},
		{SetID{Allowlist: "a", Unit: true}.Name(), UserSubject(1000), false},
		{SetID{Allowlist: "a"}.Name(), UnitSubject("a.service", 5), false},
	} {
		_, err := placeElements(map[string][]Element{tc.set: {e}}, nil, map[string]Subject{"a": tc.sub})
		if (err == nil) != tc.ok {
			t.Errorf("set %s for %s: err %v", tc.set, tc.sub, err)
		}
		if err != nil && !strings.Contains(err.Error(), "restricts a") {
			t.Errorf("set %s for %s: unclear error %v", tc.set, tc.sub, err)
		}
	}
}
