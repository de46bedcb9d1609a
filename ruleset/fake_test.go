package ruleset

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/egressd/egressd/config"
)

func kinds(fs []Finding) string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Kind+" "+f.Object)
	}
	return strings.Join(out, ", ")
}

// A fake kernel starts without a table, holds what is applied, and finds
// nothing to report about the plan it holds.
func TestFakeHoldsThePlan(t *testing.T) {
	var f Fake
	p := nftSample()
	if ok, _ := f.TablePresent(); ok {
		t.Fatal("a new fake has a table")
	}
	if fs, _ := f.Verify(p); kinds(fs) != "table_missing inet egressd" {
		t.Fatalf("no table: %v", fs)
	}
	if _, err := f.ReadSets(); !errors.Is(err, ErrNoTable) {
		t.Fatalf("ReadSets without a table: %v", err)
	}
	if f.Dump() != "" {
		t.Fatal("Dump without a table")
	}
	if err := f.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	if fs, err := f.Verify(p); err != nil || len(fs) != 0 {
		t.Fatalf("after ApplyFull: %v %v", fs, err)
	}
	users, _ := f.ReadUsers()
	if !reflect.DeepEqual(users, map[uint32]string{1001: "billing", 1002: "reports"}) {
		t.Errorf("users = %v", users)
	}
	if a, _ := f.ReadAudited(); !reflect.DeepEqual(a, map[uint32]bool{1002: true}) {
		t.Errorf("audited = %v", a)
	}
	sets, _ := f.ReadSets()
	if len(sets[SetName4("billing")]) != 2 || len(sets[SetName6("reports")]) != 0 {
		t.Errorf("sets = %v", sets)
	}
	if f.Dump() != p.NFT() {
		t.Errorf("Dump is not the plan's text:\n%s", f.Dump())
	}
	// The fake's table is its own: changing it leaves the caller's plan alone.
	f.DropElement(SetName4("billing"), p.Sets[SetName4("billing")][0])
	if len(p.Sets[SetName4("billing")]) != 2 {
		t.Fatal("drift reached the caller's plan")
	}
}

// Drift injected behind the caller's back is found by Verify with the
// netlink adapter's kinds, shown by Dump, and repaired by a full apply.
func TestFakeDrift(t *testing.T) {
	p := nftSample()
	e := p.Sets[SetName4("billing")][0]
	extra := ElementFor(config.TCP, netip.MustParsePrefix("203.0.113.66/32"), 22, 22)
	for _, tc := range []struct {
		name  string
		drift func(f *Fake)
		want  string
		dump  string
	}{
		{"table removed", func(f *Fake) { f.RemoveTable() }, "table_missing inet egressd", ""},
		{"element dropped", func(f *Fake) { f.DropElement(SetName4("billing"), e) }, "element_missing allow4_billing", "set allow4 {"},
		{"element added", func(f *Fake) { f.AddElement(SetName4("reports"), extra) }, "element_extra allow4_reports", "1002 . tcp . 203.0.113.66 . 22"},
		{"user dropped", func(f *Fake) { f.DropUser(1002) },
			"element_missing allow4_reports, users_differ users, users_differ owners, users_differ audit", `1001 comment "billing" }`},
		{"rules changed", func(f *Fake) { f.BreakRules(chainRestr) }, "rules_differ restricted", "chain restricted { # rules changed"},
	} {
		f := &Fake{}
		if err := f.ApplyFull(p); err != nil {
			t.Fatal(err)
		}
		tc.drift(f)
		fs, err := f.Verify(p)
		if err != nil || kinds(fs) != tc.want {
			t.Errorf("%s: findings %q (%v), want %q", tc.name, kinds(fs), err, tc.want)
		}
		if d := f.Dump(); !strings.Contains(d, tc.dump) || (tc.dump == "" && d != "") {
			t.Errorf("%s: Dump lacks %q:\n%s", tc.name, tc.dump, d)
		}
		if err := f.ApplyFull(p); err != nil {
			t.Fatal(err)
		}
		if fs, _ := f.Verify(p); len(fs) != 0 {
			t.Errorf("%s: after a full apply: %v", tc.name, fs)
		}
	}
	// A different deny log is a change of the deny chain's rules.
	f := &Fake{}
	f.ApplyFull(p) //nolint:errcheck
	q := p
	q.DenyLog.Prefix = "other"
	if fs, _ := f.Verify(q); kinds(fs) != "rules_differ deny" {
		t.Errorf("deny log changed: %v", fs)
	}
}

// ApplyDelta is as strict as the kernel: one transaction, no missing table,
// no deletion of an element the set lacks, no set without a uid.
func TestFakeApplyDelta(t *testing.T) {
	p := nftSample()
	f := &Fake{}
	if err := f.ApplyDelta(p, Delta{SetName4("billing"): {Add: p.Sets[SetName4("billing")]}}); err == nil {
		t.Fatal("a delta without a table succeeded")
	}
	f.ApplyFull(p) //nolint:errcheck
	add := ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.77/32"), 443, 443)
	absent := ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.78/32"), 443, 443)
	bad := Delta{SetName4("billing"): {Add: []Element{add}}, SetName4("reports"): {Del: []Element{absent}}}
	if err := f.ApplyDelta(p, bad); err == nil || !strings.Contains(err.Error(), "no such element") {
		t.Fatalf("deleting an absent element: %v", err)
	}
	if fs, _ := f.Verify(p); len(fs) != 0 || len(f.Deltas) != 0 {
		t.Fatalf("a failed delta changed the table: %v", fs)
	}
	if err := f.ApplyDelta(p, Delta{SetName4("nobody"): {Add: []Element{add}}}); err == nil {
		t.Fatal("a set without a uid was applied")
	}
	q := copyPlan(p)
	q.Sets[SetName4("billing")] = Normalize(append(append([]Element(nil), p.Sets[SetName4("billing")]...), add))
	d := Diff(p, q)
	if err := f.ApplyDelta(q, d); err != nil {
		t.Fatal(err)
	}
	if fs, _ := f.Verify(q); len(fs) != 0 || len(f.Deltas) != 1 {
		t.Fatalf("after the delta: %v, %d deltas", fs, len(f.Deltas))
	}
}

// Errors are injected per call: Err for the next change, FailNext for the
// next call of one method; either fails that call only, changing nothing.
func TestFakeErrors(t *testing.T) {
	p := nftSample()
	boom := errors.New("boom")
	f := &Fake{Err: boom}
	if err := f.ApplyFull(p); err != boom || f.Fulls != 0 {
		t.Fatalf("Err: %v, %d fulls", err, f.Fulls)
	}
	if err := f.ApplyFull(p); err != nil {
		t.Fatalf("Err was not cleared: %v", err)
	}
	for _, m := range []string{FakeVerify, FakeReadSets, FakeReadUsers, FakeReadAudited, FakeReadDenyCounters, FakeTablePresent, FakeApplyFull, FakeApplyDelta, FakeRemove, FakeRestore} {
		f.FailNext(m, boom)
		var err error
		switch m {
		case FakeVerify:
			_, err = f.Verify(p)
		case FakeReadSets:
			_, err = f.ReadSets()
		case FakeReadUsers:
			_, err = f.ReadUsers()
		case FakeReadAudited:
			_, err = f.ReadAudited()
		case FakeReadDenyCounters:
			_, err = f.ReadDenyCounters()
		case FakeTablePresent:
			_, err = f.TablePresent()
		case FakeApplyFull:
			err = f.ApplyFull(p)
		case FakeApplyDelta:
			err = f.ApplyDelta(p, Delta{})
		case FakeRemove:
			err = f.Remove()
		case FakeRestore:
			err = f.Restore(p)
		}
		if err != boom {
			t.Errorf("%s: %v, want the injected error", m, err)
		}
		if f.Calls(m) == 0 {
			t.Errorf("%s: not counted", m)
		}
	}
	if ok, _ := f.TablePresent(); !ok || f.Fulls != 1 {
		t.Fatalf("failed calls changed the table: present %v, %d fulls", ok, f.Fulls)
	}
}

// Deny counters: every protected allowlist, zero after a full apply;
// Restore only recreates a missing table.
func TestFakeCountersAndRestore(t *testing.T) {
	p := nftSample()
	f := &Fake{}
	f.ApplyFull(p) //nolint:errcheck
	f.Deny("billing", 3)
	if c, _ := f.ReadDenyCounters(); !reflect.DeepEqual(c, map[string]uint64{"billing": 3, "reports": 0}) {
		t.Fatalf("counters = %v", c)
	}
	if err := f.Restore(p); err == nil {
		t.Fatal("Restore over an existing table succeeded")
	}
	f.RemoveTable()
	if _, err := f.ReadDenyCounters(); !errors.Is(err, ErrNoTable) {
		t.Fatalf("counters without a table: %v", err)
	}
	if err := f.Restore(p); err != nil {
		t.Fatal(err)
	}
	if c, _ := f.ReadDenyCounters(); c["billing"] != 0 {
		t.Fatalf("counters after a rebuild = %v", c)
	}
	if err := f.Remove(); err != nil || !f.Removed {
		t.Fatalf("Remove: %v", err)
	}
	if err := f.Remove(); err != nil {
		t.Fatalf("Remove of a missing table: %v", err)
	}
}

// The fake is every kernel interface its callers use.
var (
	_ Kernel        = (*Fake)(nil)
	_ Verifier      = (*Fake)(nil)
	_ CounterReader = (*Fake)(nil)
)
