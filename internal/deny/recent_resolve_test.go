package deny

import (
	"fmt"
	"net/netip"
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
