package controller

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/internal/state"
	"github.com/egressd/egressd/resolver"
	"github.com/egressd/egressd/ruleset"
	"github.com/miekg/dns"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// countingKernel is ruleset.Fake with deny counters that a full rebuild
// starts at zero, as the kernel's do.
type countingKernel struct {
	*ruleset.Fake
	mu     sync.Mutex
	counts map[string]uint64
}

func (k *countingKernel) ApplyFull(p ruleset.Plan) error {
	k.mu.Lock()
	k.counts = map[string]uint64{}
	k.mu.Unlock()
	return k.Fake.ApplyFull(p)
}

func (k *countingKernel) ReadDenyCounters() (map[string]uint64, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.counts == nil {
		return nil, errors.New("no table")
	}
	out := map[string]uint64{}
	for n, v := range k.counts {
		out[n] = v
	}
	return out, nil
}

func (k *countingKernel) deny(allowlist string, n uint64) {
	k.mu.Lock()
	k.counts[allowlist] += n
	k.mu.Unlock()
}

// zone is an in-memory DNS: name -> addresses (both families), or an error.
type zone struct {
	mu    sync.Mutex
	addrs map[string][]string
	fail  map[string]error
}

func (z *zone) Query(_ context.Context, name string, qtype uint16) (resolver.Result, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if err := z.fail[name]; err != nil {
		return resolver.Result{}, err
	}
	res := resolver.Result{TTL: time.Minute, Source: resolver.SourceDNS}
	for _, s := range z.addrs[name] {
		a := netip.MustParseAddr(s)
		if a.Is4() == (qtype == dns.TypeA) {
			res.Addrs = append(res.Addrs, a)
		}
	}
	if len(res.Addrs) == 0 {
		res.Negative = true
	}
	return res, nil
}

func (z *zone) set(name string, addrs ...string) {
	z.mu.Lock()
	z.addrs[name] = addrs
	delete(z.fail, name)
	z.mu.Unlock()
}

func (z *zone) failing(name string, err error) {
	z.mu.Lock()
	z.fail[name] = err
	z.mu.Unlock()
}

// clocked is a controller on an injected clock, an in-memory DNS and a
// counting fake kernel: no sockets, no sleeps.
type clocked struct {
	*fixture
	now  time.Time
	zone *zone
	ck   *countingKernel
}

func newClocked(t *testing.T, files map[string]string) *clocked {
	t.Helper()
	c := &clocked{fixture: &fixture{dir: t.TempDir(), k: &ruleset.Fake{}}, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		zone: &zone{addrs: map[string][]string{}, fail: map[string]error{}}}
	c.ck = &countingKernel{Fake: c.k}
	c.write(t, "egressd.yaml", "resolvers: [\"192.0.2.53:53\"]\n")
	for name, body := range files {
		c.write(t, name, body)
	}
	core, logs := observer.New(zap.DebugLevel)
	c.logs = logs
	var err error
	c.c, err = New(Options{ConfigPath: filepath.Join(c.dir, "egressd.yaml"), ConfigRequired: true, Kernel: c.ck, Log: zap.New(core),
		Users: users, Trust: config.Trust{Above: c.dir}, Now: func() time.Time { return c.now },
		NewQuerier: func(*config.Config) resolver.Querier { return c.zone }})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A full rebuild starts the kernel's counters at zero; the denied-packet
// totals carry on.
func TestDeniedPacketsCarryOverRebuilds(t *testing.T) {
	c := newClocked(t, map[string]string{"allow.d/billing.yaml": "user: billing\nallow: [192.0.2.1:443]\n"})
	if _, err := c.c.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.ck.deny("billing", 5)
	c.write(t, "egressd.yaml", "resolvers: [\"192.0.2.53:53\"]\ndeny_log:\n  rate: 20/second\n")
	c.c.doReload()
	c.c.apply.applied = nil // a rebuild, as after drift
	if err := c.c.sync(); err != nil {
		t.Fatal(err)
	}
	c.ck.deny("billing", 2)
	got, err := c.c.DeniedPackets()
	if err != nil || got["billing"] != 7 {
		t.Fatalf("denied = %v (%v), want billing 7", got, err)
	}
	c.c.o.Kernel = struct{ ruleset.Kernel }{c.k} // a kernel that does not count
	if _, err := c.c.DeniedPackets(); err == nil {
		t.Fatal("no error from a kernel without counters")
	}
}

// Deny attribution follows what the kernel holds: the name index after
// each apply, the uid and user maps at once.
func TestAttributionFollowsTheKernel(t *testing.T) {
	c := newClocked(t, map[string]string{"allow.d/billing.yaml": "user: billing\nallow: [api.example.test:443]\n"})
	c.zone.set("api.example.test", "203.0.113.5")
	if _, err := c.c.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("203.0.113.5")
	if got := c.c.NamesFor("billing", a); len(got) != 1 || got[0] != "api.example.test" {
		t.Fatalf("NamesFor = %v", got)
	}
	if u, ok := c.c.User("billing"); !ok || u != "billing" {
		t.Fatalf("User = %q %v", u, ok)
	}
	if n, ok := c.c.AllowlistOf(1001); !ok || n != "billing" {
		t.Fatalf("AllowlistOf = %q %v", n, ok)
	}
	if _, ok := c.c.AllowlistOf(7); ok {
		t.Fatal("an unrestricted uid has an allowlist")
	}
	if _, ok := c.c.User("nobody"); ok {
		t.Fatal("an unknown allowlist has a user")
	}
	// The name stops answering; its address expires (TTL + linger, then
	// stale_grace) on the injected clock, and leaves the index with the set.
	c.zone.failing("api.example.test", errors.New("SERVFAIL"))
	c.now = c.now.Add(2 * time.Minute) // the TTL ran out: due again
	c.c.dns.resolve(context.Background(), c.c.dns.cache.Due())
	c.now = c.now.Add(24 * time.Hour)
	if err := c.c.sync(); err != nil {
		t.Fatal(err)
	}
	if got := c.c.NamesFor("billing", a); len(got) != 0 || len(c.k.Plan.Sets[ruleset.SetName4("billing")]) != 0 {
		t.Fatalf("an expired address is still attributed (%v) or allowed (%v)", got, c.k.Plan.Sets)
	}
	if len(c.events(event.Resolved)) == 0 || len(c.logs.FilterMessage("addresses expired").All()) != 1 {
		t.Fatal("the expiry was not logged")
	}
	// A name that left the configuration leaves the failing set.
	if len(c.c.dns.failing) != 2 {
		t.Fatalf("failing = %v", c.c.dns.failing)
	}
	c.write(t, "allow.d/billing.yaml", "user: billing\nallow: [192.0.2.1:443]\n")
	c.c.doReload()
	if len(c.c.dns.failing) != 0 {
		t.Fatalf("failing after the name left: %v", c.c.dns.failing)
	}
	var nobody *Controller = &Controller{attr: &attribution{}}
	if _, ok := nobody.User("billing"); ok || nobody.NamesFor("billing", a) != nil {
		t.Fatal("an empty attribution answers")
	}
	if _, ok := nobody.AllowlistOf(1001); ok {
		t.Fatal("an empty attribution answers")
	}
}

// The state file holds what check needs: addresses, lingering ones with
// their deadline, failures, users and the ones missing.
func TestPublishedState(t *testing.T) {
	c := newClocked(t, map[string]string{
		"allow.d/billing.yaml": "user: billing\nallow: [api.example.test:443, down.example.test:443]\n",
		"allow.d/ghost.yaml":   "user: ghost\nallow: [192.0.2.9:443]\n",
	})
	dir := t.TempDir()
	c.c.setStateDir(dir)
	c.zone.set("api.example.test", "203.0.113.5")
	c.zone.failing("down.example.test", errors.New("SERVFAIL"))
	if _, err := c.c.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.c.publish(true)
	c.now = c.now.Add(2 * time.Minute) // the TTL ran out: due again
	c.zone.set("api.example.test", "203.0.113.6")
	c.c.dns.resolve(context.Background(), c.c.dns.cache.Due())
	if err := c.c.sync(); err != nil {
		t.Fatal(err)
	}
	if due := c.c.pub.due(); !due.Equal(c.now.Add(-2*time.Minute + time.Second)) {
		t.Fatalf("an apply made the state file due at %v", due)
	}
	c.c.publish(false)
	st, err := state.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	api, down := st.Names["api.example.test"], st.Names["down.example.test"]
	if len(api.Addrs) != 2 || len(api.Lingering) != 1 || api.Lingering["203.0.113.5"].IsZero() || api.LastOK.IsZero() {
		t.Fatalf("api = %+v", api)
	}
	if !down.Failing || down.Error == "" {
		t.Fatalf("down = %+v", down)
	}
	if st.Users["billing"] != 1001 || st.MissingUser["ghost"] == "" || st.Generation != 2 || st.ConfigHash != state.Hash(c.c.cfg) {
		t.Fatalf("state = %+v", st)
	}
	if !c.c.pub.due().IsZero() {
		t.Fatal("still due after a write")
	}
	// A state directory that cannot be written: state_failed, still due.
	c.c.setStateDir(filepath.Join(dir, "state.json", "x"))
	c.c.publish(true)
	if len(c.events(event.StateFailed)) != 1 {
		t.Fatal("no state_failed")
	}
}

// A uid the previous run enforced for a user that does not resolve now is
// still enforced after a restart (read back from the state file).
func TestSeedUsersFromState(t *testing.T) {
	c := newClocked(t, map[string]string{"allow.d/svc.yaml": "user: typo\nallow: [192.0.2.1:443]\n"})
	dir := t.TempDir()
	if err := state.Write(dir, &state.State{Version: 1, PID: os.Getpid(), Users: map[string]uint32{"svc": 4242}}); err != nil {
		t.Fatal(err)
	}
	c.c.seedUsers() // no state directory: nothing
	if len(c.c.users.UIDs) != 0 {
		t.Fatalf("uids %v", c.c.users.UIDs)
	}
	c.c.setStateDir(dir)
	c.c.seedUsers()
	if c.c.users.UIDs["svc"] != 4242 || len(c.c.users.Vanished) != 1 {
		t.Fatalf("uids %v vanished %v", c.c.users.UIDs, c.c.users.Vanished)
	}
}

// The loop reacts to a closed nftables monitor (watch_failed, then the
// periodic check only) and to Reload, and stops on cancel.
func TestRunMonitorEndsAndReload(t *testing.T) {
	f := newFixture(t, map[string]string{"allow.d/billing.yaml": "user: billing\nallow: [192.0.2.1:443]\n"})
	events := make(chan struct{})
	close(events)
	f.c.setKernelEvents(events)
	var notes []string
	var mu sync.Mutex
	f.c.o.Notify = func(s string) error { mu.Lock(); notes = append(notes, s); mu.Unlock(); return nil }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.c.Run(ctx) }()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				cancel()
				<-done
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	waitFor("watch_failed", func() bool { return len(f.events(event.WatchFailed)) == 1 })
	f.write(t, "allow.d/billing.yaml", "user: billing\nallow: [192.0.2.2:443]\n")
	f.c.Reload()
	f.c.Reload() // coalesced
	waitFor("the reload", func() bool { return len(f.events(event.ConfigLoaded)) >= 2 && len(f.events(event.RulesetApplied)) >= 2 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(notes) == 0 || notes[len(notes)-1] != "STOPPING=1" {
		t.Fatalf("notes %v", notes)
	}
}
