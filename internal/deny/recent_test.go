package deny

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func TestRecentAggregatesAndBounds(t *testing.T) {
	r := NewRecent(20)
	at := time.Unix(100, 0)
	ev := func(dst string, port uint16, audit bool) Event {
		at = at.Add(time.Second)
		return Event{Allowlist: "billing", Proto: "tcp", Dst: netip.MustParseAddr(dst), DPort: port, Count: 1, First: at, Last: at, Audit: audit}
	}
	r.Record(ev("192.0.2.1", 443, false))
	r.Record(ev("192.0.2.1", 443, false))
	r.Record(ev("192.0.2.1", 443, true)) // audited apart from denied
	doc, seq := r.Snapshot(at)
	if seq != 3 || len(doc.Entries) != 2 {
		t.Fatalf("entries %+v", doc.Entries)
	}
	if e := doc.Entries[1]; e.Count != 2 || e.Audit || !e.Last.Equal(time.Unix(102, 0)) || !e.First.Equal(time.Unix(101, 0)) {
		t.Errorf("aggregated entry %+v", e)
	}
	if doc.Entries[0].Seq <= doc.Entries[1].Seq {
		t.Errorf("most recent first, with increasing seq: %+v", doc.Entries)
	}
	if _, again := r.Snapshot(at); again != seq {
		t.Error("unchanged store reported as changed")
	}
	// What a previous run kept comes back, and the sequence continues.
	r2 := NewRecent(20)
	r2.Load(doc.Entries)
	r2.Record(ev("192.0.2.9", 22, false))
	if d2, s2 := r2.Snapshot(at); len(d2.Entries) != 3 || s2 != seq+1 {
		t.Errorf("loaded store: %d entries, seq %d; want 3, %d", len(d2.Entries), s2, seq+1)
	}
	for i := 0; i < 100; i++ { // a flood of new destinations stays bounded
		r.Record(ev(fmt.Sprintf("198.51.100.%d", i), 80, false))
	}
	doc, _ = r.Snapshot(at)
	if len(doc.Entries) > 20 || doc.Entries[0].Dst != "198.51.100.99" {
		t.Errorf("%d entries kept (max 20), newest %s", len(doc.Entries), doc.Entries[0].Dst)
	}
}
