package ruleset

import (
	"encoding/binary"
	"net/netip"
	"sort"
	"time"

	"github.com/egressd/egressd/config"
)

// Plan is the rendered kernel state: structure (chains, users, log) plus the
// elements of every set, normalized so that no two elements of a set overlap
// (the kernel's concatenated-interval sets refuse overlaps).
type Plan struct {
	Allowlists []AllowlistPlan      // every allowlist, user or unit (subject.go), sorted by name
	Sets       map[string][]Element // set name -> sorted, non-overlapping elements
	// Until: set name -> when each element of Sets[name] ends (aligned with
	// it; zero: never). A set none of whose elements ends has no entry.
	Until   map[string][]time.Time
	DenyLog config.DenyLog
	// ProxyPort is where protected users' DNS queries are redirected when
	// any allowlist has dns: proxy (the nat chain exists only then).
	ProxyPort uint16
	Cgroups   []Cgroup // cgroup id -> unit allowlist, sorted by id; not part of the structure
	// Inbound: some allowlist has listen:; the inbound chain tags the
	// datagrams of flows the peer opened for bindguard (inboundRules).
	Inbound bool
}

// HasProxy reports whether any allowlist of the plan has dns: proxy.
func (p Plan) HasProxy() bool {
	for _, a := range p.Allowlists {
		if a.Proxy {
			return true
		}
	}
	return false
}

// Render computes the plan for a desired state. It is pure.
func Render(d Desired) Plan { return (&Renderer{}).Render(d) }

// Renderer renders like Render and remembers each allowlist's normalized
// sets, so that a plan of 10,000 allowlists in which one name changed costs
// the normalization of one allowlist, not of all. The sets it returns for an
// unchanged allowlist are the very slices of the previous plan, which lets
// Diff skip them. The zero value is ready; it is not safe for concurrent use.
type Renderer struct {
	memo map[string]rendered
}

type rendered struct {
	fp           elementsPrint
	name4, name6 string
	v4, v6       []Element
	u4, u6       []time.Time
}

// elementsPrint identifies a multiset of elements whatever their order.
type elementsPrint struct {
	n        int
	sum, xor uint64
}

func fingerprint(es []Element, until []time.Time) elementsPrint {
	f := elementsPrint{n: len(es)}
	for i, e := range es {
		h := fnv64(e)
		if until != nil && !until[i].IsZero() {
			h = mix64(h ^ uint64(until[i].UnixNano()))
		}
		f.sum += h
		f.xor ^= h * 0x9e3779b97f4a7c15
	}
	return f
}

func fnv64(e Element) uint64 {
	f, t := e.AddrFrom.As16(), e.AddrTo.As16()
	h := mix64(binary.LittleEndian.Uint64(f[:8]) ^ uint64(e.Proto)<<56)
	h = mix64(h ^ binary.LittleEndian.Uint64(f[8:]))
	h = mix64(h ^ binary.LittleEndian.Uint64(t[:8]))
	h = mix64(h ^ binary.LittleEndian.Uint64(t[8:]))
	v := uint64(e.PortFrom)<<16 | uint64(e.PortTo)
	if e.AddrFrom.Is4() {
		v |= 1 << 40
	}
	return mix64(h ^ v)
}

// mix64 is the splitmix64 finalizer.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// Render computes the plan for a desired state, reusing what it can.
func (r *Renderer) Render(d Desired) Plan {
	p := Plan{Sets: make(map[string][]Element, 2*len(d.Allowlists)+2), DenyLog: d.DenyLog, ProxyPort: d.ProxyPort}
	als := append([]Allowlist(nil), d.Allowlists...)
	sort.Slice(als, func(i, j int) bool { return als[i].Name < als[j].Name })
	memo := make(map[string]rendered, len(als))
	for _, a := range als {
		id := SetID{Allowlist: a.Name, Kind: a.Subject.Kind}
		p.Allowlists = append(p.Allowlists, AllowlistPlan{Allowlist: a.Name, Subject: a.Subject, DNS: a.DNS, Proxy: a.Proxy, Audit: a.Audit, Listen: a.Listen})
		p.Inbound = p.Inbound || a.Listen
		fp := fingerprint(a.Elements, a.Until)
		m, ok := r.memo[a.Name]
		if !ok || m.fp != fp || m.name4 != id.Name() {
			var v4, v6 []Element
			var u4, u6 []time.Time
			for i, e := range a.Elements {
				var u time.Time
				if a.Until != nil {
					u = a.Until[i]
				}
				if e.Is6() {
					v6, u6 = append(v6, e), append(u6, u)
				} else {
					v4, u4 = append(v4, e), append(u4, u)
				}
			}
			id6 := id
			id6.V6 = true
			m = rendered{fp: fp, name4: id.Name(), name6: id6.Name()}
			m.v4, m.u4 = NormalizeTimed(v4, u4)
			m.v6, m.u6 = NormalizeTimed(v6, u6)
		}
		memo[a.Name] = m
		p.Sets[m.name4] = m.v4
		p.Sets[m.name6] = m.v6
		if m.u4 != nil {
			p.setUntil(m.name4, m.u4)
		}
		if m.u6 != nil {
			p.setUntil(m.name6, m.u6)
		}
	}
	r.memo = memo
	var d4, d6 []Element
	for _, r := range d.Resolvers {
		for _, proto := range []config.Proto{config.UDP, config.TCP} {
			e := ElementFor(proto, netip.PrefixFrom(r.Addr(), r.Addr().BitLen()), r.Port(), r.Port())
			if e.Is6() {
				d6 = append(d6, e)
			} else {
				d4 = append(d4, e)
			}
		}
	}
	p.Sets[DNSSet4] = Normalize(d4)
	p.Sets[DNSSet6] = Normalize(d6)
	p.Cgroups = sortedCgroups(d.Cgroups)
	return p
}

func (p *Plan) setUntil(name string, u []time.Time) {
	if p.Until == nil {
		p.Until = map[string][]time.Time{}
	}
	p.Until[name] = u
}

// UntilOf returns when element i of set name ends (zero: never).
func (p Plan) UntilOf(name string, i int) time.Time {
	if u := p.Until[name]; u != nil {
		return u[i]
	}
	return time.Time{}
}

// Elements counts the elements of all sets.
func (p Plan) Elements() int {
	n := 0
	for _, es := range p.Sets {
		n += len(es)
	}
	return n
}

type portRange struct{ from, to uint16 }

// addrRange is an address range with the end of its lifetime (zero: never).
type addrRange struct {
	from, to netip.Addr
	until    time.Time
}

// laterEnd is the lifetime of what two overlapping inputs allow together:
// never ending if either never ends, else the later end.
func laterEnd(a, b time.Time) time.Time {
	if a.IsZero() || b.IsZero() {
		return time.Time{}
	}
	if b.After(a) {
		return b
	}
	return a
}

// Normalize rewrites elements of one family into an equivalent list in which
// no two elements overlap: the port axis is cut at every range boundary, the
// address ranges over each piece are merged, and pieces with equal address
// cover are joined again. Elements that only touch are left apart, so that an
// address added next to another changes one element, not two.
// The cost is O(n log n) plus, per port piece, the ranges that cover it.
func Normalize(elems []Element) []Element {
	out, _ := NormalizeTimed(elems, nil)
	return out
}

// NormalizeTimed is Normalize for elements with lifetimes (until aligned
// with elems, or nil: none ends). An output element lives as long as the
// inputs it merges: forever if one of them is a literal, else the latest
// end; pieces of the port axis are joined only when their lifetimes are
// equal too, so no part of an element outlives the input that allows it.
// That is exact when every element with a lifetime is a single address (as
// DNS answers are): such an address merges only with itself or with a
// range that contains it. The second result is nil when no element ends.
func NormalizeTimed(elems []Element, until []time.Time) ([]Element, []time.Time) {
	if len(elems) == 0 {
		return nil, nil
	}
	if allExact(elems) {
		return normalizeExact(elems, until)
	}
	byProto := map[config.Proto]map[portRange][]addrRange{}
	for i, e := range elems {
		m := byProto[e.Proto]
		if m == nil {
			m = map[portRange][]addrRange{}
			byProto[e.Proto] = m
		}
		pr := portRange{e.PortFrom, e.PortTo}
		ar := addrRange{from: e.AddrFrom, to: e.AddrTo}
		if until != nil {
			ar.until = until[i]
		}
		m[pr] = append(m[pr], ar)
	}
	var out []timedElement
	protos := make([]config.Proto, 0, len(byProto))
	for p := range byProto {
		protos = append(protos, p)
	}
	sort.Slice(protos, func(i, j int) bool { return protos[i] < protos[j] })
	for _, proto := range protos {
		out = append(out, normalizeProto(proto, byProto[proto])...)
	}
	sort.Slice(out, func(i, j int) bool { return lessElement(out[i].e, out[j].e) })
	es := make([]Element, len(out))
	var us []time.Time
	for i, te := range out {
		es[i] = te.e
		if !te.until.IsZero() {
			if us == nil {
				us = make([]time.Time, len(out))
			}
			us[i] = te.until
		}
	}
	return es, us
}

func allExact(es []Element) bool {
	for _, e := range es {
		if !isExact(e) {
			return false
		}
	}
	return true
}

// normalizeExact is NormalizeTimed for exact elements (one address, one
// port: DNS answers on single-port entries, the common case): they overlap
// only when equal, so sorting and merging equal ones is all there is to do.
func normalizeExact(elems []Element, until []time.Time) ([]Element, []time.Time) {
	idx := make([]int, len(elems))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(i, j int) bool { return lessElement(elems[idx[i]], elems[idx[j]]) })
	es := make([]Element, 0, len(elems))
	var us []time.Time
	if until != nil {
		us = make([]time.Time, 0, len(elems))
	}
	timed := false
	for _, i := range idx {
		var u time.Time
		if until != nil {
			u = until[i]
		}
		if n := len(es); n > 0 && es[n-1] == elems[i] {
			if us != nil {
				us[n-1] = laterEnd(us[n-1], u)
			}
			continue
		}
		es = append(es, elems[i])
		if us != nil {
			us = append(us, u)
		}
	}
	for _, u := range us {
		if !u.IsZero() {
			timed = true
			break
		}
	}
	if !timed {
		us = nil
	}
	return es, us
}

type timedElement struct {
	e     Element
	until time.Time
}

func normalizeProto(proto config.Proto, groups map[portRange][]addrRange) []timedElement {
	var out []timedElement
	if len(groups) == 1 { // the common case: every entry on one port range
		for pr, addrs := range groups {
			for _, ar := range mergeAddrs(addrs) {
				out = append(out, timedElement{Element{proto, ar.from, ar.to, pr.from, pr.to}, ar.until})
			}
		}
		return out
	}
	// Cut the port axis at every boundary.
	cuts := map[int]bool{}
	for pr := range groups {
		cuts[int(pr.from)] = true
		cuts[int(pr.to)+1] = true
	}
	points := make([]int, 0, len(cuts))
	for c := range cuts {
		points = append(points, c)
	}
	sort.Ints(points)
	ranges := make([]portRange, 0, len(groups))
	for pr := range groups {
		ranges = append(ranges, pr)
	}
	sort.Slice(ranges, func(i, j int) bool { return ranges[i].from < ranges[j].from })
	type piece struct {
		ports portRange
		addrs []addrRange
	}
	var pieces []piece
	for i := 0; i+1 < len(points); i++ {
		lo, hi := points[i], points[i+1]-1
		var cover []addrRange
		for _, pr := range ranges {
			if int(pr.from) > lo {
				break
			}
			if int(pr.to) >= hi {
				cover = append(cover, groups[pr]...)
			}
		}
		if len(cover) == 0 {
			continue
		}
		merged := mergeAddrs(cover)
		if n := len(pieces); n > 0 && int(pieces[n-1].ports.to)+1 == lo && equalRanges(pieces[n-1].addrs, merged) {
			pieces[n-1].ports.to = uint16(hi)
			continue
		}
		pieces = append(pieces, piece{portRange{uint16(lo), uint16(hi)}, merged})
	}
	for _, pc := range pieces {
		for _, ar := range pc.addrs {
			out = append(out, timedElement{Element{proto, ar.from, ar.to, pc.ports.from, pc.ports.to}, ar.until})
		}
	}
	return out
}

// mergeAddrs sorts address ranges and merges those that overlap; a merged
// range lives as long as its parts together (laterEnd).
func mergeAddrs(in []addrRange) []addrRange {
	rs := append([]addrRange(nil), in...)
	sort.Slice(rs, func(i, j int) bool {
		if c := rs[i].from.Compare(rs[j].from); c != 0 {
			return c < 0
		}
		return rs[i].to.Less(rs[j].to)
	})
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && r.from.Compare(out[n-1].to) <= 0 {
			if r.to.Compare(out[n-1].to) > 0 {
				out[n-1].to = r.to
			}
			out[n-1].until = laterEnd(out[n-1].until, r.until)
			continue
		}
		out = append(out, r)
	}
	return out
}

func equalRanges(a, b []addrRange) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].from != b[i].from || a[i].to != b[i].to || !a[i].until.Equal(b[i].until) {
			return false
		}
	}
	return true
}

func sortElements(es []Element) {
	sort.Slice(es, func(i, j int) bool { return lessElement(es[i], es[j]) })
}

func lessElement(a, b Element) bool {
	if a.Proto != b.Proto {
		return a.Proto < b.Proto
	}
	if c := a.AddrFrom.Compare(b.AddrFrom); c != 0 {
		return c < 0
	}
	if c := a.AddrTo.Compare(b.AddrTo); c != 0 {
		return c < 0
	}
	if a.PortFrom != b.PortFrom {
		return a.PortFrom < b.PortFrom
	}
	return a.PortTo < b.PortTo
}
