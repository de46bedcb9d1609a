package resolver

import (
	"cmp"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/egressd/egressd/internal/backoff"
	"github.com/egressd/egressd/internal/setdiff"
	"github.com/miekg/dns"
)

// Policy holds the timing and safety knobs of the main configuration.
type Policy struct {
	MinTTL     time.Duration
	MaxTTL     time.Duration
	Linger     time.Duration
	StaleGrace time.Duration
	MaxAddrs   int
}

// Clamp raises a TTL to MinTTL, and to a second at least, and lowers it to
// MaxTTL. The floor holds with min_ttl 0: an answer with TTL 0 must not make
// a kernel element that lapses before the client connects (the proxy's
// elements live Clamp(TTL) + linger, and linger may be 0).
func (p Policy) Clamp(ttl time.Duration) time.Duration {
	return min(max(ttl, p.MinTTL, time.Second), p.MaxTTL)
}

// Key is one lookup: a name and a type (A or AAAA).
type Key struct {
	Name string
	Type uint16
}

func (k Key) String() string { return dns.TypeToString[k.Type] + " " + k.Name }

// KeysFor returns the A and AAAA keys of a name.
func KeysFor(name string) [2]Key {
	return [2]Key{{name, dns.TypeA}, {name, dns.TypeAAAA}}
}

// entry is the cache's state for one Key. An address's lifetime is its own:
// last seen + TTL + linger; a failure is not an answer and extends nothing
// beyond stale_grace.
type entry struct {
	privateOK bool
	// addrs is a slice, not a map: most names have one or two addresses,
	// at most max_addresses_per_name, and 20,000 small maps cost megabytes.
	addrs    []addrState
	next     time.Time // next refresh
	lastOK   time.Time // zero: never answered
	failures int
	lastErr  error
	dropped  int // addresses of the last answer refused (private or over the cap)
}

type addrState struct {
	addr    netip.Addr
	expiry  time.Time // last seen + TTL + linger
	current bool      // in the last successful answer
	// kernel is the lifetime the kernel's element carries (Lifetimes): the
	// lifetime (until) when it is shorter or new, else it follows an
	// extension at the next renewal (Renew), at most renewEvery later.
	kernel time.Time
}

func (e *entry) find(a netip.Addr) int {
	for i := range e.addrs {
		if e.addrs[i].addr == a {
			return i
		}
	}
	return -1
}

// Status is what the cache knows about one Key, for reports and events.
type Status struct {
	Key          Key
	Addrs        []netip.Addr
	LastOK       time.Time
	Failing      bool
	ServingStale bool
	LastErr      error
	Dropped      int
	Next         time.Time
}

// Cache keeps per-name state. It is not safe for concurrent use: the
// controller's single reconcile goroutine owns it.
type Cache struct {
	policy Policy
	now    func() time.Time
	keys   map[Key]*entry
	// Lifetime extensions waiting for the next renewal (Renew), and when
	// it may run.
	pending bool
	renewAt time.Time
	// gen counts the changes of what AppendLifetimes returns (Generation).
	gen uint64
	// The loop asks NextEvent, Due and Expire at every turn; each would
	// scan the 20,000 keys of 10,000 names. mut counts every change of
	// the state they read, and sched holds what a scan found at mut.
	mut   uint64
	sched scan
	// ends, when endsOK, is at or before the end of every address's
	// lifetime (end): until then Expire has nothing to forget.
	ends   time.Time
	endsOK bool
	// scanAlways turns the shortcuts off (tests compare both ways).
	scanAlways bool
}

// Generation counts the changes of what AppendLifetimes would return for
// any name: an address allowed or no longer allowed, a kernel lifetime
// set or renewed, a key added or forgotten, a new policy. The daemon
// builds its desired state again only when it moved (or another input
// did). Time alone never makes an address allowed again; an address whose
// lifetime ran out counts once Expire (or Observe) forgets it, which every
// reconcile calls first.
func (c *Cache) Generation() uint64 { return c.gen }

// maxRenewLag bounds how long an extended lifetime waits before the kernel
// gets it (Renew): renewals are batched, one per this period at most, so a
// steady state of 10,000 names costs a transaction every few seconds, not
// one per refresh.
const maxRenewLag = 10 * time.Second

// renewEvery is the renewal period: maxRenewLag, or half of linger when
// that is shorter, so that an element is renewed before the kernel ends it
// (a refresh comes TTL after the last; the element lives TTL + linger).
func (p Policy) renewEvery() time.Duration { return min(maxRenewLag, p.Linger/2) }

// NewCache returns an empty cache; now defaults to time.Now.
func NewCache(p Policy, now func() time.Time) *Cache {
	if now == nil {
		now = time.Now
	}
	return &Cache{policy: p, now: now, keys: map[Key]*entry{}}
}

// SetPolicy replaces the timing knobs after a configuration change; it takes
// effect at each key's next answer.
func (c *Cache) SetPolicy(p Policy) {
	if p != c.policy {
		c.gen++ // stale_grace decides what is served stale
		c.mut++
		c.endsOK = false
	}
	c.policy = p
}

// Sync makes the cache hold exactly the given names (value: whether private
// answers are acceptable for it). New names are due at once; names that are
// gone are forgotten.
func (c *Cache) Sync(names map[string]bool) {
	c.mut++
	if len(c.keys) == 0 {
		c.keys = make(map[Key]*entry, 2*len(names)) // a start: no rehash on the way to 20,000 keys
	}
	for n, privateOK := range names {
		for _, k := range KeysFor(n) {
			e := c.keys[k]
			if e == nil {
				e = &entry{}
				c.keys[k] = e
				c.gen++
			}
			e.privateOK = privateOK
		}
	}
	for k := range c.keys {
		if _, ok := names[k.Name]; !ok || (k.Type != dns.TypeA && k.Type != dns.TypeAAAA) { // not one of KeysFor's
			delete(c.keys, k)
			c.gen++
		}
	}
}

// Due returns the keys whose refresh time has come, sorted.
func (c *Cache) Due() []Key {
	now := c.now()
	if s := c.schedule(); !s.dueZero && (s.firstDue.IsZero() || now.Before(s.firstDue)) {
		return nil
	}
	var out []Key
	for k, e := range c.keys {
		if !e.next.After(now) {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b Key) int { // not sort.Slice: a fifth of the time for 20,000 keys
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return cmp.Compare(a.Type, b.Type)
	})
	return out
}

// claimed is the refresh time of keys whose lookup is in flight: far enough
// not to be due again, and recognisable by Release.
var claimed = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// Claim marks keys as being looked up, so that they are not due again until
// their outcome is observed (or Release gives them back).
func (c *Cache) Claim(keys []Key) {
	c.mut++
	now := c.now()
	for _, k := range keys {
		if e := c.keys[k]; e != nil {
			// A claim holds the last answer's addresses (isValid): one
			// whose lifetime ran out, not yet forgotten, is allowed again.
			for _, st := range e.addrs {
				if st.current && !c.isValid(e, st, now) {
					c.gen++
					break
				}
			}
			e.next = claimed
		}
	}
}

// Refresh makes the names' keys due now (the hosts file changed). A key in
// flight keeps its claim; its answer is at most min_ttl old.
func (c *Cache) Refresh(names []string) {
	c.mut++
	for _, n := range names {
		for _, k := range KeysFor(n) {
			if e := c.keys[k]; e != nil && !e.next.Equal(claimed) {
				e.next = time.Time{}
			}
		}
	}
}

// Release makes a claimed key due again (its lookup was cancelled).
func (c *Cache) Release(k Key) {
	if e := c.keys[k]; e != nil && e.next.Equal(claimed) {
		e.next = time.Time{}
		c.mut++
		c.endsOK = false // its last answer is no longer held
	}
}

// Change says how one observation moved a key's allowed addresses.
type Change struct {
	Added, Removed []netip.Addr
	TTL            time.Duration // clamped; for failures, the retry delay
	Dropped        int
}

// Observe records the outcome of a lookup and returns what changed in the
// allowed addresses of that key at this moment.
func (c *Cache) Observe(k Key, res Result, err error) Change {
	e := c.keys[k]
	if e == nil {
		return Change{}
	}
	c.mut++
	now := c.now()
	before := c.valid(e, now)
	var ch Change
	switch {
	case err != nil:
		e.failures++
		e.lastErr = err
		ch.TTL = c.backoff(e.failures)
		e.next = now.Add(ch.TTL)
	case res.Negative:
		_, _, ttl := c.policy.Admit(res, e.privateOK)
		e.failures, e.lastErr, e.lastOK, e.dropped = 0, nil, now, 0
		// The name empties when the negative TTL runs out.
		until := now.Add(ttl)
		for i := range e.addrs {
			e.addrs[i].current = false
			if e.addrs[i].expiry.After(until) {
				e.addrs[i].expiry = until
			}
		}
		e.next = now.Add(ttl)
		ch.TTL = ttl
	default:
		addrs, dropped, ttl := c.policy.Admit(res, e.privateOK)
		e.failures, e.lastErr, e.lastOK = 0, nil, now
		for i := range e.addrs {
			e.addrs[i].current = false
		}
		exp := now.Add(ttl + c.policy.Linger)
		for _, a := range addrs {
			if i := e.find(a); i >= 0 {
				e.addrs[i].expiry, e.addrs[i].current = exp, true
			} else {
				e.addrs = append(e.addrs, addrState{addr: a, expiry: exp, current: true})
			}
		}
		e.dropped = dropped
		e.next = now.Add(ttl)
		ch.TTL, ch.Dropped = ttl, dropped
		c.capEntry(e)
	}
	lost := c.gc(e, now)
	settled := c.settle(e)
	after := c.valid(e, now)
	ch.Added, ch.Removed = setdiff.Of(before, after)
	if len(lost) > 0 || settled || len(ch.Added) > 0 || len(ch.Removed) > 0 {
		c.gen++
	}
	for _, st := range e.addrs {
		c.lowerEnds(c.end(e, st))
	}
	return ch
}

// end is when st stops being allowed if nothing is learnt (isValid is
// now.Before(end)); claimed while its key's lookup holds it.
func (c *Cache) end(e *entry, st addrState) time.Time {
	if !st.current {
		return st.expiry
	}
	if e.next.Equal(claimed) {
		return claimed
	}
	if s := c.staleUntil(e); s.After(st.expiry) {
		return s
	}
	return st.expiry
}

func (c *Cache) lowerEnds(t time.Time) {
	if c.endsOK && t.Before(c.ends) {
		c.ends = t
	}
}

// settle gives the kernel a lifetime that is new or shorter at once, and
// marks one that grew for the next renewal; true when a kernel lifetime
// changed. The last answer of a name whose DNS just failed gets its
// stale_grace lifetime at once too: a daemon stopped right after the
// failure (before the next renewal) would otherwise let it end at TTL +
// linger, not stale_grace (TestStoppedDaemonClosesOnTime). Once per failure
// streak: the stale end does not move while the name keeps failing.
func (c *Cache) settle(e *entry) bool {
	changed := false
	for i := range e.addrs {
		st := &e.addrs[i]
		switch u := c.until(e, *st); {
		case st.kernel.IsZero() || u.Before(st.kernel) || c.policy.renewEvery() <= 0 || (e.failures > 0 && st.current && u.After(st.kernel)):
			changed = changed || !u.Equal(st.kernel)
			st.kernel = u
		case u.After(st.kernel):
			c.pending = true
		}
	}
	return changed
}

// Renew gives the kernel every extended lifetime, if any is waiting and the
// renewal period has passed since the last renewal; it reports whether it
// did (the caller applies the new lifetimes then).
func (c *Cache) Renew() bool {
	now := c.now()
	if !c.pending || now.Before(c.renewAt) {
		return false
	}
	for _, e := range c.keys {
		for i := range e.addrs {
			e.addrs[i].kernel = c.until(e, e.addrs[i])
		}
	}
	c.gen++
	c.mut++
	c.pending = false
	c.renewAt = now.Add(c.policy.renewEvery())
	return true
}

// capEntry bounds the addresses a key accumulates (round-robin answers add up
// over their lifetimes): the current answer is kept, then the longest-lived.
func (c *Cache) capEntry(e *entry) {
	max := c.policy.MaxAddrs
	if max <= 0 || len(e.addrs) <= max {
		return
	}
	sort.Slice(e.addrs, func(i, j int) bool {
		a, b := e.addrs[i], e.addrs[j]
		if a.current != b.current {
			return a.current
		}
		if !a.expiry.Equal(b.expiry) {
			return a.expiry.After(b.expiry)
		}
		return a.addr.Less(b.addr)
	})
	e.addrs = e.addrs[:max]
}

// backoff is the retry delay after consecutive failures: min_ttl (at least
// a second), doubling, at most 30s.
func (c *Cache) backoff(failures int) time.Duration {
	return backoff.Exp{Base: max(c.policy.MinTTL, time.Second), Max: 30 * time.Second}.Delay(failures)
}

// staleUntil is when last-known addresses stop being served while DNS fails.
func (c *Cache) staleUntil(e *entry) time.Time {
	if e.lastErr == nil || e.lastOK.IsZero() {
		return time.Time{}
	}
	return e.lastOK.Add(c.policy.StaleGrace)
}

func (c *Cache) isValid(e *entry, st addrState, now time.Time) bool {
	if st.expiry.After(now) {
		return true
	}
	// While the refresh is in flight (at most the query timeout) the last
	// answer stands: its addresses must not flap off and back on when a slow
	// answer, or a failure served stale, arrives.
	if st.current && e.next.Equal(claimed) {
		return true
	}
	return st.current && c.staleUntil(e).After(now)
}

func (c *Cache) valid(e *entry, now time.Time) []netip.Addr {
	var out []netip.Addr
	for _, st := range e.addrs {
		if c.isValid(e, st, now) {
			out = append(out, st.addr)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare) // sort.Slice allocates: 4 calls per key at every refresh
	return out
}

// gc drops expired addresses and returns them.
func (c *Cache) gc(e *entry, now time.Time) []netip.Addr {
	var lost []netip.Addr
	kept := e.addrs[:0]
	for _, st := range e.addrs {
		if c.isValid(e, st, now) {
			kept = append(kept, st)
		} else {
			lost = append(lost, st.addr)
		}
	}
	e.addrs = kept
	return lost
}

// Addrs returns the addresses a name allows now (A and AAAA), sorted.
func (c *Cache) Addrs(name string) []netip.Addr {
	now := c.now()
	var out []netip.Addr
	for _, k := range KeysFor(name) {
		if e := c.keys[k]; e != nil {
			out = append(out, c.valid(e, now)...)
		}
	}
	return out
}

// HasAddrs reports whether name has an address Addrs would return, without
// making the list.
func (c *Cache) HasAddrs(name string) bool {
	now := c.now()
	for _, k := range KeysFor(name) {
		if e := c.keys[k]; e != nil {
			for _, st := range e.addrs {
				if c.isValid(e, st, now) {
					return true
				}
			}
		}
	}
	return false
}

// Lifetime is one allowed address and the time until which the daemon
// would keep it if it learnt nothing new: last seen + TTL + linger, or, for
// an address of the last answer while DNS fails, last answer + stale_grace
// when that is later. The kernel's element carries it as its timeout, so an
// address closes on time even while egressd is stopped.
type Lifetime struct {
	Addr  netip.Addr
	Until time.Time
}

// until is the time until which the daemon would keep st (see Lifetime).
func (c *Cache) until(e *entry, st addrState) time.Time {
	u := st.expiry
	if s := c.staleUntil(e); st.current && s.After(u) {
		u = s
	}
	return u
}

// Lifetimes returns the addresses a name allows now (A and AAAA), sorted,
// each with the lifetime its kernel element carries: its Lifetime, or, for
// one extended since the last renewal, the earlier end it had (Renew). The
// kernel never keeps an address longer than the daemon would.
func (c *Cache) Lifetimes(name string) []Lifetime { return c.AppendLifetimes(nil, name) }

// AppendLifetimes is Lifetimes appending to dst (the daemon reuses one
// buffer for its 10,000 names at every reconcile).
func (c *Cache) AppendLifetimes(dst []Lifetime, name string) []Lifetime {
	now := c.now()
	start := len(dst)
	for _, k := range KeysFor(name) {
		e := c.keys[k]
		if e == nil {
			continue
		}
		for _, st := range e.addrs {
			if c.isValid(e, st, now) {
				u := st.kernel
				if u.IsZero() {
					u = c.until(e, st)
				}
				dst = append(dst, Lifetime{st.addr, u})
			}
		}
	}
	out := dst[start:]
	// slices.SortFunc, not sort.Slice: this runs for every name at every
	// reconcile, and sort.Slice allocates three times per call.
	slices.SortFunc(out, func(a, b Lifetime) int { return a.Addr.Compare(b.Addr) })
	return dst
}

// Lingering returns the addresses of a name that left its answers but are
// still allowed (TTL + linger not run out), each with the time it expires.
func (c *Cache) Lingering(name string) map[netip.Addr]time.Time {
	now := c.now()
	var out map[netip.Addr]time.Time
	for _, k := range KeysFor(name) {
		e := c.keys[k]
		if e == nil {
			continue
		}
		for _, st := range e.addrs {
			if !st.current && c.isValid(e, st, now) {
				if out == nil {
					out = map[netip.Addr]time.Time{}
				}
				out[st.addr] = st.expiry
			}
		}
	}
	return out
}

// Expire forgets addresses whose lifetime ran out and returns the keys that
// lost any, with what they lost.
func (c *Cache) Expire() map[Key][]netip.Addr {
	now := c.now()
	out := map[Key][]netip.Addr{}
	if c.endsOK && now.Before(c.ends) && !c.scanAlways {
		return out
	}
	ends := claimed
	for k, e := range c.keys {
		if lost := c.gc(e, now); len(lost) > 0 {
			out[k] = lost
			c.gen++
			c.mut++
		}
		for _, st := range e.addrs {
			if t := c.end(e, st); t.Before(ends) {
				ends = t
			}
		}
	}
	c.ends, c.endsOK = ends, true
	return out
}

// NextEvent is the earliest time at which a refresh is due, an address
// expires or a renewal (Renew) may run; zero when the cache is empty.
func (c *Cache) NextEvent() time.Time {
	t := c.schedule().next
	if c.pending {
		r := c.renewAt
		if r.IsZero() {
			r = c.now()
		}
		if t.IsZero() || r.Before(t) {
			t = r
		}
	}
	return t
}

// scan is what a scan of every key found for NextEvent and Due.
type scan struct {
	ok       bool
	mut      uint64    // the cache's mut when it was made
	next     time.Time // NextEvent without the renewal
	dueZero  bool      // a key not in flight is due at once (zero next)
	firstDue time.Time // the earliest refresh time of a key not in flight; zero: none
}

// schedule is what a scan of every key finds for NextEvent and Due, kept
// until the cache changes (mut).
func (c *Cache) schedule() scan {
	if c.sched.ok && c.sched.mut == c.mut && !c.scanAlways {
		return c.sched
	}
	s := &c.sched
	s.ok, s.mut, s.dueZero, s.firstDue = true, c.mut, false, time.Time{}
	var t time.Time
	earlier := func(x time.Time) {
		if !x.IsZero() && (t.IsZero() || x.Before(t)) {
			t = x
		}
	}
	for _, e := range c.keys {
		inFlight := e.next.Equal(claimed)
		if !inFlight {
			earlier(e.next)
			switch {
			case e.next.IsZero():
				s.dueZero = true
			case s.firstDue.IsZero() || e.next.Before(s.firstDue):
				s.firstDue = e.next
			}
		}
		stale := c.staleUntil(e)
		for _, st := range e.addrs {
			if inFlight && st.current {
				continue // held until the outcome is observed
			}
			if st.current && stale.After(st.expiry) {
				earlier(stale)
			} else {
				earlier(st.expiry)
			}
		}
	}
	s.next = t
	return *s
}

// LastOK is Status(k).LastOK, without the rest of the report; false for
// a key the cache does not hold.
func (c *Cache) LastOK(k Key) (time.Time, bool) {
	e := c.keys[k]
	if e == nil {
		return time.Time{}, false
	}
	return e.lastOK, true
}

// Status reports on one key.
func (c *Cache) Status(k Key) (Status, bool) {
	e := c.keys[k]
	if e == nil {
		return Status{}, false
	}
	now := c.now()
	return Status{
		Key: k, Addrs: c.valid(e, now), LastOK: e.lastOK, Failing: e.lastErr != nil,
		ServingStale: e.lastErr != nil && c.staleUntil(e).After(now) && e.hasCurrent(),
		LastErr:      e.lastErr, Dropped: e.dropped, Next: e.next,
	}, true
}

func (e *entry) hasCurrent() bool {
	for _, st := range e.addrs {
		if st.current {
			return true
		}
	}
	return false
}
