package ruleset

import (
	"fmt"
	"math/rand"
	"net/netip"
	"reflect"
	"testing"

	"github.com/egressd/egressd/config"
)

func el(proto config.Proto, from, to string, pf, pt uint16) Element {
	return Element{proto, netip.MustParseAddr(from), netip.MustParseAddr(to), pf, pt}
}

func TestElementFor(t *testing.T) {
	e := ElementFor(config.TCP, netip.MustParsePrefix("198.51.100.0/24"), 8000, 8100)
	if e != el(config.TCP, "198.51.100.0", "198.51.100.255", 8000, 8100) {
		t.Fatalf("got %v", e)
	}
	e = ElementFor(config.UDP, netip.MustParsePrefix("2001:db8::/32"), 53, 53)
	if e.AddrTo != netip.MustParseAddr("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff") || e.String() != "[2001:db8::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:53/udp" {
		t.Fatalf("got %v", e)
	}
}

func TestNormalize(t *testing.T) {
	tcp, udp := config.TCP, config.UDP
	tests := []struct {
		name string
		in   []Element
		want []Element
	}{
		{"duplicate", []Element{el(tcp, "192.0.2.1", "192.0.2.1", 443, 443), el(tcp, "192.0.2.1", "192.0.2.1", 443, 443)},
			[]Element{el(tcp, "192.0.2.1", "192.0.2.1", 443, 443)}},
		{"address inside CIDR", []Element{el(tcp, "198.51.100.0", "198.51.100.255", 443, 443), el(tcp, "198.51.100.7", "198.51.100.7", 443, 443)},
			[]Element{el(tcp, "198.51.100.0", "198.51.100.255", 443, 443)}},
		{"adjacent addresses stay apart", []Element{el(tcp, "192.0.2.2", "192.0.2.2", 443, 443), el(tcp, "192.0.2.1", "192.0.2.1", 443, 443)},
			[]Element{el(tcp, "192.0.2.1", "192.0.2.1", 443, 443), el(tcp, "192.0.2.2", "192.0.2.2", 443, 443)}},
		{"protocols apart", []Element{el(udp, "192.0.2.1", "192.0.2.1", 53, 53), el(tcp, "192.0.2.1", "192.0.2.1", 53, 53)},
			[]Element{el(tcp, "192.0.2.1", "192.0.2.1", 53, 53), el(udp, "192.0.2.1", "192.0.2.1", 53, 53)}},
		{"port inside range", []Element{el(tcp, "192.0.2.1", "192.0.2.1", 8000, 8100), el(tcp, "192.0.2.1", "192.0.2.1", 8080, 8080)},
			[]Element{el(tcp, "192.0.2.1", "192.0.2.1", 8000, 8100)}},
		{"partial overlap on both axes", []Element{el(tcp, "192.0.2.0", "192.0.2.255", 80, 90), el(tcp, "192.0.2.5", "192.0.2.5", 85, 95)},
			[]Element{el(tcp, "192.0.2.0", "192.0.2.255", 80, 90), el(tcp, "192.0.2.5", "192.0.2.5", 91, 95)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Normalize(tt.in)
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
			}
		})
	}
}

// covers reports whether any element allows (proto, addr, port).
func covers(es []Element, proto config.Proto, a netip.Addr, port uint16) bool {
	for _, e := range es {
		if e.Proto == proto && e.AddrFrom.Compare(a) <= 0 && a.Compare(e.AddrTo) <= 0 && e.PortFrom <= port && port <= e.PortTo {
			return true
		}
	}
	return false
}

// Normalize must allow exactly what its input allows, with no overlaps.
func TestNormalizeEquivalentRandom(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for round := 0; round < 200; round++ {
		var in []Element
		for i := 0; i < 1+rng.Intn(12); i++ {
			a := byte(rng.Intn(16))
			b := a + byte(rng.Intn(4))
			p := uint16(1 + rng.Intn(10))
			q := p + uint16(rng.Intn(5))
			proto := config.TCP
			if rng.Intn(3) == 0 {
				proto = config.UDP
			}
			in = append(in, Element{proto, netip.AddrFrom4([4]byte{192, 0, 2, a}), netip.AddrFrom4([4]byte{192, 0, 2, b}), p, q})
		}
		out := Normalize(in)
		for i := range out {
			for j := i + 1; j < len(out); j++ {
				x, y := out[i], out[j]
				if x.Proto == y.Proto && x.AddrFrom.Compare(y.AddrTo) <= 0 && y.AddrFrom.Compare(x.AddrTo) <= 0 && x.PortFrom <= y.PortTo && y.PortFrom <= x.PortTo {
					t.Fatalf("round %d: %v and %v overlap (input %v)", round, x, y, in)
				}
			}
		}
		for _, proto := range []config.Proto{config.TCP, config.UDP} {
			for a := 0; a < 24; a++ {
				for p := uint16(0); p < 18; p++ {
					addr := netip.AddrFrom4([4]byte{192, 0, 2, byte(a)})
					if covers(in, proto, addr, p) != covers(out, proto, addr, p) {
						t.Fatalf("round %d: %s %v:%d differs (input %v, output %v)", round, proto, addr, p, in, out)
					}
				}
			}
		}
	}
}

func TestRenderAndDiff(t *testing.T) {
	d := Desired{
		Allowlists: []Allowlist{
			{Name: "web", Subject: UserSubject(1002), DNS: false, Elements: []Element{el(config.TCP, "2001:db8::1", "2001:db8::1", 443, 443)}},
			{Name: "billing", Subject: UserSubject(1001), DNS: true, Elements: []Element{el(config.TCP, "192.0.2.1", "192.0.2.1", 3306, 3306)}},
		},
		Resolvers: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53")},
		DenyLog:   config.Defaults().DenyLog,
	}
	p := Render(d)
	if len(p.Allowlists) != 2 || p.Allowlists[0].Allowlist != "billing" || p.Allowlists[1].Subject != UserSubject(1002) {
		t.Fatalf("allowlists = %+v", p.Allowlists)
	}
	if len(p.Sets[SetName4("billing")]) != 1 || len(p.Sets[SetName6("web")]) != 1 || len(p.Sets[DNSSet4]) != 2 || len(p.Sets[DNSSet6]) != 0 {
		t.Fatalf("sets = %v", p.Sets)
	}
	if p.Elements() != 4 {
		t.Fatalf("Elements() = %d", p.Elements())
	}

	d2 := d
	d2.Allowlists = []Allowlist{d.Allowlists[0], {Name: "billing", Subject: UserSubject(1001), DNS: true, Elements: []Element{el(config.TCP, "192.0.2.2", "192.0.2.2", 3306, 3306)}}}
	p2 := Render(d2)
	if !SameStructure(p, p2) {
		t.Fatal("element-only change reported as structural")
	}
	delta := Diff(p, p2)
	sd := delta[SetName4("billing")]
	if len(delta) != 1 || len(sd.Add) != 1 || len(sd.Del) != 1 || sd.Add[0].AddrFrom.String() != "192.0.2.2" {
		t.Fatalf("delta = %+v", delta)
	}
	var f Fake
	if err := f.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	if err := f.ApplyDelta(p2, delta); err != nil {
		t.Fatal(err)
	}
	if got := f.Plan.Sets[SetName4("billing")]; len(got) != 1 || got[0] != p2.Sets[SetName4("billing")][0] {
		t.Fatalf("fake after delta = %v", got)
	}

	d3 := d2
	d3.Allowlists = d2.Allowlists[:1]
	if SameStructure(p2, Render(d3)) {
		t.Fatal("removing an allowlist reported as element-only")
	}
	d4 := d2
	d4.DenyLog.Mode = config.LogKernel
	if SameStructure(p2, Render(d4)) {
		t.Fatal("changing the log mode reported as element-only")
	}
	for _, id := range []SetID{{}, {V6: true}, {Allowlist: "billing"}, {Allowlist: "allow4_x", V6: true}, {Allowlist: "web", Kind: SubjectUnit}, {Allowlist: "allow4_x", Kind: SubjectUnit, V6: true}} {
		if got, ok := ParseSetName(id.Name()); !ok || got != id {
			t.Errorf("ParseSetName(%q) = %+v, %v; want %+v", id.Name(), got, ok, id)
		}
	}
	if _, ok := ParseSetName("exact_allow4_x"); ok {
		t.Error("a name egressd does not write parsed")
	}
}

func BenchmarkRender100k(b *testing.B) {
	var als []Allowlist
	for i := 0; i < 100; i++ {
		a := Allowlist{Name: "al" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Subject: UserSubject(uint32(2000 + i))}
		for j := 0; j < 1000; j++ {
			n := i*1000 + j
			a.Elements = append(a.Elements, ElementFor(config.TCP, netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(n >> 8), byte(n)}), 32), 443, 443))
		}
		als = append(als, a)
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		Render(Desired{Allowlists: als})
	}
}

// A Renderer gives the same plans as Render, whatever changed between calls,
// and Diff between its consecutive plans is the true difference.
func TestRendererMatchesRender(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	var d Desired
	for i := 0; i < 50; i++ {
		a := Allowlist{Name: fmt.Sprintf("al%02d", i), Subject: UserSubject(uint32(1000 + i))}
		for j := 0; j < 1+rng.Intn(5); j++ {
			a.Elements = append(a.Elements, el(config.TCP, fmt.Sprintf("192.0.2.%d", rng.Intn(256)), fmt.Sprintf("192.0.2.%d", rng.Intn(256)), 443, 443))
		}
		d.Allowlists = append(d.Allowlists, a)
	}
	var r Renderer
	prev := r.Render(d)
	for round := 0; round < 200; round++ {
		i := rng.Intn(len(d.Allowlists))
		es := append([]Element(nil), d.Allowlists[i].Elements...)
		switch rng.Intn(3) {
		case 0:
			es = append(es, el(config.UDP, "2001:db8::1", "2001:db8::1", uint16(rng.Intn(100)), 100))
		case 1:
			if len(es) > 0 {
				es = es[1:]
			}
		case 2:
			if len(es) > 0 {
				es[0].PortFrom = uint16(rng.Intn(443))
			}
		}
		d.Allowlists[i].Elements = es
		got, want := r.Render(d), Render(d)
		if !reflect.DeepEqual(normalizeNil(got), normalizeNil(want)) {
			t.Fatalf("round %d: renderer plan differs from Render", round)
		}
		if !reflect.DeepEqual(normalizeNil(applyDelta(prev, Diff(prev, got))), normalizeNil(want)) {
			t.Fatalf("round %d: Diff between renderer plans is not the difference", round)
		}
		prev = got
	}
}

func normalizeNil(p Plan) Plan {
	q := Plan{Allowlists: p.Allowlists, DenyLog: p.DenyLog, Sets: map[string][]Element{}}
	for n, es := range p.Sets {
		if len(es) > 0 {
			q.Sets[n] = es
		}
	}
	return q
}

func applyDelta(p Plan, d Delta) Plan {
	f := &Fake{Plan: Plan{Allowlists: p.Allowlists, DenyLog: p.DenyLog, Sets: map[string][]Element{}}}
	for n, es := range p.Sets {
		f.Plan.Sets[n] = append([]Element(nil), es...)
	}
	f.ApplyDelta(p, d) //nolint:errcheck
	return f.Plan
}
