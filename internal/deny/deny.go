// Package deny turns packets logged by the kernel's deny rules into bounded
// structured events: the first packet of each (allowlist, uid, protocol,
// destination, port) in a window is an event at once; the rest of the window
// becomes one summary event carrying their count.
//
// Guarantee, per window: at most two events per key, at most MaxKeys keys,
// and beyond that one deny_overflow event per allowlist with a count. The
// kernel's per-allowlist rate limit (deny_log.rate) bounds the packets that
// reach the daemon in the first place; exact per-allowlist totals come from
// the kernel's reject counters (the egressd_denied_packets_total metric).
package deny

import (
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/nflog"
	"github.com/egressd/egressd/ruleset"
)

// Event is one deny event, or the summary of several.
type Event struct {
	Allowlist string
	User      string // as the allowlist writes it ("" for a unit allowlist)
	Unit      string // a unit allowlist's unit (docs/units.md)
	UID       uint32
	Proto     string
	Src       netip.Addr
	Dst       netip.Addr
	DPort     uint16
	Names     []string // the allowlist's own names whose current or lingering addresses include Dst
	Count     int      // packets this event stands for
	Summary   bool     // a window's summary (the packets after the first)
	Audit     bool     // mode: audit: the packet was logged, then let through
	Bind      bool     // a refused bind or listen (listen:): Dst and DPort are the local address and port
	First     time.Time
	Last      time.Time
}

// UnitLookup is implemented by Lookups that know unit allowlists: which
// allowlist and unit a unit key (a unit deny's packet mark) stands for.
type UnitLookup interface {
	UnitOf(key uint32) (allowlist, unit string, ok bool)
}

// CgroupLookup is implemented by Lookups that know restricted units'
// cgroups: which unit allowlist and unit a cgroup id (a refused bind's) is of.
type CgroupLookup interface {
	CgroupOf(id uint64) (allowlist, unit string, ok bool)
}

// Overflow counts packets of keys beyond MaxKeys in a window.
type Overflow struct {
	Allowlist string
	Count     int
}

// Lookup gives the context a packet lacks. Implementations are safe for
// concurrent use.
type Lookup interface {
	AllowlistOf(uid uint32) (string, bool)
	User(allowlist string) (string, bool)
	NamesFor(allowlist string, a netip.Addr) []string
}

type key struct {
	allowlist string
	uid       uint32
	proto     uint8
	dst       netip.Addr
	dport     uint16
	audit     bool
	bind      bool
}

type entry struct {
	first Event
	count int // packets after the first
	last  time.Time
	src   netip.Addr
}

// Aggregator is safe for concurrent use.
type Aggregator struct {
	// Record, when set, is called for every packet taken (count 1), outside
	// the window's aggregation: the live view of `egressd denies`.
	Record  func(Event)
	MaxKeys int
	Prefix  string // deny_log.prefix; empty: any prefix egressd's form ends with
	lookup  Lookup
	emit    func(Event)
	over    func(Overflow)

	mu       sync.Mutex
	keys     map[key]*entry
	overflow map[string]int
}

// New returns an aggregator that calls emit for events and over for overflow.
func New(lookup Lookup, emit func(Event), over func(Overflow)) *Aggregator {
	return newAggregator(lookup, "", emit, over)
}

func newAggregator(lookup Lookup, prefix string, emit func(Event), over func(Overflow)) *Aggregator {
	return &Aggregator{MaxKeys: 1024, Prefix: prefix, lookup: lookup, emit: emit, over: over, keys: map[key]*entry{}, overflow: map[string]int{}}
}

// Add takes one logged packet. Packets whose prefix egressd did not write,
// or whose uid no allowlist restricts, are ignored (another tool may share
// the group). The kernel's one deny rule serves every protected user: the
// packet's socket uid says which allowlist refused it.
func (a *Aggregator) Add(p nflog.Packet) bool {
	// The prefix says whose rule logged the packet (and whether in audit
	// mode); the packet carries that subject's id.
	kind, audit, ours := ruleset.ParseLogPrefix(a.Prefix, p.Prefix)
	var name, unit string
	var ok bool
	switch {
	case !ours:
		return false
	case kind == ruleset.SubjectUnit:
		// A unit's deny: the packet's mark is the unit key; any uid.
		ul, isUL := a.lookup.(UnitLookup)
		if !isUL {
			return false
		}
		if name, unit, ok = ul.UnitOf(ruleset.SubjectIDOf(kind, p.UID, p.Mark)); !ok {
			return false
		}
	case !p.HasUID:
		return false
	default:
		if name, ok = a.lookup.AllowlistOf(p.UID); !ok {
			return false
		}
	}
	k := key{allowlist: name, uid: p.UID, proto: p.Proto, dst: p.Dst, dport: p.DPort, audit: audit}
	a.mu.Lock()
	if e, ok := a.keys[k]; ok {
		e.count++
		e.last = p.Time
		e.src = p.Src
		ev := e.first
		a.mu.Unlock()
		a.record(ev, p.Time, p.Src)
		return true
	}
	if len(a.keys) >= a.MaxKeys {
		a.overflow[name]++
		a.mu.Unlock()
		user, _ := a.lookup.User(name)
		a.record(Event{Allowlist: name, User: user, Unit: unit, UID: p.UID, Proto: protoName(p.Proto), Dst: p.Dst, DPort: p.DPort, Audit: audit}, p.Time, p.Src)
		return true
	}
	user, _ := a.lookup.User(name)
	ev := Event{Allowlist: name, User: user, Unit: unit, UID: p.UID, Proto: protoName(p.Proto), Src: p.Src, Dst: p.Dst, DPort: p.DPort,
		Names: a.lookup.NamesFor(name, p.Dst), Count: 1, First: p.Time, Last: p.Time, Audit: audit}
	a.keys[k] = &entry{first: ev, last: p.Time}
	a.mu.Unlock()
	a.emit(ev)
	a.record(ev, p.Time, p.Src)
	return true
}

// Bind is one bind or listen the kernel refused (or audited) because the
// allowlist's listen: does not list its port (internal/bindguard).
type Bind struct {
	UID   uint32
	Proto uint8
	Addr  netip.Addr // the local address bound (unspecified: any)
	Port  uint16
	Audit bool
	Time  time.Time
	// Cgroup is the restricted unit's cgroup whose rule refused it (0: the
	// uid's allowlist did).
	Cgroup uint64
}

// AddBind takes one refused bind, bounded like denied packets: per window,
// the first of each (allowlist, uid, proto, address, port) is an event, the
// rest one summary. Binds of uids no allowlist restricts are ignored.
func (a *Aggregator) AddBind(b Bind) (allowlist string, ok bool) {
	var name, unit, user string
	if b.Cgroup != 0 {
		cl, isCL := a.lookup.(CgroupLookup)
		if !isCL {
			return "", false
		}
		if name, unit, ok = cl.CgroupOf(b.Cgroup); !ok {
			return "", false
		}
	} else {
		if name, ok = a.lookup.AllowlistOf(b.UID); !ok {
			return "", false
		}
		user, _ = a.lookup.User(name)
	}
	k := key{allowlist: name, uid: b.UID, proto: b.Proto, dst: b.Addr, dport: b.Port, audit: b.Audit, bind: true}
	a.mu.Lock()
	if e, ok := a.keys[k]; ok {
		e.count++
		e.last = b.Time
		ev := e.first
		a.mu.Unlock()
		a.record(ev, b.Time, netip.Addr{})
		return name, true
	}
	ev := Event{Allowlist: name, User: user, Unit: unit, UID: b.UID, Proto: protoName(b.Proto), Dst: b.Addr, DPort: b.Port,
		Count: 1, First: b.Time, Last: b.Time, Audit: b.Audit, Bind: true}
	if len(a.keys) >= a.MaxKeys {
		a.overflow[name]++
		a.mu.Unlock()
		a.record(ev, b.Time, netip.Addr{})
		return name, true
	}
	a.keys[k] = &entry{first: ev, last: b.Time}
	a.mu.Unlock()
	a.emit(ev)
	a.record(ev, b.Time, netip.Addr{})
	return name, true
}

// record passes one packet (or bind), as an event of count 1, to Record.
func (a *Aggregator) record(ev Event, t time.Time, src netip.Addr) {
	if a.Record == nil {
		return
	}
	ev.Count, ev.Summary, ev.First, ev.Last, ev.Src = 1, false, t, t, src
	a.Record(ev)
}

// Flush ends the window: one summary per key that saw more than one packet,
// one overflow report per allowlist that overflowed. Then a new window begins.
func (a *Aggregator) Flush() {
	a.mu.Lock()
	keys, overflow := a.keys, a.overflow
	a.keys, a.overflow = map[key]*entry{}, map[string]int{}
	a.mu.Unlock()
	var sums []Event
	for _, e := range keys {
		if e.count == 0 {
			continue
		}
		s := e.first
		s.Summary, s.Count, s.Last, s.Src = true, e.count, e.last, e.src
		sums = append(sums, s)
	}
	sort.Slice(sums, func(i, j int) bool { return sums[i].First.Before(sums[j].First) })
	for _, s := range sums {
		a.emit(s)
	}
	names := make([]string, 0, len(overflow))
	for n := range overflow {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		a.over(Overflow{Allowlist: n, Count: overflow[n]})
	}
}

func protoName(p uint8) string {
	switch p {
	case uint8(config.TCP):
		return "tcp"
	case uint8(config.UDP):
		return "udp"
	case 1:
		return "icmp"
	case 58:
		return "ipv6-icmp"
	case 132:
		return "sctp"
	}
	return config.Proto(p).String()
}
