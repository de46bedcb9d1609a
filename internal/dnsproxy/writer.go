package dnsproxy

import (
	"errors"
	"sync"
	"time"

	"github.com/egressd/egressd/ruleset"
)

type elemKey struct {
	uid uint32
	e   ruleset.Element
}

// writer puts answers in the kernel. Concurrent answers are written in one
// transaction (group commit): each caller waits for the transaction that
// carries its elements. An element the kernel holds long enough already is
// not written again. known is the writer's view of the kernel's proxy sets
// (element -> when the kernel drops it); it is bounded by what is alive.
type writer struct {
	k      ruleset.ProxyKernel
	now    func() time.Time
	maxPer int // elements per uid
	// observe, when set, gets each transaction's duration.
	observe func(seconds float64)

	mu      sync.Mutex
	known   map[elemKey]time.Time
	perUID  map[uint32]int // elements known per uid
	pending []ruleset.ProxyElement
	waiters []chan error
	busy    bool
	sweep   time.Time
}

func newWriter(k ruleset.ProxyKernel, now func() time.Time, maxPer int) *writer {
	return &writer{k: k, now: now, maxPer: maxPer, known: map[elemKey]time.Time{}, perUID: map[uint32]int{}}
}

// ErrTooMany: the uid holds MaxElements answers already.
var ErrTooMany = errors.New("the allowlist holds the most DNS proxy answers it may (dns_proxy_max_answers); answers with new addresses fail until old ones expire")

func (w *writer) setMax(n int) {
	w.mu.Lock()
	w.maxPer = n
	w.mu.Unlock()
}

func (w *writer) set(k elemKey, exp time.Time) {
	if _, ok := w.known[k]; !ok {
		w.perUID[k.uid]++
	}
	w.known[k] = exp
}

func (w *writer) drop(k elemKey) {
	if _, ok := w.known[k]; ok {
		delete(w.known, k)
		if w.perUID[k.uid]--; w.perUID[k.uid] <= 0 {
			delete(w.perUID, k.uid)
		}
	}
}

// need reports whether the element must be (re)written for the kernel to
// hold it at least until `until`.
func (w *writer) need(k elemKey, until time.Time) bool {
	exp, ok := w.known[k]
	return !ok || exp.Before(until)
}

// Ensure returns once every element is in the kernel until at least
// now+hold (written with its own Timeout when it was not), or with the
// error of the transaction that failed.
func (w *writer) Ensure(es []ruleset.ProxyElement, hold time.Duration) error {
	now := w.now()
	w.mu.Lock()
	if now.Sub(w.sweep) > time.Minute {
		w.sweepLocked(now)
	}
	var todo []ruleset.ProxyElement
	fresh := map[uint32]int{}
	for _, pe := range es {
		k := elemKey{pe.UID, pe.Element}
		if w.need(k, now.Add(hold)) {
			_, known := w.known[k]
			if !known {
				fresh[pe.UID]++
			}
			pe.Renew = known
			todo = append(todo, pe)
		}
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
	done := make(chan error, 1)
	w.pending = append(w.pending, todo...)
	w.waiters = append(w.waiters, done)
	if !w.busy {
		w.busy = true
		go w.flush()
	}
	w.mu.Unlock()
	return <-done
}

// flush writes what is pending, in rounds, until nothing is.
func (w *writer) flush() {
	for {
		w.mu.Lock()
		batch, waiters := w.pending, w.waiters
		w.pending, w.waiters = nil, nil
		if len(batch) == 0 {
			w.busy = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()

		start := w.now()
		err := w.k.AddProxy(dedupe(batch))
		if w.observe != nil {
			w.observe(w.now().Sub(start).Seconds())
		}

		w.mu.Lock()
		if err == nil {
			for _, pe := range batch {
				k := elemKey{pe.UID, pe.Element}
				if exp := start.Add(pe.Timeout); exp.After(w.known[k]) {
					w.set(k, exp)
				}
			}
		}
		w.mu.Unlock()
		for _, c := range waiters {
			c <- err
		}
	}
}

// sweepLocked forgets what the kernel has dropped by now.
func (w *writer) sweepLocked(now time.Time) {
	w.sweep = now
	for k, exp := range w.known {
		if exp.Before(now) {
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

// Forget drops what the writer knows of uids that are no longer proxy
// users: a rebuild dropped their elements.
func (w *writer) Forget(keep func(uid uint32) bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k := range w.known {
		if !keep(k.uid) {
			w.drop(k)
		}
	}
}

// Refill writes again every element still alive, with what it has left:
// after the table was removed and restored, or to adopt what the kernel
// holds at start (seed).
func (w *writer) Refill() error {
	now := w.now()
	w.mu.Lock()
	var es []ruleset.ProxyElement
	for k, exp := range w.known {
		if left := exp.Sub(now); left > 0 {
			es = append(es, ruleset.ProxyElement{UID: k.uid, Element: k.e, Timeout: left})
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
// daemon does not write every element again.
func (w *writer) Seed(es []ruleset.ProxyElement) {
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, pe := range es {
		w.set(elemKey{pe.UID, pe.Element}, now.Add(pe.Timeout))
	}
}
