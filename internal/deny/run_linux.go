//go:build linux

package deny

import (
	"context"
	"errors"
	"github.com/egressd/egressd/internal/event"
	"io/fs"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/egressd/egressd/internal/bindguard"
	"github.com/egressd/egressd/internal/metrics"
	"github.com/egressd/egressd/internal/nflog"
	"github.com/egressd/egressd/internal/state"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// event.Deny and event.DenyOverflow are event names (SPEC.md "Events").
const ()

// Log writes one deny event.
func Log(log *zap.Logger, e Event) {
	msg := "connection denied"
	if e.Summary {
		msg = "connections denied (summary of the window)"
	}
	if e.Audit {
		msg = "connection would be denied (audit mode: let through)"
		if e.Summary {
			msg = "connections would be denied (audit mode: let through; summary of the window)"
		}
	}
	log.Warn(msg, event.Field(event.Deny), zap.String("allowlist", e.Allowlist), zap.String("user", e.User), unitField(e.Unit),
		zap.Uint32("uid", e.UID), zap.String("proto", e.Proto), zap.Stringer("src", e.Src), zap.Stringer("dst", e.Dst),
		zap.Uint16("dport", e.DPort), zap.Strings("names", e.Names), zap.Int("count", e.Count), zap.Bool("summary", e.Summary), zap.Bool("audit", e.Audit),
		zap.Time("first", e.First), zap.Time("last", e.Last))
}

// Run reads the NFLOG group until ctx ends, logging bounded deny events. It
// returns once the last window is flushed (logged and recorded in rec).
// Enforcement never depends on it: the kernel rejects whether or not anyone
// reads the log.
// prefix is deny_log.prefix: packets with other prefixes are another tool's.
// Every event is also recorded in rec (when not nil), which `egressd
// denies` reads through PublishRecent.
func Run(ctx context.Context, l *nflog.Listener, lookup Lookup, prefix string, interval time.Duration, log *zap.Logger, m *metrics.Metrics, rec *Recent) {
	agg := newAggregator(lookup, prefix, func(e Event) {
		m.DenyEvent(e.Allowlist)
		Log(log, e)
	}, func(o Overflow) {
		log.Warn("more distinct denied destinations than one window reports; counted here", event.Field(event.DenyOverflow),
			zap.String("allowlist", o.Allowlist), zap.Int("count", o.Count), zap.Duration("window", interval))
	})
	if rec != nil {
		agg.Record = rec.Record
	}
	fctx, cancel := context.WithCancel(ctx)
	flushed := make(chan struct{})
	go flushEvery(fctx, agg, interval, func() {}, func() { close(flushed) })
	defer func() { cancel(); <-flushed }()
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	for {
		ps, err := l.Read()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, unix.ENOBUFS) {
				m.NFLOG(0, true)
				log.Warn("deny log overrun: the kernel dropped NFLOG messages (enforcement is unaffected)", event.Field(event.DenyOverflow), zap.Error(err))
				continue
			}
			log.Error("reading the deny log failed; deny events stop (enforcement is unaffected)", event.Field(event.DenyLogFailed), zap.Error(err))
			return
		}
		m.NFLOG(len(ps), false)
		for _, p := range ps {
			agg.Add(p)
		}
	}
}

// PublishRecent writes rec to dir/name (mode 0600: which hosts a service
// tried is for root to read) whenever it changed, at most every period,
// until ctx ends, and once more then; done is closed after that last
// write, so that a stopping daemon can wait for it. denies.json in the
// runtime directory serves `egressd denies`, observed.json in the state
// directory `egressd learn`.
//
// The DNS proxy's observations (RecentDoc.Resolved) change with every
// query: when they alone changed, they are written at most every
// resolvedEvery; with new attempts (and at the first and the last write),
// at once. Under a flood of queries, a document of every name asked,
// written four times a second, was the daemon's largest cost after the
// answers themselves (issue 24).
func PublishRecent(ctx context.Context, rec *Recent, dir, name string, every, resolvedEvery time.Duration, log *zap.Logger) (done <-chan struct{}) {
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		t := time.NewTicker(every)
		defer t.Stop()
		var (
			wroteSeq, wroteRSeq uint64
			resolvedAt          time.Time
			resolved            []ResolvedEntry
		)
		write := func(first, last bool) {
			now := time.Now()
			seq, rseq := rec.seqs()
			// With new attempts, the observations are formatted too: an
			// attempt follows the query that gave its address, and learn
			// reads the names beside the addresses (issue 22).
			fresh := rseq != wroteRSeq && (first || last || seq != wroteSeq || now.Sub(resolvedAt)+every/2 >= resolvedEvery) // a tick late is on time
			if !first && seq == wroteSeq && !fresh {
				return
			}
			doc, seq, rseq := rec.snapshot(now, first || fresh)
			if first || fresh {
				resolved, resolvedAt = doc.Resolved, now
			} else {
				doc.Resolved = resolved
			}
			if err := state.WriteJSON(dir, name, 0o600, doc); err != nil {
				log.Warn("cannot publish recent denies; egressd denies and learn will not see them", event.Field(event.StateFailed),
					zap.String("file", name), zap.Error(err))
				return
			}
			wroteSeq = seq
			if first || fresh {
				wroteRSeq = rseq
			}
		}
		write(true, false) // an empty document says that denies are being recorded
		for {
			select {
			case <-ctx.Done():
				write(false, true)
				return
			case <-t.C:
				write(false, false)
			}
		}
	}()
	return ch
}

// LoadObserved reads what a previous run kept in dir/observed.json into rec;
// a missing file is no observation.
func LoadObserved(rec *Recent, dir string) error {
	var doc RecentDoc
	err := state.ReadJSON(dir, ObservedFile, &doc)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	rec.Load(doc.Entries)
	rec.LoadResolved(doc.Resolved)
	return nil
}

// unitField names a unit allowlist's unit; user allowlists' events keep
// their fields as they were.
func unitField(unit string) zap.Field {
	if unit == "" {
		return zap.Skip()
	}
	return zap.String("unit", unit)
}

// LogBind writes one bind_denied event.
func LogBind(log *zap.Logger, e Event) {
	msg := "bind refused: the port is not in the allowlist's listen:"
	switch {
	case e.Audit && e.Summary:
		msg = "binds would be refused (audit mode: allowed; summary of the window)"
	case e.Audit:
		msg = "bind would be refused (audit mode: allowed)"
	case e.Summary:
		msg = "binds refused (summary of the window)"
	}
	log.Warn(msg, event.Field(event.BindDenied), zap.String("allowlist", e.Allowlist), zap.String("user", e.User),
		zap.String("unit", e.Unit), zap.Uint32("uid", e.UID), zap.String("proto", e.Proto), zap.Stringer("address", e.Dst), zap.Uint16("port", e.DPort),
		zap.Int("count", e.Count), zap.Bool("summary", e.Summary), zap.Bool("audit", e.Audit),
		zap.Time("first", e.First), zap.Time("last", e.Last))
}

// RunBinds reads the listen restriction's reports (internal/bindguard) until
// ctx ends or the reader is closed, logging bounded bind_denied events and
// recording them in rec. Once per window it reads lost (the programs' count
// of reports the full ring buffer did not take): an increase is one
// bind_reports_lost event and the metric. As with Run, enforcement never
// depends on it; it returns once the last window is flushed.
func RunBinds(ctx context.Context, rd *ringbuf.Reader, lost func() (uint64, error), lookup Lookup, interval time.Duration, log *zap.Logger, m *metrics.Metrics, rec *Recent) {
	agg := newAggregator(lookup, "", func(e Event) {
		LogBind(log, e)
	}, func(o Overflow) {
		log.Warn("more distinct refused binds than one window reports; counted here", event.Field(event.DenyOverflow),
			zap.String("allowlist", o.Allowlist), zap.Int("count", o.Count), zap.Duration("window", interval))
	})
	if rec != nil {
		agg.Record = rec.Record
	}
	lc := &lostCounter{read: lost, log: log, m: m, window: interval}
	lc.check() // the count so far: reports lost before this egressd are not news
	fctx, cancel := context.WithCancel(ctx)
	flushed := make(chan struct{})
	go flushEvery(fctx, agg, interval, func() { lc.check() }, func() { rd.Close(); close(flushed) })
	defer func() { cancel(); <-flushed }()
	for {
		r, err := rd.Read()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, ringbuf.ErrClosed) {
				return
			}
			log.Error("reading refused binds failed; bind_denied events stop (enforcement is unaffected)", event.Field(event.DenyLogFailed), zap.Error(err))
			return
		}
		b, err := bindguard.Decode(r.RawSample)
		if err != nil {
			continue
		}
		if name, ok := agg.AddBind(Bind{UID: b.UID, Proto: b.Proto, Addr: b.Addr, Port: b.Port, Audit: b.Audit, Time: time.Now(), Cgroup: b.Cgroup}); ok {
			m.BindDenied(name, b.Audit)
		}
	}
}

// flushEvery flushes agg (and calls each) every interval and once more when
// ctx ends, then calls done.
func flushEvery(ctx context.Context, agg *Aggregator, interval time.Duration, each, done func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			agg.Flush()
			each()
			done()
			return
		case <-t.C:
			agg.Flush()
			each()
		}
	}
}

// lostCounter turns the kernel's count of lost reports into at most one
// bind_reports_lost event per window and the metric.
type lostCounter struct {
	read   func() (uint64, error)
	log    *zap.Logger
	m      *metrics.Metrics
	window time.Duration
	seen   uint64
	primed bool
}

func (l *lostCounter) check() {
	if l.read == nil {
		return
	}
	n, err := l.read()
	if err != nil {
		return
	}
	if !l.primed {
		l.seen, l.primed = n, true
		return
	}
	if n <= l.seen {
		return
	}
	delta := n - l.seen
	l.seen = n
	l.m.BindReportsLost(delta)
	l.log.Warn("refused binds were not reported: the ring buffer was full (they were refused all the same)", event.Field(event.BindReportsLost),
		zap.Uint64("count", delta), zap.Uint64("total", n), zap.Duration("window", l.window))
}
