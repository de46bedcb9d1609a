package logs

import (
	"github.com/egressd/egressd/internal/event"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Event names this shaping emits (SPEC's event contract, README's table).
const ()

// Quiet passes every event through except repeated resolve_failed events:
// while a name (and type) keeps failing, only its first failure is logged;
// every summaryEvery a resolve_failing summary lists the names still
// failing and how many failures were not logged; the name's next answer
// logs resolve_recovered. A DNS outage thus logs one event per name at its
// start, not one per name, type and retry for as long as it lasts.
func Quiet(inner zapcore.Core, summaryEvery time.Duration) zapcore.Core {
	return &quiet{inner: inner, every: summaryEvery, s: &quietState{failing: map[string]*failure{}}}
}

type failure struct {
	name, typ  string
	since      time.Time
	failures   int
	suppressed int
}

type quietState struct {
	mu          sync.Mutex
	failing     map[string]*failure // name/type
	lastSummary time.Time
}

type quiet struct {
	inner zapcore.Core
	every time.Duration
	s     *quietState
}

// Enabled also says yes to debug entries below the level: zap asks before
// Check, and "resolved, unchanged" (debug) is what tells a failing name
// answered again. Write drops them after a look.
func (q *quiet) Enabled(l zapcore.Level) bool { return q.inner.Enabled(l) || l == zapcore.DebugLevel }

func (q *quiet) With(fields []zapcore.Field) zapcore.Core {
	return &quiet{inner: q.inner.With(fields), every: q.every, s: q.s}
}

func (q *quiet) Sync() error { return q.inner.Sync() }

func (q *quiet) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if q.Enabled(ent.Level) || ent.Level == zapcore.DebugLevel {
		return ce.AddCore(ent, q)
	}
	return ce
}

func (q *quiet) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	var ev, name, typ string
	for _, f := range fields {
		if f.Type != zapcore.StringType {
			continue
		}
		switch f.Key {
		case "event":
			ev = f.String
		case "name":
			name = f.String
		case "type":
			typ = f.String
		}
	}
	key := name + "/" + typ
	drop := !q.inner.Enabled(ent.Level)
	var recovered *failure
	var summary []zapcore.Field
	s := q.s
	s.mu.Lock()
	switch ev {
	case event.ResolveFailed:
		if f, ok := s.failing[key]; ok {
			f.failures++
			f.suppressed++
			drop = true
		} else {
			s.failing[key] = &failure{name: name, typ: typ, since: ent.Time, failures: 1}
			if len(s.failing) == 1 {
				s.lastSummary = ent.Time // the first summary comes one period after the outage starts
			}
		}
	case event.Resolved:
		if f, ok := s.failing[key]; ok {
			recovered = f
			delete(s.failing, key)
		}
	}
	if len(s.failing) > 0 && ent.Time.Sub(s.lastSummary) >= q.every {
		s.lastSummary = ent.Time
		var names []string
		suppressed := 0
		for _, f := range s.failing {
			names = append(names, f.name+" "+f.typ)
			suppressed += f.suppressed
			f.suppressed = 0
		}
		sort.Strings(names)
		summary = []zapcore.Field{event.Field(event.ResolveFailing), zap.Strings("names", names),
			zap.Int("count", len(names)), zap.Int("not_logged", suppressed), zap.Duration("every", q.every)}
	}
	s.mu.Unlock()
	var err error
	if recovered != nil {
		err = q.inner.Write(zapcore.Entry{Level: zapcore.InfoLevel, Time: ent.Time, LoggerName: ent.LoggerName, Message: "resolution recovered"},
			[]zapcore.Field{event.Field(event.ResolveRecovered), zap.String("name", recovered.name), zap.String("type", recovered.typ),
				zap.Duration("failed_for", ent.Time.Sub(recovered.since)), zap.Int("failures", recovered.failures)})
	}
	if !drop {
		if werr := q.inner.Write(ent, fields); werr != nil {
			err = werr
		}
	}
	if summary != nil {
		if werr := q.inner.Write(zapcore.Entry{Level: zapcore.WarnLevel, Time: ent.Time, LoggerName: ent.LoggerName, Message: "names still failing to resolve"}, summary); werr != nil {
			err = werr
		}
	}
	return err
}
