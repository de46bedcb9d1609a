package deny

import (
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
	Proto     string    `json:"proto"`
	Dst       string    `json:"dst"`
	DPort     uint16    `json:"dport"`
	Names     []string  `json:"names"`
	Count     int       `json:"count"`
	First     time.Time `json:"first"`
	Last      time.Time `json:"last"`
	Seq       uint64    `json:"seq"` // increases with every update: `denies --follow` prints what is newer
}

// RecentDoc is the published document.
type RecentDoc struct {
	Version int           `json:"version"`
	Updated time.Time     `json:"updated"`
	Max     int           `json:"max"`
	Entries []RecentEntry `json:"entries"` // most recently seen first
}

type recentKey struct {
	allowlist string
	audit     bool
	proto     string
	dst       string
	dport     uint16
}

// Recent aggregates deny events into recent attempts. Safe for concurrent use.
type Recent struct {
	mu      sync.Mutex
	max     int
	seq     uint64
	entries map[recentKey]*RecentEntry
}

// NewRecent keeps at most max entries (RecentMax when max <= 0).
func NewRecent(max int) *Recent {
	if max <= 0 {
		max = RecentMax
	}
	return &Recent{max: max, entries: map[recentKey]*RecentEntry{}}
}

// Record adds one deny event (a first packet, or a window's summary).
func (r *Recent) Record(e Event) {
	k := recentKey{e.Allowlist, e.Audit, e.Proto, e.Dst.String(), e.DPort}
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
	r.entries[k] = &RecentEntry{Allowlist: e.Allowlist, User: e.User, Unit: e.Unit, UID: e.UID, Audit: e.Audit, Proto: e.Proto,
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
		k := recentKey{x.Allowlist, x.Audit, x.Proto, x.Dst, x.DPort}
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
