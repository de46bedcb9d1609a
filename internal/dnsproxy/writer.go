package dnsproxy

import (
	"errors"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/resolver"
	"github.com/egressd/egressd/ruleset"
)

type elemKey struct {
	uid uint32
	e   ruleset.Element
}

// elemState is what the writer knows of one element in the kernel.
type elemState struct {
	exp time.Time // when the kernel drops it
	// names are the names it was answered for, newest last, at most
	// maxNames; nil when not known (adopted from the kernel at start).
	names []string
}

// maxNames bounds the names remembered per element. Past it the oldest is
// forgotten: an element is then kept through a policy change only for the
// names it was answered for most recently (fail closed: the service asks
// again).
const maxNames = 8

// pendingElem is an element waiting for the next transaction, with the name
// it was answered for.
type pendingElem struct {
	pe   ruleset.ProxyElement
	name string
	call *ensureCall
}

// ensureCall is one Ensure waiting for its transaction.
type ensureCall struct {
	done chan error
	// revoked: a policy change dropped some of its elements before they
	// were written; it fails with errPolicyChanged.
	revoked bool
}

// writer puts answers in the kernel and takes them out when the policy no
// longer allows them. Concurrent answers are written in one transaction
// (group commit): each caller waits for the transaction that carries its
// elements. An element the kernel holds long enough already is not written
// again. known is the writer's view of the kernel's proxy sets; it is
// bounded by what is alive.
//
// The per-uid cap counts what the kernel holds and what is on its way to it
// (reserved), so that answers released together cannot exceed it.
type writer struct {
	k      ruleset.ProxyKernel
	now    func() time.Time
	maxPer int // elements per uid
	// observe, when set, gets each transaction's duration.
	observe func(seconds float64)
	// failed, when set, hears of answers the policy no longer allows that
	// could not be taken out of the kernel (retried with the next write).
	failed func(err error)

	// kmu orders the kernel writes: a policy change waits for the
	// transaction in flight, then takes out what it no longer allows.
	kmu sync.Mutex

	mu       sync.Mutex
	pol      *Policy
	known    map[elemKey]*elemState
	reserved map[elemKey]int // pending writes of elements not known yet
	perUID   map[uint32]int  // elements known or reserved per uid
	pending  []pendingElem
	waiters  []*ensureCall
	stale    map[elemKey]bool // to take out of the kernel still (a removal failed)
	busy     bool
	sweep    time.Time
}

func newWriter(k ruleset.ProxyKernel, now func() time.Time, maxPer int) *writer {
	return &writer{k: k, now: now, maxPer: maxPer, pol: &Policy{ByUID: map[uint32]*Allowlist{}},
		known: map[elemKey]*elemState{}, reserved: map[elemKey]int{}, perUID: map[uint32]int{}, stale: map[elemKey]bool{}}
}

// ErrTooMany: the uid holds MaxElements answers already.
var ErrTooMany = errors.New("the allowlist holds the most DNS proxy answers it may (dns_proxy_max_answers); answers with new addresses fail until old ones expire")

// errPolicyChanged: the allowlist changed while the answer was on its way
// and no longer allows it.
var errPolicyChanged = errors.New("the allowlist changed while the answer was on its way")

func (w *writer) setMax(n int) {
	w.mu.Lock()
	w.maxPer = n
	w.mu.Unlock()
}

func (w *writer) counted(k elemKey) bool {
	_, ok := w.known[k]
	return ok || w.reserved[k] > 0
}

func (w *writer) uncount(k elemKey) {
	if w.perUID[k.uid]--; w.perUID[k.uid] <= 0 {
		delete(w.perUID, k.uid)
	}
}

// set records that the kernel holds k until exp, answered for name ("": not
// known which; a new element then stays without names).
func (w *writer) set(k elemKey, exp time.Time, name string) {
	st := w.known[k]
	if st == nil {
		if !w.counted(k) {
			w.perUID[k.uid]++
		}
		st = &elemState{}
		if name != "" {
			st.names = []string{}
		}
		w.known[k] = st
	}
	if exp.After(st.exp) {
		st.exp = exp
	}
	st.addName(name)
}

func (st *elemState) addName(name string) {
	if name == "" || st.names == nil {
		return // adopted: which names led to it is not known, and stays so
	}
	if l := len(st.names); l > 0 && st.names[l-1] == name {
		return // the newest already
	}
	for i, n := range st.names {
		if n == name {
			st.names = append(append(st.names[:i:i], st.names[i+1:]...), name) // newest last
			return
		}
	}
	if len(st.names) == maxNames {
		st.names = append(st.names[:0:0], st.names[1:]...)
	}
	st.names = append(st.names, name)
}

func (w *writer) drop(k elemKey) {
	if _, ok := w.known[k]; ok {
		delete(w.known, k)
		if w.reserved[k] == 0 {
			w.uncount(k)
		}
	}
}

func (w *writer) reserve(k elemKey) {
	if !w.counted(k) {
		w.perUID[k.uid]++
	}
	w.reserved[k]++
}

func (w *writer) release(k elemKey) {
	if w.reserved[k]--; w.reserved[k] > 0 {
		return
	}
	delete(w.reserved, k)
	if _, ok := w.known[k]; !ok {
		w.uncount(k)
	}
}

// need reports whether the element must be (re)written for the kernel to
// hold it at least until `until`.
func (w *writer) need(k elemKey, until time.Time) bool {
	st, ok := w.known[k]
	return !ok || st.exp.Before(until)
}

// admits reports whether pol allows the element answered for one of names
// (nil: not known which; then any name entry of the allowlist with the
// element's protocol and ports does): an entry that matches the name and
// gives the element's protocol and ports, an address the rebinding rules
// accept.
func admits(pol *Policy, k elemKey, names []string) bool {
	return admitsBy(pol, k, names, (*Allowlist).Match)
}

// admitsName is admits for the one name an answer was given for, without
// allocating: the same tests (Accepts, then Match's entries that give the
// element), Match's loop inlined.
func admitsName(pol *Policy, k elemKey, name string) bool {
	al := pol.ByUID[k.uid]
	if al == nil || k.e.AddrFrom != k.e.AddrTo {
		return false
	}
	a := k.e.AddrFrom
	if !resolver.Accepts(a, al.PrivateOK, name, nil) || strings.ContainsRune(name, '\\') {
		return false // Match: a name with an escape matches nothing
	}
	for _, e := range al.Entries {
		if e.MatchesName(name) && ruleset.ElementFor(e.Proto, netip.PrefixFrom(a, a.BitLen()), e.PortFrom, e.PortTo) == k.e {
			return true
		}
	}
	return false
}

// admitsBy is admits with the entries matching a name given by match (a
// policy change judges many elements of few names: it remembers them).
func admitsBy(pol *Policy, k elemKey, names []string, match func(*Allowlist, string) []config.Entry) bool {
	al := pol.ByUID[k.uid]
	if al == nil || k.e.AddrFrom != k.e.AddrTo {
		return false
	}
	a := k.e.AddrFrom
	gives := func(e config.Entry) bool {
		return ruleset.ElementFor(e.Proto, netip.PrefixFrom(a, a.BitLen()), e.PortFrom, e.PortTo) == k.e
	}
	if names == nil {
		if !resolver.Accepts(a, al.PrivateOK, "", nil) {
			return false
		}
		for _, e := range al.Entries {
			if e.IsName() && gives(e) {
				return true
			}
		}
		return false
	}
	for _, n := range names {
		if !resolver.Accepts(a, al.PrivateOK, n, nil) {
			continue
		}
		for _, e := range match(al, n) {
			if gives(e) {
				return true
			}
		}
	}
	return false
}

// Ensure returns once every element, answered for name, is in the kernel
// until at least now+hold (written with its own Timeout when it was not),
// or with the error of the transaction that failed.
func (w *writer) Ensure(es []ruleset.ProxyElement, name string, hold time.Duration) error {
	now := w.now()
	w.mu.Lock()
	if now.Sub(w.sweep) > time.Minute {
		w.sweepLocked(now)
	}
	// What a hit whose elements the kernel holds already needs is no
	// allocation: the call, the counts and the map of duplicates are made
	// only when something is to be written, or when es is long.
	var todo []pendingElem
	var call *ensureCall
	var fresh map[uint32]int
	var seen map[elemKey]bool
	if len(es) > ensureScan {
		seen = make(map[elemKey]bool, len(es))
	}
	for i, pe := range es {
		k := elemKey{pe.UID, pe.Element}
		if seen != nil {
			if seen[k] {
				continue
			}
			seen[k] = true
		} else if dupOf(es[:i], pe) {
			continue
		}
		if !admitsName(w.pol, k, name) {
			w.mu.Unlock()
			return errPolicyChanged
		}
		if !w.need(k, now.Add(hold)) {
			w.known[k].addName(name) // held already: it leads there from this name too
			continue
		}
		_, known := w.known[k]
		if !w.counted(k) {
			if fresh == nil {
				fresh = map[uint32]int{}
			}
			fresh[pe.UID]++
		}
		if call == nil {
			call = &ensureCall{done: make(chan error, 1)}
		}
		pe.Renew, pe.Name = known, name
		todo = append(todo, pendingElem{pe, name, call})
	}
	for uid, n := range fresh {
		if w.perUID[uid]+n > w.maxPer {
			if now.Sub(w.sweep) > 100*time.Millisecond {
				w.sweepLocked(now) // what expired no longer counts
			}
			if w.perUID[uid]+n > w.maxPer {
				w.mu.Unlock()
				return ErrTooMany
			}
		}
	}
	if len(todo) == 0 {
		w.mu.Unlock()
		return nil
	}
	for _, p := range todo {
		w.reserve(elemKey{p.pe.UID, p.pe.Element})
	}
	w.pending = append(w.pending, todo...)
	w.waiters = append(w.waiters, call)
	if !w.busy {
		w.busy = true
		go w.flush()
	}
	w.mu.Unlock()
	return <-call.done
}

// Held is Ensure when the kernel holds every element already, answered
// for name, until at least now+hold: it then does what Ensure does (the
// name recorded for each) and returns true. It never waits: false, with
// nothing changed, when Ensure would write, wait or fail (the caller then
// calls Ensure).
func (w *writer) Held(es []ruleset.ProxyElement, name string, hold time.Duration) bool {
	until := w.now().Add(hold)
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(es) > ensureScan {
		return false
	}
	for i, pe := range es {
		k := elemKey{pe.UID, pe.Element}
		if dupOf(es[:i], pe) {
			continue
		}
		if !admitsName(w.pol, k, name) || w.need(k, until) {
			return false
		}
	}
	for _, pe := range es {
		w.known[elemKey{pe.UID, pe.Element}].addName(name)
	}
	return true
}

// ensureScan is the longest list Ensure checks for duplicates by scanning
// it (a map past it).
const ensureScan = 16

// dupOf reports whether es holds pe's element for pe's uid.
func dupOf(es []ruleset.ProxyElement, pe ruleset.ProxyElement) bool {
	for _, o := range es {
		if o.UID == pe.UID && o.Element == pe.Element {
			return true
		}
	}
	return false
}

// flush writes what is pending, in rounds, until nothing is.
func (w *writer) flush() {
	for {
		w.kmu.Lock()
		w.mu.Lock()
		batch, waiters := w.pending, w.waiters
		w.pending, w.waiters = nil, nil
		if len(batch) == 0 && len(waiters) == 0 {
			w.busy = false
			w.mu.Unlock()
			w.kmu.Unlock()
			return
		}
		stale := w.staleLocked()
		w.mu.Unlock()

		w.removeStale(stale)
		var errs map[*ensureCall]error
		if len(batch) > 0 {
			var start time.Time
			start, errs = w.write(batch)
			w.mu.Lock()
			for _, p := range batch {
				k := elemKey{p.pe.UID, p.pe.Element}
				if errs[p.call] == nil {
					w.set(k, start.Add(p.pe.Timeout), p.name)
					delete(w.stale, k)
				}
				w.release(k)
			}
			w.mu.Unlock()
		}
		w.kmu.Unlock()
		for _, c := range waiters {
			err := errs[c]
			if err == nil && c.revoked {
				c.done <- errPolicyChanged
				continue
			}
			c.done <- err
		}
	}
}

// write puts batch in the kernel in one transaction and returns when it
// started and the error of each call (nil: written). If the kernel refuses
// the transaction, each call's answer is written in one of its own: an
// answer the kernel refuses (an element that partly overlaps another of the
// same uid and address in an interval set, EEXIST: two entries with
// overlapping port ranges and a name under each) fails alone, not every
// answer released with it, other services' too. Called with kmu held.
func (w *writer) write(batch []pendingElem) (time.Time, map[*ensureCall]error) {
	start := w.now()
	err := w.add(batch)
	if err == nil {
		return start, nil
	}
	var calls []*ensureCall
	by := map[*ensureCall][]pendingElem{}
	for _, p := range batch {
		if by[p.call] == nil {
			calls = append(calls, p.call)
		}
		by[p.call] = append(by[p.call], p)
	}
	errs := map[*ensureCall]error{}
	if len(calls) == 1 {
		errs[calls[0]] = err
		return start, errs
	}
	for _, c := range calls {
		if err := w.add(by[c]); err != nil {
			errs[c] = err
		}
	}
	return start, errs
}

// add writes ps in one transaction.
func (w *writer) add(ps []pendingElem) error {
	es := make([]ruleset.ProxyElement, len(ps))
	for i, p := range ps {
		es[i] = p.pe
	}
	start := w.now()
	err := w.k.AddProxy(dedupe(es))
	if w.observe != nil {
		w.observe(w.now().Sub(start).Seconds())
	}
	return err
}

// sweepLocked forgets what the kernel has dropped by now.
func (w *writer) sweepLocked(now time.Time) {
	w.sweep = now
	for k, st := range w.known {
		if st.exp.Before(now) {
			w.drop(k)
		}
	}
}

// dedupe keeps, of elements written twice in one batch, the longest timeout.
func dedupe(es []ruleset.ProxyElement) []ruleset.ProxyElement {
	idx := map[elemKey]int{}
	out := es[:0:0]
	for _, pe := range es {
		k := elemKey{pe.UID, pe.Element}
		if i, ok := idx[k]; ok {
			out[i].Timeout = max(out[i].Timeout, pe.Timeout)
			continue
		}
		idx[k] = len(out)
		out = append(out, pe)
	}
	return out
}

// SetPolicy puts pol in force and takes out of the kernel, at once, every
// answer it does not allow: a removed or narrowed entry, a changed port, an
// allowlist that left dns: proxy or changed its user. Pending answers it
// does not allow are not written. It returns how many elements it took
// out, or the error of that removal (retried with the next write and the
// next policy).
func (w *writer) SetPolicy(pol *Policy) (int, error) {
	// Pending writes at once: what is not written yet is judged now (the
	// transaction in flight cannot take it meanwhile).
	w.mu.Lock()
	w.pol = pol
	if pol.MaxAnswers > 0 {
		w.maxPer = pol.MaxAnswers
	}
	kept := w.pending[:0]
	for _, p := range w.pending {
		k := elemKey{p.pe.UID, p.pe.Element}
		if admits(pol, k, []string{p.name}) {
			kept = append(kept, p)
			continue
		}
		p.call.revoked = true
		w.release(k)
	}
	w.pending = kept
	w.mu.Unlock()

	// Then what the kernel holds, once the transaction in flight is in.
	w.kmu.Lock()
	defer w.kmu.Unlock()
	w.mu.Lock()
	type uidName struct {
		uid  uint32
		name string
	}
	memo := map[uidName][]config.Entry{}
	match := func(al *Allowlist, name string) []config.Entry {
		k := uidName{al.UID, name}
		es, ok := memo[k]
		if !ok {
			es = al.Match(name)
			memo[k] = es
		}
		return es
	}
	n := 0
	for k, st := range w.known {
		if !admitsBy(w.pol, k, st.names, match) {
			w.drop(k)
			w.stale[k] = true
			n++
		}
	}
	stale := w.staleLocked()
	w.mu.Unlock()
	return n, w.removeStale(stale)
}

// staleLocked lists what is still to be taken out of the kernel.
func (w *writer) staleLocked() []ruleset.ProxyElement {
	var out []ruleset.ProxyElement
	for k := range w.stale {
		out = append(out, ruleset.ProxyElement{UID: k.uid, Element: k.e})
	}
	return out
}

// removeStale takes es out of the kernel; called with kmu held.
func (w *writer) removeStale(es []ruleset.ProxyElement) error {
	if len(es) == 0 {
		return nil
	}
	var err error
	for i := 0; i < len(es) && err == nil; i += 4096 {
		err = w.k.DeleteProxy(es[i:min(i+4096, len(es))])
	}
	done := es
	if err != nil {
		// Each on its own: one element the kernel refuses must not keep
		// the others. Deleting adds each element first (it may have timed
		// out), and an element that timed out can partly overlap a live
		// one of the same address in an interval set (two entries with
		// overlapping port ranges): EEXIST for the whole transaction, and
		// the live answer stayed. Once the live one is out, the other goes
		// too: rounds while one takes something out.
		done = nil
		left := es
		for progress := true; progress && len(left) > 0; {
			progress = false
			var again []ruleset.ProxyElement
			for _, pe := range left {
				if w.k.DeleteProxy([]ruleset.ProxyElement{pe}) == nil {
					done, progress = append(done, pe), true
				} else {
					again = append(again, pe)
				}
			}
			left = again
		}
		if len(left) == 0 {
			err = nil
		}
	}
	w.mu.Lock()
	for _, pe := range done {
		delete(w.stale, elemKey{pe.UID, pe.Element})
	}
	w.mu.Unlock()
	if err != nil && w.failed != nil {
		w.failed(err)
	}
	return err
}

// Refill writes again every element still alive, with what it has left:
// after the table was removed and restored, or to adopt what the kernel
// holds at start (seed).
func (w *writer) Refill() error {
	now := w.now()
	w.mu.Lock()
	var es []ruleset.ProxyElement
	for k, st := range w.known {
		if left := st.exp.Sub(now); left > 0 {
			pe := ruleset.ProxyElement{UID: k.uid, Element: k.e, Timeout: left}
			if len(st.names) > 0 {
				pe.Name = st.names[len(st.names)-1]
			}
			es = append(es, pe)
		}
	}
	w.mu.Unlock()
	for i := 0; i < len(es); i += 4096 {
		if err := w.k.AddProxy(es[i:min(i+4096, len(es))]); err != nil {
			return err
		}
	}
	return nil
}

// Seed records what the kernel holds (ReadProxy), so that a restarted
// daemon does not write every element again, with the name each was
// written for (its comment). An element without one (written by an older
// egressd) is kept by the next policy where a name entry of its allowlist
// gives its protocol and ports.
func (w *writer) Seed(es []ruleset.ProxyElement) {
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, pe := range es {
		w.set(elemKey{pe.UID, pe.Element}, now.Add(pe.Timeout), pe.Name)
	}
}
