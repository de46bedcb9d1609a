package deny

import (
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/nflog"
	"github.com/egressd/egressd/ruleset"
)

// unitLookup also knows unit keys (the packet mark of a unit deny).
type unitLookup struct{ lookup }

func (unitLookup) UnitOf(key uint32) (string, string, bool) {
	if key == 77 {
		return "shop", "shop.service", true
	}
	return "", "", false
}

func unitPkt(prefix string, mark uint32) nflog.Packet {
	return nflog.Packet{Prefix: prefix, UID: 0, HasUID: true, Mark: mark, Proto: 6,
		Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("198.51.100.7"), SPort: 40000, DPort: 443, Time: time.Unix(1, 0)}
}

// A unit's deny is attributed by its packet's mark (the unit key), whatever
// the uid (root included: a unit may run as root); its audit prefix makes
// an audit event; an unknown key, or a lookup that knows no units, drops it.
func TestAggregatorUnits(t *testing.T) {
	var events []Event
	a := newAggregator(unitLookup{}, "egressd", func(e Event) { events = append(events, e) }, func(Overflow) {})
	if !a.Add(unitPkt(ruleset.LogPrefixOf(ruleset.SubjectUnit, false, "egressd"), 77)) {
		t.Fatal("a unit deny was ignored")
	}
	if !a.Add(unitPkt(ruleset.LogPrefixOf(ruleset.SubjectUnit, true, "egressd"), 77)) {
		t.Fatal("a unit audit was ignored")
	}
	if a.Add(unitPkt(ruleset.LogPrefixOf(ruleset.SubjectUnit, false, "egressd"), 78)) {
		t.Error("a deny with an unknown unit key was taken")
	}
	if a.Add(unitPkt(ruleset.LogPrefixOf(ruleset.SubjectUnit, false, "other"), 77)) {
		t.Error("another prefix's unit deny was taken")
	}
	if len(events) != 2 {
		t.Fatalf("events %+v", events)
	}
	if e := events[0]; e.Allowlist != "shop" || e.Unit != "shop.service" || e.UID != 0 || e.Audit {
		t.Errorf("unit deny %+v", e)
	}
	if e := events[1]; e.Unit != "shop.service" || !e.Audit {
		t.Errorf("unit audit %+v", e)
	}

	plain := newAggregator(lookup{}, "egressd", func(e Event) { t.Errorf("emitted %+v without a unit lookup", e) }, func(Overflow) {})
	if plain.Add(unitPkt(ruleset.LogPrefixOf(ruleset.SubjectUnit, false, "egressd"), 77)) {
		t.Error("a unit deny was taken by a lookup that knows no units")
	}
}

// Without a configured prefix (deny.New: any egressd prefix) an audit
// prefix is an audit event.
func TestAggregatorAnyPrefixAudit(t *testing.T) {
	var events []Event
	a := New(lookup{}, func(e Event) { events = append(events, e) }, func(Overflow) {})
	p := pkt("192.0.2.10", 443)
	p.Prefix = ruleset.AuditPrefix("custom")
	if !a.Add(p) || len(events) != 1 || !events[0].Audit {
		t.Errorf("audit prefix: %+v", events)
	}
}
