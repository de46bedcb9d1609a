package controller

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/ruleset"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// driftKernel is a fake kernel whose table another process can remove or
// change: it answers Verify, TablePresent and Restore from that state.
type driftKernel struct {
	*ruleset.Fake
	gone       bool              // the table was removed
	dormant    bool              // the table was made dormant
	findings   []ruleset.Finding // object drift Verify reports while the table exists
	restores   int
	restoreErr error
}

func (k *driftKernel) ApplyFull(p ruleset.Plan) error {
	err := k.Fake.ApplyFull(p)
	if err == nil {
		k.gone, k.dormant, k.findings = false, false, nil
	}
	return err
}

func (k *driftKernel) TableDormant() (bool, error) { return !k.gone && k.dormant, nil }

func (k *driftKernel) Verify(ruleset.Plan) ([]ruleset.Finding, error) {
	if k.gone {
		return []ruleset.Finding{tableMissing}, nil
	}
	return k.findings, nil
}

func (k *driftKernel) TablePresent() (bool, error) { return !k.gone, nil }

func (k *driftKernel) Restore(p ruleset.Plan) error {
	if k.restoreErr != nil {
		return k.restoreErr
	}
	if !k.gone {
		return errors.New("file exists")
	}
	k.Plan, k.gone = p, false
	k.restores++
	return nil
}

type driftFixture struct {
	k    *driftKernel
	c    *Controller
	now  time.Time
	logs *observer.ObservedLogs
}

func newDriftFixture(t *testing.T) *driftFixture {
	t.Helper()
	f := &fixture{dir: t.TempDir()}
	f.write(t, "egressd.yaml", "resolvers: [\"192.0.2.53:53\"]\n")
	f.write(t, "allow.d/billing.yaml", "user: billing\nallow: [192.0.2.1:443]\n")
	d := &driftFixture{k: &driftKernel{Fake: &ruleset.Fake{}}, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	core, logs := observer.New(zap.DebugLevel)
	d.logs = logs
	var err error
	d.c, err = New(Options{ConfigPath: filepath.Join(f.dir, "egressd.yaml"), ConfigRequired: true, Kernel: d.k,
		Log: zap.New(core), Users: users, Now: func() time.Time { return d.now }, Trust: config.Trust{Above: f.dir}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.c.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *driftFixture) events(name string) int {
	return len(d.logs.FilterField(zap.String("event", name)).All())
}

// turn is one loop turn: verification if due, then sync, as Run does.
func (d *driftFixture) turn() {
	if !d.c.apply.verifyAt.IsZero() && !d.now.Before(d.c.apply.verifyAt) {
		d.c.apply.verify()
	}
	d.c.apply.flushRestoreLog(d.now)
	d.c.sync() //nolint:errcheck
}

// A table removed every 100 ms is restored every time, at once, by the fast
// path; the log gets restoreLogBurst events, then summaries.
func TestDriftTableRemovedIsRestoredEveryTime(t *testing.T) {
	d := newDriftFixture(t)
	fulls := d.k.Fulls
	for i := 0; i < 50; i++ {
		d.now = d.now.Add(100 * time.Millisecond)
		d.k.gone = true
		d.c.apply.kernelChanged()
		d.turn()
		if d.k.gone {
			t.Fatalf("removal %d: the table was not restored in the same loop turn", i+1)
		}
	}
	if d.k.restores != 50 || d.k.Fulls != fulls {
		t.Errorf("%d restores and %d full applies for 50 removals; want 50 restores, no full apply", d.k.restores, d.k.Fulls-fulls)
	}
	if !d.c.apply.drift.holdUntil.IsZero() {
		t.Error("removals of the table put repairs on hold")
	}
	if n := d.events(event.DriftRepaired); n != restoreLogBurst {
		t.Errorf("%d drift_repaired events for 50 restores, want %d", n, restoreLogBurst)
	}
	if n := d.events(event.DriftRepeating); n != 1 {
		t.Errorf("%d drift_repeating events within the first window, want 1", n)
	}
	// The window ends: one summary with the count.
	d.now = d.now.Add(restoreLogWindow)
	d.turn()
	sums := d.logs.FilterField(zap.String("event", event.DriftRepeating)).All()
	if len(sums) != 2 || sums[1].ContextMap()["restores"] != int64(50) {
		t.Fatalf("summary: %v", sums)
	}
	if due := d.c.apply.restoreLogDue(); !due.IsZero() {
		t.Errorf("a summary is still due at %v after the window", due)
	}
}

// Removals faster than restoreMinGap are restored restoreMinGap apart, and
// the loop is told not to coalesce.
func TestDriftRestoresSpaced(t *testing.T) {
	d := newDriftFixture(t)
	d.k.gone = true
	d.c.apply.kernelChanged()
	d.turn()
	first := d.now
	d.now = d.now.Add(5 * time.Millisecond)
	d.k.gone = true
	d.c.apply.kernelChanged()
	d.turn()
	if !d.k.gone || d.k.restores != 1 {
		t.Fatalf("restored again after 5 ms (restores %d)", d.k.restores)
	}
	if !d.c.apply.drift.urgent || !d.c.apply.verifyAt.Equal(first.Add(restoreMinGap)) {
		t.Fatalf("next restore at %v (urgent %v), want %v", d.c.apply.verifyAt, d.c.apply.drift.urgent, first.Add(restoreMinGap))
	}
	d.now = first.Add(restoreMinGap)
	d.turn()
	if d.k.gone || d.k.restores != 2 {
		t.Fatalf("not restored at the spacing (restores %d)", d.k.restores)
	}
}

// A slow full apply spaces restores further: by its duration, up to
// restoreMaxGap.
func TestDriftRestoreGapFollowsApplyTime(t *testing.T) {
	d := newDriftFixture(t)
	d.c.apply.drift.fullTook = 5 * time.Millisecond
	if g := d.c.apply.restoreGap(); g != restoreMinGap {
		t.Errorf("gap %v, want %v", g, restoreMinGap)
	}
	d.c.apply.drift.fullTook = 150 * time.Millisecond
	if g := d.c.apply.restoreGap(); g != 150*time.Millisecond {
		t.Errorf("gap %v, want 150ms", g)
	}
	d.c.apply.drift.fullTook = time.Minute
	if g := d.c.apply.restoreGap(); g != restoreMaxGap {
		t.Errorf("gap %v, want %v", g, restoreMaxGap)
	}
}

// Objects changed again and again are a fight: repairs are held back. A
// removed table is restored during the hold all the same.
func TestDriftObjectFightHeldTableStillRestored(t *testing.T) {
	d := newDriftFixture(t)
	elem := ruleset.Finding{Kind: "element_missing", Object: "allow4_billing", Detail: "1 missing"}
	for i := 0; i < fightRepairs+1; i++ {
		d.now = d.now.Add(time.Second)
		d.k.findings = []ruleset.Finding{elem}
		d.c.apply.kernelChanged()
		d.now = d.now.Add(verifyDelay)
		d.turn()
	}
	if d.c.apply.drift.holdUntil.IsZero() || d.events(event.DriftRepeating) != 1 {
		t.Fatalf("no hold after %d object repairs", fightRepairs+1)
	}
	fulls := d.k.Fulls
	d.now = d.now.Add(time.Second)
	d.k.findings = []ruleset.Finding{elem}
	d.c.apply.kernelChanged()
	d.now = d.now.Add(verifyDelay)
	d.turn()
	if d.k.Fulls != fulls || d.k.findings == nil {
		t.Fatal("an object change was repaired during the hold")
	}
	d.now = d.now.Add(time.Second)
	d.k.gone = true
	d.c.apply.kernelChanged()
	d.turn()
	if d.k.gone {
		t.Fatal("a removed table was not restored during the hold")
	}
	// A table made dormant enforces nothing, as a removed one: restored
	// during the hold too, by a full apply (the fast restore finds it there).
	fulls = d.k.Fulls
	m := len(d.logs.All())
	d.now = d.now.Add(time.Second)
	d.k.dormant = true
	d.c.apply.kernelChanged()
	d.turn()
	if d.k.dormant || d.k.Fulls != fulls+1 {
		t.Fatalf("a dormant table was not rebuilt during the hold (dormant %v, full applies %d)", d.k.dormant, d.k.Fulls-fulls)
	}
	found := false
	for _, e := range d.logs.All()[m:] {
		if e.ContextMap()["event"] == event.DriftRepaired && strings.Contains(fmt.Sprint(e.ContextMap()["found"]), "table_dormant") {
			found = true
		}
	}
	if !found {
		t.Error("no drift_repaired naming table_dormant")
	}
}

// Without the cheap presence check (no TablePresence), a hold still lets
// the full verification find a removed table.
func TestDriftHoldWithoutPresenceCheck(t *testing.T) {
	d := newDriftFixture(t)
	type verifyOnly struct {
		ruleset.Kernel
		ruleset.Verifier
	}
	d.c.o.Kernel = verifyOnly{d.k, d.k}
	d.c.apply.drift.holdUntil = d.now.Add(time.Hour)
	d.k.gone = true
	d.c.apply.kernelChanged()
	d.now = d.now.Add(verifyDelay)
	d.turn()
	if d.k.gone {
		t.Fatal("a removed table was not restored during a hold without TablePresence")
	}
}

// A restore that fails (the table came back meanwhile, or the kernel refused)
// falls back to a full apply in the same turn.
func TestDriftRestoreFallsBackToFull(t *testing.T) {
	d := newDriftFixture(t)
	d.k.restoreErr = errors.New("refused")
	fulls := d.k.Fulls
	d.k.gone = true
	d.c.apply.kernelChanged()
	d.turn()
	if d.k.gone || d.k.Fulls != fulls+1 {
		t.Fatalf("gone %v, full applies %d", d.k.gone, d.k.Fulls-fulls)
	}
}

// A table removed while it is being verified (the read fails) is restored
// by the fast path, not rebuilt.
func TestDriftRemovedDuringVerify(t *testing.T) {
	d := newDriftFixture(t)
	d.c.o.Kernel = &verifyFails{d.k}
	d.k.gone = true
	d.c.apply.verifyAt = d.now
	fulls := d.k.Fulls
	d.turn()
	if d.k.gone || d.k.restores != 1 || d.k.Fulls != fulls {
		t.Fatalf("gone %v, restores %d, full applies %d", d.k.gone, d.k.restores, d.k.Fulls-fulls)
	}
}

// verifyFails is a driftKernel whose Verify fails, as a read does when the
// table disappears under it.
type verifyFails struct{ *driftKernel }

func (k *verifyFails) Verify(ruleset.Plan) ([]ruleset.Finding, error) {
	return nil, errors.New("table inet egressd does not exist")
}

// ownerKernel answers whether its table is owned.
type ownerKernel struct {
	*ruleset.Fake
	owned bool
	err   error
	asked int
}

func (k *ownerKernel) Ownership() (bool, string, error) {
	k.asked++
	return k.owned, "the kernel does not support owned persistent tables", k.err
}

// An unowned table is said once, after the first apply (table_unowned); an
// owned one is not an event; a kernel that cannot tell yet is asked again.
func TestTableUnownedLoggedOnce(t *testing.T) {
	for _, tc := range []struct {
		name   string
		k      *ownerKernel
		events int
	}{
		{"unowned", &ownerKernel{Fake: &ruleset.Fake{}}, 1},
		{"owned", &ownerKernel{Fake: &ruleset.Fake{}, owned: true}, 0},
		{"cannot tell", &ownerKernel{Fake: &ruleset.Fake{}, err: errors.New("netlink: boom")}, 0},
	} {
		f := &fixture{dir: t.TempDir()}
		f.write(t, "egressd.yaml", "resolvers: [\"192.0.2.53:53\"]\n")
		f.write(t, "allow.d/billing.yaml", "user: billing\nallow: [192.0.2.1:443]\n")
		core, logs := observer.New(zap.DebugLevel)
		c, err := New(Options{ConfigPath: filepath.Join(f.dir, "egressd.yaml"), ConfigRequired: true, Kernel: tc.k,
			Log: zap.New(core), Users: users, Trust: config.Trust{Above: f.dir}})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ {
			if _, err := c.Once(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		if n := logs.FilterField(zap.String("event", event.TableUnowned)).Len(); n != tc.events {
			t.Errorf("%s: %d table_unowned events, want %d", tc.name, n, tc.events)
		}
		if want := map[bool]int{true: 2, false: 1}[tc.k.err != nil]; tc.k.asked != want {
			t.Errorf("%s: asked %d times, want %d", tc.name, tc.k.asked, want)
		}
	}
}
