package deny

import (
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/nflog"
	"github.com/egressd/egressd/ruleset"
)

type lookup struct{}

func (lookup) User(a string) (string, bool) { return "billing", a == "billing" }
func (lookup) AllowlistOf(uid uint32) (string, bool) {
	if uid == 1001 {
		return "billing", true
	}
	return "", false
}
func (lookup) NamesFor(allowlist string, a netip.Addr) []string {
	if allowlist == "billing" && a == netip.MustParseAddr("192.0.2.10") {
		return []string{"api.example.test"}
	}
	return nil
}

func pkt(dst string, port uint16) nflog.Packet {
	return nflog.Packet{Prefix: ruleset.LogPrefix("egressd"), UID: 1001, HasUID: true, Proto: 6,
		Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr(dst), SPort: 40000, DPort: port, Time: time.Unix(1, 0)}
}

func TestAggregator(t *testing.T) {
	var events []Event
	var overs []Overflow
	a := New(lookup{}, func(e Event) { events = append(events, e) }, func(o Overflow) { overs = append(overs, o) })
	a.MaxKeys = 3

	if !a.Add(pkt("192.0.2.10", 8443)) {
		t.Fatal("egressd's packet ignored")
	}
	if len(events) != 1 {
		t.Fatalf("first packet: %d events, want 1 at once", len(events))
	}
	e := events[0]
	if e.Allowlist != "billing" || e.User != "billing" || e.UID != 1001 || e.Proto != "tcp" || e.Dst.String() != "192.0.2.10" ||
		e.DPort != 8443 || e.Count != 1 || e.Summary || len(e.Names) != 1 || e.Names[0] != "api.example.test" {
		t.Fatalf("event = %+v", e)
	}
	for i := 0; i < 999; i++ {
		a.Add(pkt("192.0.2.10", 8443))
	}
	if len(events) != 1 {
		t.Fatalf("repeated packets emitted %d events before the window ended", len(events))
	}
	a.Add(pkt("198.51.100.20", 4444))
	a.Add(pkt("198.51.100.21", 4444))
	for i := 0; i < 10; i++ {
		a.Add(pkt("198.51.100.22", 4444)) // beyond MaxKeys
	}
	if a.Add(nflog.Packet{Prefix: "someone else"}) {
		t.Fatal("foreign prefix accepted")
	}
	a.Flush()
	total, summaries := 0, 0
	for _, e := range events {
		total += e.Count
		if e.Summary {
			summaries++
		}
	}
	if len(events) != 4 || summaries != 1 || len(overs) != 1 || overs[0].Count != 10 || total+overs[0].Count != 1012 {
		t.Fatalf("events %d (summaries %d), overflow %+v, total %d", len(events), summaries, overs, total)
	}
	// A new window starts afresh.
	a.Add(pkt("192.0.2.10", 8443))
	if len(events) != 5 || events[4].Summary {
		t.Fatal("new window did not emit the first packet at once")
	}
}

// An audit-mode packet (logged with the audit prefix, then let through) is
// an event with Audit set, aggregated apart from real denies of the same key.
func TestAggregatorAudit(t *testing.T) {
	var events []Event
	a := newAggregator(lookup{}, "egressd", func(e Event) { events = append(events, e) }, func(Overflow) {})
	audited := pkt("192.0.2.10", 8443)
	audited.Prefix = ruleset.AuditPrefix("egressd")
	if !a.Add(audited) || !a.Add(pkt("192.0.2.10", 8443)) {
		t.Fatal("egressd's packets ignored")
	}
	if len(events) != 2 || !events[0].Audit || events[1].Audit {
		t.Fatalf("events = %+v; want one audited, one denied", events)
	}
	other := pkt("192.0.2.10", 8443)
	other.Prefix = ruleset.AuditPrefix("someone-else")
	if a.Add(other) {
		t.Error("another prefix's packet taken")
	}
}
