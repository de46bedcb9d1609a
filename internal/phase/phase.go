// Package phase times the phases of a run for profiling: where the time of
// `egressd run --once` goes (config and trust checks, hosts file, DNS,
// render, netlink encode, kernel). It is off unless Enable is called
// (cmd/egressd does when EGRESSD_PROFILE is set, docs/performance.md);
// off, Start costs one atomic load and records nothing.
package phase

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

var (
	on    atomic.Bool
	mu    sync.Mutex
	spans []span
)

type span struct {
	name       string
	start, end time.Time
}

// Enable turns recording on.
func Enable() { on.Store(true) }

// Start begins a phase; the returned function ends it. A phase may run
// several times: Write prints each.
func Start(name string) func() {
	if !on.Load() {
		return func() {}
	}
	start := time.Now()
	return func() {
		end := time.Now()
		mu.Lock()
		spans = append(spans, span{name, start, end})
		mu.Unlock()
	}
}

// Write prints the recorded phases, one a line, in the order they started:
// name, start and end in Unix nanoseconds, duration in microseconds.
func Write(w io.Writer) error {
	mu.Lock()
	defer mu.Unlock()
	ss := append([]span(nil), spans...)
	for i := 1; i < len(ss); i++ { // insertion sort by start: few spans
		for j := i; j > 0 && ss[j].start.Before(ss[j-1].start); j-- {
			ss[j], ss[j-1] = ss[j-1], ss[j]
		}
	}
	for _, s := range ss {
		if _, err := fmt.Fprintf(w, "%s %d %d %d\n", s.name, s.start.UnixNano(), s.end.UnixNano(), s.end.Sub(s.start).Microseconds()); err != nil {
			return err
		}
	}
	return nil
}
