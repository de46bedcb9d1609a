package dnsproxy

import (
	"sync"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/egressd/egressd/internal/event"
)

// maxRefusedKeys bounds the distinct refusals one window remembers; more
// are counted and reported in one dns_refused_overflow event.
const maxRefusedKeys = 1024

type refusedKey struct {
	allowlist, user string
	uid             uint32
	name            string
	qtype           uint16
	why             string
}

// refusals turns refused queries into bounded dns_refused events, as deny
// events are: the first of a kind in a window at once, the repeats as one
// summary when the window closes.
//
// The lines are written by a goroutine of their own, never on the path of
// a query: the proxy's reader refuses queries itself, and a log write that
// blocks (journald stalled, a full pipe) must not stop it reading every
// user's queries (red team rtb2, TestRedteamRTB2StalledRefusalLogStallsNoOne).
// Lines that find the queue full are counted and reported with the next
// dns_refused_overflow.
type refusals struct {
	log      *zap.Logger
	interval time.Duration
	now      func() time.Time

	mu       sync.Mutex
	window   time.Time
	repeats  map[refusedKey]int
	overflow int

	lines   chan refusedLine
	wmu     sync.Mutex
	writing bool // a writer goroutine runs (it ends when the queue is empty)
	lost    int  // lines the full queue refused, under wmu
}

// refusedLine is one line for the writer: a refusal, or (over > 0) an
// overflow summary.
type refusedLine struct {
	k       refusedKey
	count   int
	summary bool
	over    int
}

func newRefusals(log *zap.Logger, interval time.Duration, now func() time.Time) *refusals {
	return &refusals{log: log, interval: interval, now: now, repeats: map[refusedKey]int{}, lines: make(chan refusedLine, maxRefusedKeys+2)}
}

// queue hands l to the writer without waiting.
func (r *refusals) queue(l refusedLine) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	select {
	case r.lines <- l:
	default:
		r.lost += max(1, l.over)
		return
	}
	if !r.writing {
		r.writing = true
		go r.write()
	}
}

// write writes the queued lines, and ends when none is left.
func (r *refusals) write() {
	for {
		r.wmu.Lock()
		var l refusedLine
		select {
		case l = <-r.lines:
		default:
			r.writing = false
			r.wmu.Unlock()
			return
		}
		r.wmu.Unlock()
		if l.over > 0 {
			r.log.Warn("more distinct refused DNS queries than one window reports", event.Field(event.DNSRefusedOverflow),
				zap.Int("count", l.over), zap.Duration("window", r.interval))
			continue
		}
		r.writeLine(l.k, l.count, l.summary)
	}
}

func (r *refusals) add(allowlist, user string, uid uint32, name string, qtype uint16, why string) {
	k := refusedKey{allowlist, user, uid, name, qtype, why}
	now := r.now()
	r.mu.Lock()
	if now.Sub(r.window) >= r.interval {
		r.flushLocked()
		r.window = now
	}
	n, seen := r.repeats[k]
	switch {
	case seen:
		r.repeats[k] = n + 1
		r.mu.Unlock()
		return
	case len(r.repeats) >= maxRefusedKeys:
		r.overflow++
		r.mu.Unlock()
		return
	}
	r.repeats[k] = 0
	r.mu.Unlock()
	r.emit(k, 1, false)
}

func (r *refusals) emit(k refusedKey, count int, summary bool) {
	r.queue(refusedLine{k: k, count: count, summary: summary})
}

func (r *refusals) writeLine(k refusedKey, count int, summary bool) {
	fs := []zap.Field{event.Field(event.DNSRefused), zap.String("allowlist", k.allowlist), zap.String("user", k.user),
		zap.Uint32("uid", k.uid), zap.String("name", k.name), zap.String("type", typeString(k.qtype)), zap.String("reason", k.why),
		zap.Int("count", count)}
	if summary {
		fs = append(fs, zap.Bool("summary", true), zap.Duration("window", r.interval))
	}
	r.log.Warn("DNS query refused", fs...)
}

func typeString(t uint16) string {
	if s, ok := dns.TypeToString[t]; ok {
		return s
	}
	return dns.Type(t).String()
}

// flush queues the window's summaries and waits, at most flushWait, until
// every queued line is written (on stop).
func (r *refusals) flush() {
	r.mu.Lock()
	r.flushLocked()
	r.mu.Unlock()
	for deadline := time.Now().Add(flushWait); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		r.wmu.Lock()
		done := !r.writing
		r.wmu.Unlock()
		if done {
			return
		}
	}
}

// flushWait bounds how long a stop waits for the refusals' log lines.
const flushWait = 2 * time.Second

func (r *refusals) flushLocked() {
	for k, n := range r.repeats {
		if n > 0 {
			r.emit(k, n, true)
		}
	}
	r.wmu.Lock()
	over := r.overflow + r.lost
	r.lost = 0
	r.wmu.Unlock()
	if over > 0 {
		r.queue(refusedLine{over: over})
	}
	r.repeats, r.overflow = map[refusedKey]int{}, 0
}
