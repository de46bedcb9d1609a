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
type refusals struct {
	log      *zap.Logger
	interval time.Duration
	now      func() time.Time

	mu       sync.Mutex
	window   time.Time
	repeats  map[refusedKey]int
	overflow int
}

func newRefusals(log *zap.Logger, interval time.Duration, now func() time.Time) *refusals {
	return &refusals{log: log, interval: interval, now: now, repeats: map[refusedKey]int{}}
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

func (r *refusals) flush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.flushLocked()
}

func (r *refusals) flushLocked() {
	for k, n := range r.repeats {
		if n > 0 {
			r.emit(k, n, true)
		}
	}
	if r.overflow > 0 {
		r.log.Warn("more distinct refused DNS queries than one window reports", event.Field(event.DNSRefusedOverflow),
			zap.Int("count", r.overflow), zap.Duration("window", r.interval))
	}
	r.repeats, r.overflow = map[refusedKey]int{}, 0
}
