package deny

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// The DNS proxy's observations: per allowlist and name, the latest
// addresses (bounded), counts and refusals; they survive a restart
// (Snapshot, then LoadResolved) and never grow past the bound.
func TestResolveKeepsBoundedObservations(t *testing.T) {
	at := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	r := NewRecent(10)
	for i := 0; i < 20; i++ {
		r.Resolve("web", "a.example.com", []netip.Addr{netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})}, true, false, at.Add(time.Duration(i)*time.Second))
	}
	r.Resolve("web", "tunnel.example", nil, false, true, at)
	doc, _ := r.Snapshot(at)
	if len(doc.Resolved) != 2 {
		t.Fatalf("resolved %+v", doc.Resolved)
	}
	a := doc.Resolved[0]
	if a.Name != "a.example.com" || a.Count != 20 || len(a.Addrs) != MaxResolvedAddrs || a.Addrs[0] != "192.0.2.19" || !a.Listed {
		t.Errorf("a.example.com: %+v", a)
	}
	if b := doc.Resolved[1]; b.Refused != 1 || b.Listed {
		t.Errorf("tunnel.example: %+v", b)
	}
	again := NewRecent(10)
	again.LoadResolved(doc.Resolved)
	if d2, _ := again.Snapshot(at); fmt.Sprint(d2.Resolved) != fmt.Sprint(doc.Resolved) {
		t.Errorf("after a restart:\n%v\nwant\n%v", d2.Resolved, doc.Resolved)
	}
	for i := 0; i < 100; i++ {
		r.Resolve("web", fmt.Sprintf("n%d.example.com", i), nil, true, false, at.Add(time.Hour+time.Duration(i)))
	}
	if d, _ := r.Snapshot(at); len(d.Resolved) > 10 {
		t.Errorf("%d names kept, bound 10", len(d.Resolved))
	}
}

// The DNS proxy records every query through Resolve before its answer
// leaves (issue 24): a store full of names drops the least recently asked
// one without looking at the others. It sorted a copy of the whole store
// (one allocation of every key) each time it was full.
func TestResolveFullStoreIsConstantTime(t *testing.T) {
	at := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	r := NewRecent(RecentMax)
	for i := 0; i < RecentMax; i++ {
		r.Resolve("web", fmt.Sprintf("n%d.example.com", i), nil, true, false, at.Add(time.Duration(i)))
	}
	r.Resolve("web", "n0.example.com", nil, true, false, at.Add(time.Hour)) // asked again: the newest
	names := make([]string, 64)
	for i := range names {
		names[i] = fmt.Sprintf("new%d.example.com", i)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i, n := range names {
		r.Resolve("web", n, nil, true, false, at.Add(2*time.Hour+time.Duration(i)))
	}
	runtime.ReadMemStats(&after)
	// The keys alone of a full store are RecentMax×32 bytes; a new name
	// costs its node and its map slot.
	if per := (after.TotalAlloc - before.TotalAlloc) / uint64(len(names)); per > 1024 {
		t.Errorf("a new name into a full store allocated %d bytes (the store copied?)", per)
	}
	doc, _ := r.Snapshot(at)
	if len(doc.Resolved) != RecentMax {
		t.Fatalf("%d names kept, bound %d", len(doc.Resolved), RecentMax)
	}
	kept := map[string]bool{}
	for _, e := range doc.Resolved {
		kept[e.Name] = true
	}
	// The least recently asked went, exactly as many as came.
	for i := 1; i <= len(names); i++ {
		if kept[fmt.Sprintf("n%d.example.com", i)] {
			t.Errorf("n%d.example.com kept, one of the %d least recently asked", i, len(names))
		}
	}
	if !kept["n0.example.com"] || !kept[fmt.Sprintf("n%d.example.com", len(names)+1)] || !kept[names[len(names)-1]] {
		t.Error("a recently asked name dropped")
	}
}

func BenchmarkResolveFullStore(b *testing.B) {
	at := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	r := NewRecent(RecentMax)
	names := make([]string, 2*RecentMax)
	for i := range names {
		names[i] = fmt.Sprintf("n%d.example.com", i)
	}
	addrs := []netip.Addr{netip.MustParseAddr("192.0.2.1")}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		r.Resolve("web", names[i%len(names)], addrs, true, false, at.Add(time.Duration(i)))
	}
}
