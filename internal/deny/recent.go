package deny

import (
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"
)

// RecentFile is the document `egressd denies` reads in the runtime directory.
const RecentFile = "denies.json"

// ObservedFile keeps the same document under the state directory, where it
// survives restarts (systemd empties the runtime directory on every stop):
// what `egressd learn` proposes an allowlist from.
const ObservedFile = "observed.json"

// RecentMax bounds the attempts Recent keeps: past it, the least recently
// seen are dropped.
const RecentMax = 4096

// RecentEntry is one denied (or, in audit mode, audited) destination of one
// allowlist, with every packet the deny events reported for it.
type RecentEntry struct {
	Allowlist string    `json:"allowlist"`
	User      string    `json:"user"`
	Unit      string    `json:"unit,omitempty"` // a unit allowlist's unit
	UID       uint32    `json:"uid"`
	Audit     bool      `json:"audit"`
	Listen    bool      `json:"listen,omitempty"` // a refused bind or listen: Dst:DPort is the local address and port
	Proto     string    `json:"proto"`
	Dst       string    `json:"dst"`
	DPort     uint16    `json:"dport"`
	Names     []string  `json:"names"`
	Count     int       `json:"count"`
	First     time.Time `json:"first"`
	Last      time.Time `json:"last"`
	Seq       uint64    `json:"seq"` // increases with every update: `denies --follow` prints what is newer
}

// ResolvedEntry is one name the service of a dns: proxy allowlist asked
// for, and what the proxy did: answered (with these addresses) or refused.
// `egressd learn` proposes names from it.
type ResolvedEntry struct {
	Allowlist string    `json:"allowlist"`
	Name      string    `json:"name"`
	Addrs     []string  `json:"addrs,omitempty"` // the latest answers' addresses, at most MaxResolvedAddrs
	Listed    bool      `json:"listed"`          // an entry of the allowlist matched it
	Count     int       `json:"count"`           // queries
	Refused   int       `json:"refused"`         // of which refused
	First     time.Time `json:"first"`
	Last      time.Time `json:"last"`
}

// MaxResolvedAddrs bounds the addresses kept per name.
const MaxResolvedAddrs = 16

// RecentDoc is the published document.
type RecentDoc struct {
	Version  int             `json:"version"`
	Updated  time.Time       `json:"updated"`
	Max      int             `json:"max"`
	Entries  []RecentEntry   `json:"entries"`            // most recently seen first
	Resolved []ResolvedEntry `json:"resolved,omitempty"` // most recently asked first
}

type recentKey struct {
	allowlist string
	audit     bool
	proto     string
	dst       string
	dport     uint16
	listen    bool
}

// Recent aggregates deny events into recent attempts, and the DNS proxy's
// observations into resolved names. Safe for concurrent use.
//
// Both are kept in order of their last update (an lru), so that a bound
// reached drops the least recently updated one in constant time: the DNS
// proxy records every query through Resolve before its answer leaves, and
// a store full of names must not cost it a sort (issue 24). Snapshot copies
// under the lock and formats outside it.
type Recent struct {
	mu       sync.Mutex
	max      int
	seq      uint64 // attempts recorded (RecentEntry.Seq)
	rseq     uint64 // observations recorded
	entries  lru[recentKey, RecentEntry]
	resolved lru[[2]string, resolved]
}

// resolved is a ResolvedEntry as kept: addresses as values (the proxy
// records every query; strings are made when a snapshot is written).
// addrs is replaced, never written in place: a snapshot reads the slice it
// copied under the lock after releasing it.
type resolved struct {
	ResolvedEntry
	addrs []netip.Addr
}

// NewRecent keeps at most max entries (RecentMax when max <= 0).
func NewRecent(max int) *Recent {
	if max <= 0 {
		max = RecentMax
	}
	r := &Recent{max: max}
	r.entries.init()
	r.resolved.init()
	return r
}

// Resolve records a query of a dns: proxy allowlist's service (the proxy's
// observation). Bounded like the attempts: past the bound, the least
// recently asked name is dropped. Constant time.
func (r *Recent) Resolve(allowlist, name string, addrs []netip.Addr, listed, refused bool, at time.Time) {
	k := [2]string{allowlist, name}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rseq++
	x, ok := r.resolved.touch(k)
	if !ok {
		if r.resolved.len() >= r.max {
			r.resolved.dropOldest()
		}
		x = r.resolved.pushFront(k, resolved{ResolvedEntry: ResolvedEntry{Allowlist: allowlist, Name: name, First: at}})
	}
	x.Count++
	x.Listed = listed
	if refused {
		x.Refused++
	}
	if at.After(x.Last) {
		x.Last = at
	}
	var fresh []netip.Addr
	for _, a := range addrs {
		if !slices.Contains(x.addrs, a) && !slices.Contains(fresh, a) {
			fresh = append(fresh, a)
		}
	}
	if len(fresh) > 0 {
		// A new slice (resolved.addrs): the newest first, then the kept.
		slices.Reverse(fresh)
		next := make([]netip.Addr, 0, len(fresh)+len(x.addrs))
		next = append(next, fresh...)
		next = append(next, x.addrs...)
		x.addrs = next[:min(MaxResolvedAddrs, len(next))]
	}
}

// LoadResolved takes back the names a previous run kept, most recently
// asked first.
func (r *Recent) LoadResolved(es []ResolvedEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range es {
		if r.resolved.len() >= r.max {
			break
		}
		k := [2]string{e.Allowlist, e.Name}
		if _, ok := r.resolved.touch(k); ok {
			continue
		}
		x := resolved{ResolvedEntry: e}
		for _, s := range e.Addrs {
			if a, err := netip.ParseAddr(s); err == nil {
				x.addrs = append(x.addrs, a)
			}
		}
		x.Addrs = nil
		r.resolved.pushBack(k, x)
	}
}

// Record adds one deny event (a first packet, or a window's summary).
// Past the bound, the least recently updated attempt is dropped.
func (r *Recent) Record(e Event) {
	k := recentKey{e.Allowlist, e.Audit, e.Proto, e.Dst.String(), e.DPort, e.Bind}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	if x, ok := r.entries.touch(k); ok {
		x.Count += e.Count
		if e.Last.After(x.Last) {
			x.Last = e.Last
		}
		if len(e.Names) > 0 {
			x.Names = e.Names
		}
		x.Seq = r.seq
		return
	}
	if r.entries.len() >= r.max {
		r.entries.dropOldest()
	}
	r.entries.pushFront(k, RecentEntry{Allowlist: e.Allowlist, User: e.User, Unit: e.Unit, UID: e.UID, Audit: e.Audit, Listen: e.Bind, Proto: e.Proto,
		Dst: e.Dst.String(), DPort: e.DPort, Names: e.Names, Count: e.Count, First: e.First, Last: e.Last, Seq: r.seq})
}

// Snapshot returns the document, most recently seen first, and a sequence
// number that changes with every update: a writer that remembers it knows
// whether anything changed since its last write.
func (r *Recent) Snapshot(now time.Time) (RecentDoc, uint64) {
	d, seq, rseq := r.snapshot(now, true)
	return d, seq + rseq
}

// seqs returns the sequence numbers of the attempts and of the
// observations.
func (r *Recent) seqs() (seq, rseq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seq, r.rseq
}

// snapshot is Snapshot, the observations left out unless withResolved.
// Only copies are made under the lock; strings, copies of names and the
// order are made after it.
func (r *Recent) snapshot(now time.Time, withResolved bool) (RecentDoc, uint64, uint64) {
	r.mu.Lock()
	d := RecentDoc{Version: 1, Updated: now, Max: r.max, Entries: make([]RecentEntry, 0, r.entries.len())}
	r.entries.each(func(e *RecentEntry) { d.Entries = append(d.Entries, *e) })
	var rs []resolved
	if withResolved {
		rs = make([]resolved, 0, r.resolved.len())
		r.resolved.each(func(e *resolved) { rs = append(rs, *e) })
	}
	seq, rseq := r.seq, r.rseq
	r.mu.Unlock()

	for i := range d.Entries {
		d.Entries[i].Names = append([]string(nil), d.Entries[i].Names...)
	}
	SortRecent(d.Entries)
	for _, e := range rs {
		x := e.ResolvedEntry
		x.Addrs = make([]string, len(e.addrs))
		for i, a := range e.addrs {
			x.Addrs[i] = a.String()
		}
		d.Resolved = append(d.Resolved, x)
	}
	sort.Slice(d.Resolved, func(i, j int) bool {
		if !d.Resolved[i].Last.Equal(d.Resolved[j].Last) {
			return d.Resolved[i].Last.After(d.Resolved[j].Last)
		}
		return d.Resolved[i].Name < d.Resolved[j].Name
	})
	return d, seq, rseq
}

// Load takes back entries a previous run kept (the observations that
// `egressd learn` reads survive restarts), most recently seen first; the
// sequence continues above theirs. Called before recording starts.
func (r *Recent) Load(es []RecentEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range es {
		if r.entries.len() >= r.max {
			break
		}
		k := recentKey{e.Allowlist, e.Audit, e.Proto, e.Dst, e.DPort, e.Listen}
		if _, ok := r.entries.touch(k); ok {
			continue
		}
		r.entries.pushBack(k, e)
		r.seq = max(r.seq, e.Seq)
	}
}

// SortRecent orders entries most recently seen first.
func SortRecent(es []RecentEntry) {
	sort.Slice(es, func(i, j int) bool {
		if !es[i].Last.Equal(es[j].Last) {
			return es[i].Last.After(es[j].Last)
		}
		return es[i].Seq > es[j].Seq
	})
}
