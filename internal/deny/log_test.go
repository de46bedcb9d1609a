package deny

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/event"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// Each deny event says what happened in its message (denied or, in audit
// mode, let through; one packet or a window's summary) and carries the
// fields docs/events.md lists; a unit allowlist's event names its unit,
// a user allowlist's has no unit field.
func TestLogMessagesAndFields(t *testing.T) {
	at := time.Unix(1700000000, 0)
	base := Event{Allowlist: "web", User: "www-data", UID: 33, Proto: "tcp", Src: netip.MustParseAddr("192.0.2.10"),
		Dst: netip.MustParseAddr("203.0.113.7"), DPort: 443, Names: []string{"api.example.test"}, Count: 1, First: at, Last: at}
	for _, c := range []struct {
		summary, audit bool
		unit           string
		want           string
	}{
		{false, false, "", "connection denied"},
		{true, false, "", "connections denied (summary of the window)"},
		{false, true, "", "connection would be denied (audit mode: let through)"},
		{true, true, "web.service", "connections would be denied (audit mode: let through; summary of the window)"},
	} {
		core, logs := observer.New(zapcore.DebugLevel)
		e := base
		e.Summary, e.Audit, e.Unit = c.summary, c.audit, c.unit
		Log(zap.New(core), e)
		all := logs.All()
		if len(all) != 1 {
			t.Fatalf("%d entries", len(all))
		}
		got := all[0]
		f := got.ContextMap()
		if got.Message != c.want || got.Level != zapcore.WarnLevel || f["event"] != string(event.Deny) {
			t.Errorf("logged %q at %s, event %v; want %q at warn, event %s", got.Message, got.Level, f["event"], c.want, event.Deny)
		}
		if f["allowlist"] != "web" || f["uid"] != uint32(33) || f["dst"] != "203.0.113.7" || f["dport"] != uint16(443) ||
			f["summary"] != c.summary || f["audit"] != c.audit {
			t.Errorf("fields %v", f)
		}
		if u, ok := f["unit"]; ok != (c.unit != "") || (ok && u != c.unit) {
			t.Errorf("unit field %v (present %v), want %q", u, ok, c.unit)
		}
	}
}

func TestLogBindMessages(t *testing.T) {
	e := Event{Allowlist: "web", UID: 33, Proto: "tcp", Dst: netip.MustParseAddr("0.0.0.0"), DPort: 8081, Count: 3}
	for _, c := range []struct {
		summary, audit bool
		want           string
	}{
		{false, false, "bind refused: the port is not in the allowlist's listen:"},
		{true, false, "binds refused (summary of the window)"},
		{false, true, "bind would be refused (audit mode: allowed)"},
		{true, true, "binds would be refused (audit mode: allowed; summary of the window)"},
	} {
		core, logs := observer.New(zapcore.DebugLevel)
		e.Summary, e.Audit = c.summary, c.audit
		LogBind(zap.New(core), e)
		got := logs.All()[0]
		f := got.ContextMap()
		if got.Message != c.want || f["event"] != string(event.BindDenied) || f["port"] != uint16(8081) || f["count"] != int64(3) {
			t.Errorf("logged %q %v; want %q", got.Message, f, c.want)
		}
	}
}

// PublishRecent writes the store at once (an empty document says denies
// are recorded), again when it changed, and a last time when ctx ends,
// before done closes; mode 0600. LoadObserved brings it back; a missing
// file is no observation.
func TestPublishRecentAndLoadObserved(t *testing.T) {
	dir := t.TempDir()
	rec := NewRecent(10)
	ctx, cancel := context.WithCancel(context.Background())
	done := PublishRecent(ctx, rec, dir, ObservedFile, time.Hour, time.Hour, zap.NewNop())
	p := filepath.Join(dir, ObservedFile)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(p); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no first write")
		}
		time.Sleep(5 * time.Millisecond)
	}
	at := time.Unix(1700000000, 0)
	rec.Record(Event{Allowlist: "web", Proto: "tcp", Dst: netip.MustParseAddr("203.0.113.7"), DPort: 443, Count: 2, First: at, Last: at})
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("done not closed after ctx ended")
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s mode %04o, want 0600", p, st.Mode().Perm())
	}

	back := NewRecent(10)
	if err := LoadObserved(back, dir); err != nil {
		t.Fatal(err)
	}
	doc, _ := back.Snapshot(at)
	if len(doc.Entries) != 1 || doc.Entries[0].Allowlist != "web" || doc.Entries[0].Count != 2 || doc.Entries[0].DPort != 443 {
		t.Errorf("loaded %+v, want the event recorded before the end", doc.Entries)
	}

	if err := LoadObserved(NewRecent(10), t.TempDir()); err != nil {
		t.Errorf("a missing observed.json: %v", err)
	}
	if err := os.WriteFile(p, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := LoadObserved(NewRecent(10), dir); err == nil {
		t.Error("a damaged observed.json loaded")
	}
}

func TestProtoName(t *testing.T) {
	for p, want := range map[uint8]string{6: "tcp", 17: "udp", 1: "icmp", 58: "ipv6-icmp", 132: "sctp", 47: "47"} {
		if got := protoName(p); got != want {
			t.Errorf("protoName(%d) = %q, want %q", p, got, want)
		}
	}
}

// The DNS proxy's observations change with every query: when they alone
// changed, the runtime document is written again only every
// resolvedEvery; with a new attempt, at once and with them (learn reads an
// attempt's names beside it, issue 22); and at its last write (issue 24).
func TestPublishRecentObservationsAtTheirOwnPace(t *testing.T) {
	dir := t.TempDir()
	rec := NewRecent(10)
	ctx, cancel := context.WithCancel(context.Background())
	done := PublishRecent(ctx, rec, dir, RecentFile, time.Millisecond, time.Hour, zap.NewNop())
	at := time.Unix(1700000000, 0)
	read := func() RecentDoc {
		var d RecentDoc
		b, err := os.ReadFile(filepath.Join(dir, RecentFile))
		if err == nil {
			err = json.Unmarshal(b, &d)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		return d
	}
	for deadline := time.Now().Add(10 * time.Second); read().Version == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no first write")
		}
	}
	first := read().Updated
	rec.Resolve("web", "a.example.com", []netip.Addr{netip.MustParseAddr("192.0.2.1")}, true, false, at)
	// The marker: a write of the file's, for an attempt, after the
	// observation alone had had 50 ticks to be written.
	time.Sleep(50 * time.Millisecond)
	if d := read(); !d.Updated.Equal(first) || len(d.Resolved) != 0 {
		t.Errorf("written again for an observation alone, before resolvedEvery: %+v", d)
	}
	rec.Resolve("web", "b.example.com", []netip.Addr{netip.MustParseAddr("192.0.2.2")}, true, false, at)
	rec.Record(Event{Allowlist: "web", Proto: "tcp", Dst: netip.MustParseAddr("192.0.2.2"), DPort: 443, Count: 1, First: at, Last: at})
	var d RecentDoc
	for deadline := time.Now().Add(10 * time.Second); len(d.Entries) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a new attempt not written")
		}
		d = read()
	}
	if len(d.Resolved) != 2 {
		t.Errorf("an attempt written without the observations before it: %+v", d.Resolved)
	}
	rec.Resolve("web", "c.example.com", nil, false, true, at)
	cancel()
	<-done
	if d = read(); len(d.Resolved) != 3 || len(d.Entries) != 1 {
		t.Errorf("the last write: %+v", d)
	}
}
