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
		{Name: "web", Subject: UnitSubject("web.service", 77), DNS: true, Elements: []Element{e}},
		{Name: "app", Subject: UserSubject(1000), Proxy: true, Audit: true, Elements: []Element{e}},
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
		{SetID{Allowlist: "a", Kind: SubjectUnit}.Name(), UnitSubject("a.service", 5), true},
		{SetID{Allowlist: "a", Kind: SubjectUnit}.Name(), UserSubject(1000), false},
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

// The names built from a subject's kind are those of the previous versions,
// character for character: state.json's set names, a running daemon's
// kernel sets (a new egressd takes over its table) and the log prefixes
// that log readers match.
func TestSubjectNames(t *testing.T) {
	exact := map[bool]Element{false: ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.1/32"), 443, 443),
		true: ElementFor(config.TCP, netip.MustParsePrefix("2001:db8::1/128"), 443, 443)}
	ranged := map[bool]Element{false: ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.0/24"), 443, 443),
		true: ElementFor(config.TCP, netip.MustParsePrefix("2001:db8::/64"), 443, 443)}
	for _, tc := range []struct {
		id                 SetID
		name, kExact, kRng string
	}{
		{SetID{Allowlist: "web"}, "allow4_web", "allow4", "allow4r"},
		{SetID{Allowlist: "web", V6: true}, "allow6_web", "allow6", "allow6r"},
		{SetID{Allowlist: "web", Kind: SubjectUnit}, "uallow4_web", "uallow4", "uallow4r"},
		{SetID{Allowlist: "web", Kind: SubjectUnit, V6: true}, "uallow6_web", "uallow6", "uallow6r"},
		{SetID{V6: true}, "dns6", "dns6", "dns6r"},
	} {
		if got := tc.id.Name(); got != tc.name {
			t.Errorf("%+v named %q, want %q", tc.id, got, tc.name)
		}
		if back, ok := ParseSetName(tc.name); !ok || back != tc.id {
			t.Errorf("ParseSetName(%q) = %+v, %v", tc.name, back, ok)
		}
		if k, kr := KernelSetName(tc.name, exact[tc.id.V6]), KernelSetName(tc.name, ranged[tc.id.V6]); k != tc.kExact || kr != tc.kRng {
			t.Errorf("%s: kernel sets %s, %s; want %s, %s", tc.name, k, kr, tc.kExact, tc.kRng)
		}
	}
	if SetName4("web") != "allow4_web" || SetName6("web") != "allow6_web" {
		t.Error(SetName4("web"), SetName6("web"))
	}
	for _, bad := range []string{"allow4_", "uallow4_Bad Name", "xallow4_web", "allow5_web"} {
		if id, ok := ParseSetName(bad); ok {
			t.Errorf("ParseSetName(%q) = %+v: a name egressd does not write", bad, id)
		}
	}
	for _, tc := range []struct {
		kind   SubjectKind
		audit  bool
		prefix string
	}{
		{SubjectUser, false, "egressd deny: "},
		{SubjectUser, true, "egressd audit: "},
		{SubjectUnit, false, "egressd unit deny: "},
		{SubjectUnit, true, "egressd unit audit: "},
	} {
		if got := LogPrefixOf(tc.kind, tc.audit, "egressd"); got != tc.prefix {
			t.Errorf("LogPrefixOf(%s, %v) = %q, want %q", tc.kind, tc.audit, got, tc.prefix)
		}
		for _, configured := range []string{"egressd", ""} {
			if k, a, ok := ParseLogPrefix(configured, tc.prefix); !ok || k != tc.kind || a != tc.audit {
				t.Errorf("ParseLogPrefix(%q, %q) = %s, %v, %v", configured, tc.prefix, k, a, ok)
			}
		}
		if _, _, ok := ParseLogPrefix("other", tc.prefix); ok {
			t.Errorf("%q taken for deny_log.prefix other", tc.prefix)
		}
	}
	if LogPrefix("p") != "p deny: " || AuditPrefix("p") != "p audit: " {
		t.Error(LogPrefix("p"), AuditPrefix("p"))
	}
	if _, _, ok := ParseLogPrefix("", "other tool: "); ok {
		t.Error("another tool's prefix taken for egressd's")
	}
	if SubjectIDOf(SubjectUser, 1000, 7) != 1000 || SubjectIDOf(SubjectUnit, 1000, 7) != 7 {
		t.Error("a logged packet's subject id")
	}
}

// The set that lists each kind's subjects is compared with the plan the same
// way: a user dropped behind egressd's back, a user the plan does not have.
func TestSubjectListFindings(t *testing.T) {
	d := Desired{Allowlists: []Allowlist{{Name: "a", Subject: UserSubject(1000)}, {Name: "b", Subject: UserSubject(1001)}}}
	p := Render(d)
	f := &Fake{}
	if err := f.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	f.DropUser(1000)
	fs, err := f.Verify(p)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, x := range fs {
		if x.Kind == "users_differ" && x.Object == kUsers {
			found = x.Detail == `uid 1000 → "", want "a"`
			if !found {
				t.Errorf("detail %q", x.Detail)
			}
		}
	}
	if !found {
		t.Fatalf("no users_differ on users: %+v", fs)
	}
	d.Allowlists = d.Allowlists[:1]
	got := subjectListFindings(Render(d), SubjectUser, map[uint32]string{1000: "a", 1001: "b"})
	if len(got) != 1 || got[0].Detail != `uid 1001 → "b" not in the plan` {
		t.Fatalf("findings %+v", got)
	}
	if subjectListFindings(Render(d), SubjectUnit, nil) != nil {
		t.Fatal("no unit in the plan or the kernel, yet a finding")
	}
}
