package logs

import (
	"errors"
	"fmt"
	"github.com/egressd/egressd/internal/event"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"
)

func encoder() zapcore.EncoderConfig {
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	return enc
}

// Finding 7: journald gets each line's priority; pipelines still get JSON.
func TestJournalPriorities(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stream")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	// The stream carries what journald's native socket did not take.
	prev := sendJournal
	sendJournal = func(string, journal.Priority, map[string]string) error { return errors.New("no journald") }
	defer func() { sendJournal = prev }()
	log := zap.New(NewCore(encoder(), f, zapcore.DebugLevel))
	log.Debug("d")
	log.Info("i")
	log.Warn("w", zap.String("event", "deny"))
	log.Error("e", zap.String("event", "apply_failed"))
	b, _ := os.ReadFile(f.Name())
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i, want := range []string{"<7>{", "<6>{", "<4>{", "<3>{"} {
		if i >= len(lines) || !strings.HasPrefix(lines[i], want) {
			t.Errorf("line %d: %q, want prefix %q", i, lines, want)
		}
	}
	// Another stream (stderr redirected to a file by hand): no prefixes.
	g, _ := os.CreateTemp(t.TempDir(), "other")
	defer g.Close()
	zap.New(NewCore(encoder(), g, zapcore.InfoLevel)).Warn("w")
	if b, _ := os.ReadFile(g.Name()); !strings.HasPrefix(string(b), "{") {
		t.Errorf("not journald's stream, yet: %q", b)
	}
}

// Finding 7: a DNS outage of 3 names logs one event per name and type when
// it starts, periodic summaries, and a recovery event; not one line per
// name, type and retry.
func TestQuietDNSOutage(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	log := zap.New(Quiet(core, time.Minute))
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	names := []string{"a.example", "b.example", "c.example"}
	at := func(d time.Duration) zap.Option {
		return zap.WithClock(fixedClock(t0.Add(d)))
	}
	for s := 0; s <= 130; s += 10 { // retries every 10 s for 130 s
		for _, n := range names {
			for _, typ := range []string{"A", "AAAA"} {
				log.WithOptions(at(time.Duration(s)*time.Second)).Warn("resolution failed",
					zap.String("event", "resolve_failed"), zap.String("name", n), zap.String("type", typ))
			}
		}
	}
	if n := logs.FilterField(zap.String("event", "resolve_failed")).Len(); n != 6 {
		t.Errorf("%d resolve_failed events, want 6 (one per name and type at the start)", n)
	}
	sums := logs.FilterField(zap.String("event", event.ResolveFailing)).All()
	if len(sums) != 2 { // at 60 s and 120 s
		t.Fatalf("%d summaries in 130 s, want 2", len(sums))
	}
	if sums[0].ContextMap()["count"] != int64(6) || sums[0].ContextMap()["not_logged"].(int64) < 30 {
		t.Errorf("summary: %v", sums[0].ContextMap())
	}
	// a.example answers again (a debug "unchanged" refresh, below the level).
	log.WithOptions(at(140*time.Second)).Debug("resolved, unchanged", zap.String("event", "resolved"), zap.String("name", "a.example"), zap.String("type", "A"))
	rec := logs.FilterField(zap.String("event", event.ResolveRecovered)).All()
	if len(rec) != 1 || rec[0].ContextMap()["name"] != "a.example" || rec[0].ContextMap()["failed_for"] != 140*time.Second {
		t.Fatalf("recovery: %v", rec)
	}
	if logs.FilterMessage("resolved, unchanged").Len() != 0 {
		t.Error("a debug entry reached an info-level log")
	}
	// Failing again later: a new start event.
	log.WithOptions(at(150*time.Second)).Warn("resolution failed", zap.String("event", "resolve_failed"), zap.String("name", "a.example"), zap.String("type", "A"))
	if n := logs.FilterField(zap.String("event", "resolve_failed")).Len(); n != 7 {
		t.Errorf("a new failure after recovery: %d resolve_failed events, want 7", n)
	}
	// Other events pass untouched.
	log.Info("x", zap.String("event", "deny"))
	if logs.FilterField(zap.String("event", "deny")).Len() != 1 {
		t.Error("other events are shaped too")
	}
}

type fixedClock time.Time

func (c fixedClock) Now() time.Time                         { return time.Time(c) }
func (c fixedClock) NewTicker(d time.Duration) *time.Ticker { return time.NewTicker(d) }
