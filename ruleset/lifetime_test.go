package ruleset

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/egressd/egressd/config"
)

// An output element lives as long as what allows it, never longer: a
// literal that covers a timed address makes it permanent (the literal
// allows it anyway), a timed address inside a literal's port range splits
// the range where their lifetimes differ, and two names giving the same
// address keep the later end.
func TestNormalizeTimed(t *testing.T) {
	tcp := config.TCP
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	t1, t2 := t0.Add(time.Minute), t0.Add(2*time.Minute)
	var never time.Time
	tests := []struct {
		name      string
		in        []Element
		until     []time.Time
		want      []Element
		wantUntil []time.Time
	}{
		{"literal only", []Element{el(tcp, "192.0.2.1", "192.0.2.1", 443, 443)}, []time.Time{never},
			[]Element{el(tcp, "192.0.2.1", "192.0.2.1", 443, 443)}, nil},
		{"same address from two names: the later end", []Element{el(tcp, "192.0.2.1", "192.0.2.1", 443, 443), el(tcp, "192.0.2.1", "192.0.2.1", 443, 443)}, []time.Time{t2, t1},
			[]Element{el(tcp, "192.0.2.1", "192.0.2.1", 443, 443)}, []time.Time{t2}},
		{"timed address inside a literal CIDR: permanent", []Element{el(tcp, "198.51.100.0", "198.51.100.255", 443, 443), el(tcp, "198.51.100.7", "198.51.100.7", 443, 443)}, []time.Time{never, t1},
			[]Element{el(tcp, "198.51.100.0", "198.51.100.255", 443, 443)}, nil},
		{"timed and literal addresses apart", []Element{el(tcp, "192.0.2.1", "192.0.2.1", 443, 443), el(tcp, "192.0.2.2", "192.0.2.2", 443, 443)}, []time.Time{never, t1},
			[]Element{el(tcp, "192.0.2.1", "192.0.2.1", 443, 443), el(tcp, "192.0.2.2", "192.0.2.2", 443, 443)}, []time.Time{never, t1}},
		// A name on a port range and a literal on one port of it, same
		// address: the range must not become permanent.
		{"timed port range around a literal port", []Element{el(tcp, "192.0.2.1", "192.0.2.1", 8000, 8100), el(tcp, "192.0.2.1", "192.0.2.1", 8080, 8080)}, []time.Time{t1, never},
			[]Element{el(tcp, "192.0.2.1", "192.0.2.1", 8000, 8079), el(tcp, "192.0.2.1", "192.0.2.1", 8080, 8080), el(tcp, "192.0.2.1", "192.0.2.1", 8081, 8100)},
			[]time.Time{t1, never, t1}},
		{"two names, nested port ranges, different ends", []Element{el(tcp, "192.0.2.1", "192.0.2.1", 8000, 8100), el(tcp, "192.0.2.1", "192.0.2.1", 8080, 8080)}, []time.Time{t1, t2},
			[]Element{el(tcp, "192.0.2.1", "192.0.2.1", 8000, 8079), el(tcp, "192.0.2.1", "192.0.2.1", 8080, 8080), el(tcp, "192.0.2.1", "192.0.2.1", 8081, 8100)},
			[]time.Time{t1, t2, t1}},
		{"two names, nested port ranges, same end: one element", []Element{el(tcp, "192.0.2.1", "192.0.2.1", 8000, 8100), el(tcp, "192.0.2.1", "192.0.2.1", 8080, 8080)}, []time.Time{t1, t1},
			[]Element{el(tcp, "192.0.2.1", "192.0.2.1", 8000, 8100)}, []time.Time{t1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, gotUntil := NormalizeTimed(tt.in, tt.until)
			if !reflect.DeepEqual(got, tt.want) || !reflect.DeepEqual(gotUntil, tt.wantUntil) {
				t.Fatalf("got %v %v, want %v %v", got, gotUntil, tt.want, tt.wantUntil)
			}
		})
	}
}

func TestDiffTimed(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	a := ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.1/32"), 443, 443)
	b := ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.2/32"), 443, 443)
	c := ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.3/32"), 443, 443)
	lit := ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.4/32"), 443, 443)
	plan := func(until map[Element]time.Time, es ...Element) Plan {
		al := Allowlist{Name: "a", Subject: UserSubject(1000), Elements: es, Until: make([]time.Time, len(es))}
		for i, e := range es {
			al.Until[i] = until[e]
		}
		return Render(Desired{Allowlists: []Allowlist{al}})
	}
	old := plan(map[Element]time.Time{a: t0, b: t0, c: t0}, a, b, c, lit)
	// a renewed, b shortened (a negative answer), c gone, lit unchanged,
	// then a literal that becomes a name's address.
	next := plan(map[Element]time.Time{a: t0.Add(time.Minute), b: t0.Add(-time.Second), lit: t0}, a, b, lit)
	d := Diff(old, next)[SetName4("a")]
	want := SetDelta{
		Add: []Element{b, lit}, AddUntil: []time.Time{t0.Add(-time.Second), t0},
		Del: []Element{b, lit, c}, DelEnding: []bool{true, false, true},
		Renew: []Element{a}, RenewUntil: []time.Time{t0.Add(time.Minute)},
	}
	if !reflect.DeepEqual(d, want) {
		t.Fatalf("got %+v\nwant %+v", d, want)
	}
	if len(Diff(next, plan(map[Element]time.Time{a: t0.Add(time.Minute), b: t0.Add(-time.Second), lit: t0}, a, b, lit))) != 0 {
		t.Fatal("equal lifetimes differ")
	}
}

// Verify does not call an element drift that the kernel ran out moments
// before the daemon drops it; one that should have lived on is.
func TestVerifyExpiring(t *testing.T) {
	now := time.Now()
	a := ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.1/32"), 443, 443)
	b := ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.2/32"), 443, 443)
	p := Render(Desired{Allowlists: []Allowlist{{Name: "a", Subject: UserSubject(1000), Elements: []Element{a, b},
		Until: []time.Time{now.Add(time.Second), now.Add(time.Minute)}}}})
	fs := elementFindings(p, map[string][]Element{}, now)
	if len(fs) != 1 || fs[0].Kind != "element_missing" || fs[0].Detail != "1 missing: 192.0.2.2:443/tcp" {
		t.Fatalf("findings %v", fs)
	}
}
