package deny

import (
	"net/netip"
	"testing"
	"time"
)

// Refused binds are bounded like denied packets: per window and key, the
// first is an event, the rest one summary; unrestricted uids are ignored.
func TestAggregatorBinds(t *testing.T) {
	var events []Event
	var overs []Overflow
	a := New(lookup{}, func(e Event) { events = append(events, e) }, func(o Overflow) { overs = append(overs, o) })
	a.MaxKeys = 2
	rec := NewRecent(0)
	a.Record = rec.Record
	any4 := netip.MustParseAddr("0.0.0.0")
	b := Bind{UID: 1001, Proto: 6, Addr: any4, Port: 9999, Time: time.Unix(1, 0)}
	for i := 0; i < 5; i++ {
		if _, ok := a.AddBind(b); !ok {
			t.Fatal("bind of a restricted uid not taken")
		}
	}
	if _, ok := a.AddBind(Bind{UID: 4242, Proto: 6, Port: 9999}); ok {
		t.Fatal("bind of an unrestricted uid taken")
	}
	a.AddBind(Bind{UID: 1001, Proto: 17, Addr: any4, Port: 9999, Audit: true, Time: time.Unix(2, 0)})
	a.AddBind(Bind{UID: 1001, Proto: 6, Addr: any4, Port: 1}) // a third key: overflow
	if len(events) != 2 || !events[0].Bind || events[0].Proto != "tcp" || events[0].DPort != 9999 || events[0].Allowlist != "billing" || events[0].User != "billing" {
		t.Fatalf("events %+v", events)
	}
	if !events[1].Audit || events[1].Proto != "udp" {
		t.Fatalf("audit event %+v", events[1])
	}
	a.Flush()
	if len(events) != 3 || !events[2].Summary || events[2].Count != 4 || !events[2].Bind {
		t.Fatalf("summary %+v", events)
	}
	if len(overs) != 1 || overs[0].Count != 1 {
		t.Fatalf("overflow %+v", overs)
	}
	doc, _ := rec.Snapshot(time.Unix(3, 0))
	listen := 0
	for _, e := range doc.Entries {
		if e.Listen {
			listen++
		}
	}
	if listen != 3 {
		t.Fatalf("recent: %d listen entries, want 3: %+v", listen, doc.Entries)
	}
}

type cgroupLookup struct{ lookup }

func (cgroupLookup) CgroupOf(id uint64) (string, string, bool) {
	return "shop", "shop.service", id == 77
}

// A refusal by a unit's rule names the unit's allowlist and unit, whatever
// the uid; one from an unknown cgroup (a unit gone) is ignored.
func TestAggregatorUnitBinds(t *testing.T) {
	var events []Event
	a := New(cgroupLookup{}, func(e Event) { events = append(events, e) }, func(Overflow) {})
	if name, ok := a.AddBind(Bind{UID: 4242, Proto: 6, Port: 9999, Cgroup: 77}); !ok || name != "shop" {
		t.Fatalf("unit bind: %q, %v", name, ok)
	}
	if _, ok := a.AddBind(Bind{UID: 1001, Proto: 6, Port: 9999, Cgroup: 78}); ok {
		t.Fatal("bind from an unknown cgroup taken")
	}
	if len(events) != 1 || events[0].Allowlist != "shop" || events[0].Unit != "shop.service" || events[0].User != "" || events[0].UID != 4242 {
		t.Fatalf("events %+v", events)
	}
	if _, ok := New(lookup{}, func(Event) {}, func(Overflow) {}).AddBind(Bind{UID: 1001, Proto: 6, Port: 9999, Cgroup: 77}); ok {
		t.Fatal("a unit bind attributed by uid by a lookup that knows no cgroups")
	}
}
