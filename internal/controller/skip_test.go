package controller

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/dnstest"
	"github.com/egressd/egressd/internal/state"
	"github.com/egressd/egressd/resolver"
	"github.com/egressd/egressd/ruleset"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// A reconcile whose inputs are those of the plan in force skips policy.Build
// (and render and diff); a change of each input kind still reaches the
// kernel: a new address, a renewed lifetime, an expired one, a uid, the
// configuration, the hosts file. (Unit cgroups: TestUnitFollower; a failed
// apply: TestApplyFailureForcesFullRebuild; drift: the drift tests.)
// clockFixture is a controller on a clock of the test's (f.c.o.Now),
// with linger 10 s (a renewal every 5 s) and a hosts file; billing's uid
// is *uid.
type clockFixture struct {
	*fixture
	now *time.Time
	uid *uint32
}

func newClockFixture(t *testing.T) clockFixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), k: &ruleset.Fake{}}
	var err error
	if f.dns, err = dnstest.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.dns.Close)
	hosts := filepath.Join(f.dir, "hosts")
	f.write(t, "hosts", "")
	f.write(t, "egressd.yaml", fmt.Sprintf("resolvers: [%q]\nlinger: 10s\nhosts_file: %s\n", f.dns.Addr.String(), hosts))
	f.write(t, "allow.d/billing.yaml", "user: billing\nallow: [api.example.test:443]\n")
	now := time.Unix(1000, 0)
	uid := uint32(1001)
	lookup := func(name string) (uint32, error) {
		switch name {
		case "billing":
			return uid, nil
		case "ops":
			return 1003, nil
		}
		return users(name)
	}
	core, logs := observer.New(zap.DebugLevel)
	f.logs = logs
	f.c, err = New(Options{ConfigPath: filepath.Join(f.dir, "egressd.yaml"), ConfigRequired: true, Kernel: f.k, Log: zap.New(core),
		Users: lookup, Trust: config.Trust{Above: f.dir}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return clockFixture{f, &now, &uid}
}

func TestSyncSkipsOnlyWhenNothingChanged(t *testing.T) {
	cf := newClockFixture(t)
	f, now, uid := cf.fixture, cf.now, cf.uid
	a1, a2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	f.dns.Set("api.example.test", dnstest.Record{A: []netip.Addr{a1}, TTL: 60})
	if _, err := f.c.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	set4 := ruleset.SetName4("billing")
	until := func(a netip.Addr) time.Time {
		p := f.k.Plan
		for i, e := range p.Sets[set4] {
			if e.AddrFrom == a && e.AddrTo == a {
				return p.UntilOf(set4, i)
			}
		}
		return time.Time{}
	}
	has := func(a netip.Addr) bool { return !until(a).IsZero() }
	refresh := func() {
		t.Helper()
		k := resolver.KeysFor("api.example.test")
		f.c.dns.resolve(context.Background(), k[:])
	}
	sync := func() {
		t.Helper()
		if err := f.c.sync(); err != nil {
			t.Fatal(err)
		}
	}
	skipped := func(what string, want bool) {
		t.Helper()
		b := f.c.builds
		sync()
		if got := f.c.builds == b; got != want {
			t.Fatalf("%s: skipped %v, want %v", what, got, want)
		}
	}

	skipped("nothing changed", true)
	deltas := len(f.k.Deltas)

	// A refresh with the same answer: its lifetime waits for the renewal
	// (the first one runs at once: none ran yet).
	*now = now.Add(2 * time.Second)
	refresh()
	skipped("the first renewal", false)
	renewed := until(a1)
	if len(f.k.Deltas) != deltas+1 || !renewed.Equal(now.Add(70*time.Second)) {
		t.Fatalf("renewal: %d deltas (want %d), until %v", len(f.k.Deltas), deltas+1, renewed)
	}
	*now = now.Add(2 * time.Second)
	refresh()
	skipped("an extension waiting for the renewal", true)
	*now = now.Add(5 * time.Second) // renewEvery: linger/2
	skipped("the renewal", false)
	if got := until(a1); !got.Equal(now.Add(-5 * time.Second).Add(70 * time.Second)) {
		t.Fatalf("renewed until %v (was %v)", got, renewed)
	}
	skipped("after the renewal", true)

	// A new address.
	f.dns.Set("api.example.test", dnstest.Record{A: []netip.Addr{a2}, TTL: 60})
	refresh()
	skipped("a new address", false)
	if !has(a1) || !has(a2) {
		t.Fatalf("set %v, want both addresses (the first lingers)", f.k.Plan.Sets[set4])
	}
	// The first address's lifetime runs out (TTL + linger after it was
	// last seen); the second is refreshed meanwhile.
	*now = until(a1).Add(-time.Second)
	refresh()
	sync()
	skipped("before the end", true)
	*now = now.Add(2 * time.Second)
	skipped("an expiry", false)
	if has(a1) || !has(a2) {
		t.Fatalf("set %v after the first address expired", f.k.Plan.Sets[set4])
	}

	// The user's uid.
	*uid = 1002
	f.c.lookupUsers(false)
	skipped("a uid", false)
	if al := f.k.Plan.Of(ruleset.SubjectUser); len(al) != 1 || al[0].Subject != ruleset.UserSubject(1002) {
		t.Fatalf("allowlists %v, want uid 1002", al)
	}
	f.c.lookupUsers(false)
	skipped("the same uid", true)

	// The configuration: a name with a private address, which only an
	// allowlist with allow_private_answers takes from DNS.
	private := netip.MustParseAddr("10.1.2.3")
	f.dns.Set("lan.example.test", dnstest.Record{A: []netip.Addr{private}, TTL: 60})
	f.write(t, "allow.d/billing.yaml", "user: billing\nallow: [api.example.test:443, lan.example.test:443]\n")
	f.write(t, "allow.d/ops.yaml", "user: ops\nallow_private_answers: true\nallow: [lan.example.test:22]\n")
	f.c.doReload()
	f.c.dns.resolve(context.Background(), f.c.dns.cache.Due())
	skipped("a configuration", false)
	opsSet := ruleset.SetName4("ops")
	if len(f.k.Plan.Allowlists) != 2 || len(f.k.Plan.Sets[opsSet]) != 1 || has(private) {
		t.Fatalf("after the reload: allowlists %v, ops %v, billing %v", f.k.Plan.Allowlists, f.k.Plan.Sets[opsSet], f.k.Plan.Sets[set4])
	}
	skipped("nothing changed", true)
	// A literal entry: the names, users and cache are the same.
	f.write(t, "allow.d/ops.yaml", "user: ops\nallow_private_answers: true\nallow: [lan.example.test:22, 198.51.100.8:22]\n")
	f.c.doReload()
	skipped("a literal entry", false)
	if len(f.k.Plan.Sets[opsSet]) != 2 {
		t.Fatalf("ops %v after the edit", f.k.Plan.Sets[opsSet])
	}

	// The hosts file: it names the private address, which every allowlist
	// then takes as written (FromHosts), before the name is asked again.
	f.write(t, "hosts", "10.1.2.3 lan.example.test\n")
	f.c.doReload()
	skipped("the hosts file", false)
	if !has(private) {
		t.Fatalf("set %v lacks the hosts file's address", f.k.Plan.Sets[set4])
	}
	skipped("nothing changed at the end", true)
}

// An apply that only renews lifetimes changes nothing `egressd check`
// compares (the state file holds no lifetimes): the file is rewritten
// within renewalPublish, not at each renewal; an added address is written
// within the second, and the last state before the daemon exits.
func TestRenewalPublishedWithinAMinute(t *testing.T) {
	cf := newClockFixture(t)
	f, now := cf.fixture, cf.now
	dir := t.TempDir()
	f.c.setStateDir(dir)
	f.dns.Set("api.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, TTL: 60})
	if _, err := f.c.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.c.publish(true)
	written := *now
	generation := func() uint64 {
		t.Helper()
		st, err := state.Read(dir)
		if err != nil {
			t.Fatal(err)
		}
		return st.Generation
	}
	k := resolver.KeysFor("api.example.test")
	for i := 0; i < 5; i++ { // 50 s of refreshes and renewals
		*now = now.Add(10 * time.Second)
		f.c.dns.resolve(context.Background(), k[:])
		gen := f.c.apply.generation
		if err := f.c.sync(); err != nil {
			t.Fatal(err)
		}
		if f.c.apply.generation != gen+1 || !f.c.apply.renewedOnly {
			t.Fatalf("refresh %d: generation %d→%d, renewed only %v", i, gen, f.c.apply.generation, f.c.apply.renewedOnly)
		}
		if due := f.c.pub.due(); !due.Equal(written.Add(renewalPublish)) {
			t.Fatalf("refresh %d: the state file is due at %v, want %v", i, due, written.Add(renewalPublish))
		}
		f.c.publish(false)
		if g := generation(); g != 1 {
			t.Fatalf("refresh %d: the state file was rewritten (generation %d)", i, g)
		}
	}
	*now = written.Add(renewalPublish)
	f.c.publish(false)
	if g := generation(); g != f.c.apply.generation {
		t.Fatalf("after %s the state file holds generation %d, want %d", renewalPublish, g, f.c.apply.generation)
	}
	if !f.c.pub.due().IsZero() {
		t.Fatal("still due after the write")
	}
	// A new address: check compares it, written at once.
	*now = now.Add(10 * time.Second)
	f.dns.Set("api.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.2")}, TTL: 60})
	f.c.dns.resolve(context.Background(), k[:])
	if err := f.c.sync(); err != nil {
		t.Fatal(err)
	}
	*now = now.Add(time.Second)
	f.c.publish(false)
	st, err := state.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Generation != f.c.apply.generation || len(st.Names["api.example.test"].Addrs) != 2 {
		t.Fatalf("state %d %v, want generation %d and both addresses", st.Generation, st.Names, f.c.apply.generation)
	}
	// A renewal, then the stop: the last state is written.
	*now = now.Add(10 * time.Second)
	f.c.dns.resolve(context.Background(), k[:])
	if err := f.c.sync(); err != nil || !f.c.apply.renewedOnly {
		t.Fatalf("renewal: %v, renewed only %v", err, f.c.apply.renewedOnly)
	}
	if err := f.c.stop(); err != nil {
		t.Fatal(err)
	}
	if g := generation(); g != f.c.apply.generation {
		t.Fatalf("at stop the state file holds generation %d, want %d", g, f.c.apply.generation)
	}
}
