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

// Recent aggregates deny events into recent attempts. Safe for concurrent use.
type Recent struct {
	mu       sync.Mutex
	max      int
	seq      uint64
	entries  map[recentKey]*RecentEntry
	resolved map[[2]string]*resolved
}

// resolved is a ResolvedEntry as kept: addresses as values (the proxy
// records every query; strings are made when a snapshot is written).
type resolved struct {
	ResolvedEntry
	addrs []netip.Addr
}

// NewRecent keeps at most max entries (RecentMax when max <= 0).
func NewRecent(max int) *Recent {
	if max <= 0 {
		max = RecentMax
	}
	return &Recent{max: max, entries: map[recentKey]*RecentEntry{}, resolved: map[[2]string]*resolved{}}
}

// Resolve records a query of a dns: proxy allowlist's service (the proxy's
// observation). Bounded like the attempts: past the bound, the least
// recently asked names are dropped.
func (r *Recent) Resolve(allowlist, name string, addrs []netip.Addr, listed, refused bool, at time.Time) {
	k := [2]string{allowlist, name}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	x, ok := r.resolved[k]
	if !ok {
		if len(r.resolved) >= r.max {
			all := make([][2]string, 0, len(r.resolved))
			for k := range r.resolved {
				all = append(all, k)
			}
			sort.Slice(all, func(i, j int) bool { return r.resolved[all[i]].Last.Before(r.resolved[all[j]].Last) })
			for _, k := range all[:max(1, len(all)/10)] {
				delete(r.resolved, k)
			}
		}
		x = &resolved{ResolvedEntry: ResolvedEntry{Allowlist: allowlist, Name: name, First: at}}
		r.resolved[k] = x
	}
	x.Count++
	x.Listed = listed
	if refused {
		x.Refused++
	}
	if at.After(x.Last) {
		x.Last = at
	}
	for _, a := range addrs {
		if !slices.Contains(x.addrs, a) {
			x.addrs = append([]netip.Addr{a}, x.addrs...)
		}
	}
	if len(x.addrs) > MaxResolvedAddrs {
		x.addrs = x.addrs[:MaxResolvedAddrs]
	}
}

// LoadResolved takes back the names a previous run kept.
func (r *Recent) LoadResolved(es []ResolvedEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range es {
		if len(r.resolved) >= r.max {
			break
		}
		x := &resolved{ResolvedEntry: e}
		for _, s := range e.Addrs {
			if a, err := netip.ParseAddr(s); err == nil {
				x.addrs = append(x.addrs, a)
			}
		}
		x.Addrs = nil
		r.resolved[[2]string{x.Allowlist, x.Name}] = x
	}
}

// Record adds one deny event (a first packet, or a window's summary).
func (r *Recent) Record(e Event) {
	k := recentKey{e.Allowlist, e.Audit, e.Proto, e.Dst.String(), e.DPort, e.Bind}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	if x, ok := r.entries[k]; ok {
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
	if len(r.entries) >= r.max {
		r.evict()
	}
	r.entries[k] = &RecentEntry{Allowlist: e.Allowlist, User: e.User, Unit: e.Unit, UID: e.UID, Audit: e.Audit, Listen: e.Bind, Proto: e.Proto,
		Dst: e.Dst.String(), DPort: e.DPort, Names: e.Names, Count: e.Count, First: e.First, Last: e.Last, Seq: r.seq}
}

// evict drops the least recently seen tenth, so that a flood of new
// destinations costs one sort per tenth of the bound, not one per event.
func (r *Recent) evict() {
	all := make([]recentKey, 0, len(r.entries))
	for k := range r.entries {
		all = append(all, k)
	}
	sort.Slice(all, func(i, j int) bool { return r.entries[all[i]].Last.Before(r.entries[all[j]].Last) })
	for _, k := range all[:max(1, len(all)/10)] {
		delete(r.entries, k)
	}
}

// Snapshot returns the document, most recently seen first, and the
// sequence number of its newest update: a writer that remembers it knows
// whether anything changed since its last write.
func (r *Recent) Snapshot(now time.Time) (RecentDoc, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := RecentDoc{Version: 1, Updated: now, Max: r.max, Entries: make([]RecentEntry, 0, len(r.entries))}
	for _, e := range r.entries {
		x := *e
		x.Names = append([]string(nil), e.Names...)
		d.Entries = append(d.Entries, x)
	}
	SortRecent(d.Entries)
	for _, e := range r.resolved {
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
	return d, r.seq
}

// Load takes back entries a previous run kept (the observations that
// `egressd learn` reads survive restarts); the sequence continues above
// theirs. Called before recording starts.
func (r *Recent) Load(es []RecentEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range es {
		if len(r.entries) >= r.max {
			break
		}
		x := e
		k := recentKey{x.Allowlist, x.Audit, x.Proto, x.Dst, x.DPort, x.Listen}
		r.entries[k] = &x
		r.seq = max(r.seq, x.Seq)
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
