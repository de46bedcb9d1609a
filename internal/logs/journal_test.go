package logs

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/egressd/egressd/internal/event"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

type sent struct {
	msg  string
	prio journal.Priority
	vars map[string]string
}

// journalStream makes a file the process's journald stream (JOURNAL_STREAM)
// and records what the journal core sends, failing when fail is set.
func journalStream(t *testing.T, fail bool) (*os.File, *[]sent) {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "stream")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	var got []sent
	prev := sendJournal
	sendJournal = func(msg string, p journal.Priority, vars map[string]string) error {
		if fail {
			return errors.New("journald is gone")
		}
		got = append(got, sent{msg, p, vars})
		return nil
	}
	t.Cleanup(func() { sendJournal = prev })
	return f, &got
}

// Under journald, a deny event's fields are journal fields, with the
// event's MESSAGE_ID, so `journalctl EGRESSD_EVENT=deny` finds it here and on a
// collector; MESSAGE is still the JSON line.
func TestJournalFields(t *testing.T) {
	f, got := journalStream(t, false)
	log := zap.New(Quiet(NewCore(encoder(), f, zapcore.InfoLevel), time.Minute)).With(zap.String("host", "h2"))
	first := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	log.Warn("connection denied", event.Field(event.Deny), zap.String("allowlist", "billing"), zap.Uint32("uid", 1001),
		zap.Stringer("dst", netip.MustParseAddr("192.0.2.10")), zap.Uint16("dport", 8080),
		zap.Strings("names", []string{"a.example", "b.example"}), zap.Bool("audit", false), zap.Time("first", first),
		zap.Duration("window", 10*time.Second), zap.Error(errors.New("boom")))
	log.Debug("below the level", event.Field(event.Resolved))
	if len(*got) != 1 {
		t.Fatalf("%d entries sent, want 1: %v", len(*got), *got)
	}
	s := (*got)[0]
	want := map[string]string{
		"EGRESSD_EVENT": "deny", "EGRESSD_ALLOWLIST": "billing", "EGRESSD_UID": "1001", "EGRESSD_DST": "192.0.2.10",
		"EGRESSD_DPORT": "8080", "EGRESSD_NAMES": "a.example,b.example", "EGRESSD_AUDIT": "false",
		"EGRESSD_FIRST": "2026-12-07T12:00:00Z", "EGRESSD_WINDOW": "10s", "EGRESSD_ERROR": "boom", "EGRESSD_HOST": "h2",
		"MESSAGE_ID": "a58a6a6bc3829bd24069b1bc4d9b1358", "SYSLOG_IDENTIFIER": "egressd",
	}
	for k, v := range want {
		if s.vars[k] != v {
			t.Errorf("%s=%q, want %q (all: %v)", k, s.vars[k], v, s.vars)
		}
	}
	if s.prio != journal.PriWarning || !strings.HasPrefix(s.msg, `{"level":"warn"`) || !strings.Contains(s.msg, `"event":"deny"`) || !strings.Contains(s.msg, `"host":"h2"`) {
		t.Errorf("priority %d, MESSAGE %s", s.prio, s.msg)
	}
	if b, _ := os.ReadFile(f.Name()); len(b) != 0 {
		t.Errorf("sent natively and also on the stream: %q", b)
	}
}

// When journald does not take an entry, it goes to the stream with its
// priority prefix: nothing is lost.
func TestJournalFallback(t *testing.T) {
	f, _ := journalStream(t, true)
	zap.New(NewCore(encoder(), f, zapcore.InfoLevel)).Error("e", event.Field(event.ApplyFailed))
	if b, _ := os.ReadFile(f.Name()); !strings.HasPrefix(string(b), `<3>{"level":"error"`) {
		t.Errorf("stream: %q", b)
	}
}

// MESSAGE_IDs are 128-bit hex and distinct per event.
func TestMessageIDs(t *testing.T) {
	seen := map[string]string{}
	for _, n := range event.All {
		id := event.MessageID(n)
		if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
			t.Errorf("%s: MESSAGE_ID %q", n, id)
		}
		if prev, ok := seen[id]; ok {
			t.Errorf("%s and %s share MESSAGE_ID %s", n, prev, id)
		}
		seen[id] = n
	}
}
