package logs

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Anywhere but a terminal or journald's stream (a file, a pipe), events
// are JSON lines; Sync reaches the file.
func TestNewCoreJSONLines(t *testing.T) {
	t.Setenv("JOURNAL_STREAM", "")
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	log := zap.New(NewCore(zap.NewProductionEncoderConfig(), f, zapcore.InfoLevel))
	log.Debug("not enabled")
	log.Warn("connection denied", zap.String("event", "deny"), zap.Uint16("dport", 443))
	if err := log.Sync(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 1 {
		t.Fatalf("%d lines, want 1 (debug is below the level):\n%s", len(lines), b)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatalf("not a JSON line: %q: %v", lines[0], err)
	}
	if m["msg"] != "connection denied" || m["level"] != "warn" || m["event"] != "deny" || m["dport"] != float64(443) {
		t.Errorf("line %v", m)
	}
}

// JOURNAL_STREAM is inherited by children whose stderr goes elsewhere: only
// the stream it names (device:inode) is journald's.
func TestIsJournal(t *testing.T) {
	f, _ := journalStream(t, false)
	stream := os.Getenv("JOURNAL_STREAM")
	other, err := os.CreateTemp(t.TempDir(), "other")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for _, c := range []struct {
		f      *os.File
		stream string
		want   bool
	}{{f, stream, true}, {other, stream, false}, {f, "", false}, {f, "1:2", false}} {
		if got := isJournal(c.f, c.stream); got != c.want {
			t.Errorf("isJournal(%s, %q) = %v, want %v", c.f.Name(), c.stream, got, c.want)
		}
	}
}

// Values that are neither strings, numbers, times nor lists of strings
// become JSON in the journal; a list of strings is joined by commas.
func TestJournalFieldValues(t *testing.T) {
	got := JournalFields([]zapcore.Field{
		zap.Strings("names", []string{"a.example", "b.example"}),
		zap.Ints("ports", []int{80, 443}),
		zap.Any("limits", map[string]int{"max": 3}),
		zap.Duration("window", 90*time.Second),
		zap.Bool("audit", true),
	})
	for k, want := range map[string]string{
		"EGRESSD_NAMES": "a.example,b.example", "EGRESSD_PORTS": "[80,443]", "EGRESSD_LIMITS": `{"max":3}`,
		"EGRESSD_WINDOW": "1m30s", "EGRESSD_AUDIT": "true", "SYSLOG_IDENTIFIER": "egressd",
	} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
	if _, ok := got["MESSAGE_ID"]; ok {
		t.Error("MESSAGE_ID without an event")
	}
	if v := jsonValue(func() {}); v == "" {
		t.Error("an unencodable value vanished from the journal")
	}
}

type syncCounter struct {
	strings.Builder
	syncs int
}

func (s *syncCounter) Sync() error { s.syncs++; return nil }

// Sync passes through the shaping of DNS failures and the journal core to
// the stream underneath (the daemon syncs before it exits).
func TestSyncPassesThrough(t *testing.T) {
	enc := zap.NewProductionEncoderConfig()
	w := &syncCounter{}
	if err := zap.New(Quiet(zapcore.NewCore(zapcore.NewJSONEncoder(enc), w, zapcore.InfoLevel), time.Minute)).Sync(); err != nil || w.syncs != 1 {
		t.Errorf("quiet core: Sync %v, %d syncs underneath, want 1", err, w.syncs)
	}
	w = &syncCounter{}
	jc := newJournalCore(zapcore.NewJSONEncoder(enc), zapcore.InfoLevel, sendJournal, zapcore.NewCore(zapcore.NewJSONEncoder(enc), w, zapcore.InfoLevel))
	if err := jc.Sync(); err != nil || w.syncs != 1 {
		t.Errorf("journal core: Sync %v, %d syncs of its fallback stream, want 1", err, w.syncs)
	}
	if ce := jc.Check(zapcore.Entry{Level: zapcore.DebugLevel}, nil); ce != nil {
		t.Error("the journal core takes entries below its level")
	}
}
