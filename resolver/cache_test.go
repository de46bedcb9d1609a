package resolver

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

var policy = Policy{MinTTL: 5 * time.Second, MaxTTL: 10 * time.Minute, Linger: time.Minute, StaleGrace: time.Hour, MaxAddrs: 4}

func newTestCache(names ...string) (*Cache, *clock) {
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	c := NewCache(policy, clk.now)
	m := map[string]bool{}
	for _, n := range names {
		m[n] = false
	}
	c.Sync(m)
	return c, clk
}

var kA = Key{"x.test", dns.TypeA}

func ok(ttl time.Duration, ss ...string) Result { return Result{Addrs: addrs(ss...), TTL: ttl} }

func same(got []netip.Addr, want ...string) bool {
	return slices.Equal(got, addrs(want...))
}

func TestPolicyClamp(t *testing.T) {
	for in, want := range map[time.Duration]time.Duration{
		0:                         5 * time.Second,
		time.Second:               5 * time.Second,
		time.Minute:               time.Minute,
		(1<<31 - 1) * time.Second: 10 * time.Minute,
	} {
		if got := policy.Clamp(in); got != want {
			t.Errorf("Clamp(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestCacheLifetimes(t *testing.T) {
	c, clk := newTestCache("x.test")
	if due := c.Due(); len(due) != 2 {
		t.Fatalf("new name: due = %v, want A and AAAA", due)
	}
	ch := c.Observe(kA, ok(30*time.Second, "192.0.2.1", "192.0.2.2"), nil)
	if len(ch.Added) != 2 || ch.TTL != 30*time.Second {
		t.Fatalf("first answer: %+v", ch)
	}
	if len(c.Due()) != 1 { // AAAA is still due
		t.Fatalf("due after A answered = %v", c.Due())
	}
	// Refresh when the TTL runs out, not before.
	clk.advance(29 * time.Second)
	if slices.Contains(c.Due(), kA) {
		t.Fatal("A due before its TTL ran out")
	}
	clk.advance(time.Second)
	if !slices.Contains(c.Due(), kA) {
		t.Fatal("A not due when its TTL ran out")
	}
	// 192.0.2.2 leaves the answers: it stays for its TTL + linger from when it was last seen.
	ch = c.Observe(kA, ok(30*time.Second, "192.0.2.1", "192.0.2.3"), nil)
	if !same(ch.Added, "192.0.2.3") || len(ch.Removed) != 0 {
		t.Fatalf("answer change: %+v", ch)
	}
	if !same(c.Addrs("x.test"), "192.0.2.1", "192.0.2.2", "192.0.2.3") {
		t.Fatalf("addrs = %v", c.Addrs("x.test"))
	}
	// 192.0.2.1's lifetime grew: the kernel gets it at the next renewal.
	if !c.Renew() {
		t.Fatal("no renewal of an extended lifetime")
	}
	// Last seen at t=0, TTL 30s, linger 60s: gone at t=90s. Now t=30s.
	if next := c.NextEvent(); !next.Equal(clk.t.Add(30 * time.Second)) {
		t.Fatalf("NextEvent = %v, want the next refresh at +30s", next.Sub(clk.t))
	}
	clk.advance(59 * time.Second)
	if lost := c.Expire(); len(lost) != 0 {
		t.Fatalf("expired too early: %v", lost)
	}
	clk.advance(time.Second)
	lost := c.Expire()
	if !same(lost[kA], "192.0.2.2") {
		t.Fatalf("expired = %v, want 192.0.2.2", lost)
	}
}

func TestCacheStaleGraceThenFailClosed(t *testing.T) {
	c, clk := newTestCache("x.test")
	c.Observe(kA, ok(60*time.Second, "192.0.2.1"), nil)
	clk.advance(60 * time.Second)
	fail := errors.New("timeout")
	ch := c.Observe(kA, Result{}, fail)
	if len(ch.Removed) != 0 || ch.TTL != 5*time.Second {
		t.Fatalf("first failure: %+v", ch)
	}
	// Far past TTL + linger, but within stale_grace: still allowed, served stale.
	clk.advance(30 * time.Minute)
	c.Observe(kA, Result{}, fail)
	st, _ := c.Status(kA)
	if !same(st.Addrs, "192.0.2.1") || !st.ServingStale || !st.Failing {
		t.Fatalf("within stale_grace: %+v", st)
	}
	if lost := c.Expire(); len(lost) != 0 {
		t.Fatalf("expired within stale_grace: %v", lost)
	}
	// stale_grace counts from the last successful answer (t=0).
	if next := c.NextEvent(); next.After(clk.t.Add(30 * time.Second)) {
		t.Fatalf("NextEvent = +%v, want the retry within the backoff", next.Sub(clk.t))
	}
	clk.advance(30 * time.Minute)
	lost := c.Expire()
	if !same(lost[kA], "192.0.2.1") {
		t.Fatalf("after stale_grace: lost = %v", lost)
	}
	if len(c.Addrs("x.test")) != 0 {
		t.Fatal("name still allows addresses after stale_grace")
	}
	// Backoff grows and is capped.
	for i := 0; i < 10; i++ {
		ch = c.Observe(kA, Result{}, fail)
	}
	if ch.TTL != 30*time.Second {
		t.Fatalf("backoff = %s, want 30s cap", ch.TTL)
	}
}

func TestCacheNeverResolvedAllowsNothing(t *testing.T) {
	c, _ := newTestCache("x.test")
	c.Observe(kA, Result{}, errors.New("SERVFAIL"))
	if len(c.Addrs("x.test")) != 0 {
		t.Fatal("a name that never resolved allows addresses")
	}
}

func TestCacheNegativeEmptiesAfterNegativeTTL(t *testing.T) {
	c, clk := newTestCache("x.test")
	c.Observe(kA, ok(300*time.Second, "192.0.2.1"), nil)
	clk.advance(300 * time.Second)
	ch := c.Observe(kA, Result{Negative: true, NXDomain: true, TTL: 10 * time.Second}, nil)
	if len(ch.Removed) != 0 || ch.TTL != 10*time.Second {
		t.Fatalf("negative answer: %+v", ch)
	}
	clk.advance(10 * time.Second)
	if lost := c.Expire(); !same(lost[kA], "192.0.2.1") {
		t.Fatalf("after negative TTL: lost = %v", lost)
	}
}

func TestCacheFiltersAndCaps(t *testing.T) {
	c, clk := newTestCache("x.test")
	ch := c.Observe(kA, ok(60*time.Second, "127.0.0.1", "10.0.0.1", "169.254.169.254", "0.0.0.0", "192.0.2.1", "100.64.0.1", "224.0.0.1"), nil)
	if !same(ch.Added, "192.0.2.1") || ch.Dropped != 6 {
		t.Fatalf("rebinding answers: %+v", ch)
	}
	// Round-robin subsets accumulate up to the cap; the current answer is kept.
	clk.advance(time.Second)
	c.Observe(kA, ok(60*time.Second, "192.0.2.2", "192.0.2.3"), nil)
	clk.advance(time.Second)
	c.Observe(kA, ok(60*time.Second, "192.0.2.4", "192.0.2.5"), nil)
	got := c.Addrs("x.test")
	if len(got) != 4 || !slices.Contains(got, netip.MustParseAddr("192.0.2.4")) || !slices.Contains(got, netip.MustParseAddr("192.0.2.5")) {
		t.Fatalf("capped accumulation = %v", got)
	}
	if slices.Contains(got, netip.MustParseAddr("192.0.2.1")) {
		t.Fatalf("the oldest address survived the cap: %v", got)
	}

	p, _ := newTestCache()
	p.Sync(map[string]bool{"x.test": true}) // an allowlist opted in
	ch = p.Observe(kA, ok(60*time.Second, "10.0.0.1", "127.0.0.1"), nil)
	if len(ch.Added) != 2 {
		t.Fatalf("opted-in private answers: %+v", ch)
	}
}

func TestCacheSync(t *testing.T) {
	c, _ := newTestCache("a.test", "b.test")
	c.Observe(Key{"a.test", dns.TypeA}, ok(60*time.Second, "192.0.2.1"), nil)
	c.Sync(map[string]bool{"b.test": false})
	if len(c.Addrs("a.test")) != 0 {
		t.Fatal("removed name kept addresses")
	}
	if c.Observe(Key{"a.test", dns.TypeA}, ok(60*time.Second, "192.0.2.1"), nil).Added != nil {
		t.Fatal("observation of a removed name was recorded")
	}
}

func TestInternal(t *testing.T) {
	for _, s := range []string{"127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0", "::", "::1",
		"fe80::1", "fc00::1", "fd00:ec2::254", "ff02::1", "224.0.0.251", "::ffff:127.0.0.1", "100.100.100.200", "255.255.255.255"} {
		if !Internal(netip.MustParseAddr(s)) {
			t.Errorf("Internal(%s) = false", s)
		}
	}
	for _, s := range []string{"192.0.2.1", "198.51.100.1", "203.0.113.1", "2001:db8::1", "8.8.8.8", "2606:4700::1"} {
		if Internal(netip.MustParseAddr(s)) {
			t.Errorf("Internal(%s) = true", s)
		}
	}
}

func TestCacheClaimRelease(t *testing.T) {
	c, clk := newTestCache("x.test")
	due := c.Due()
	c.Claim(due)
	if len(c.Due()) != 0 {
		t.Fatal("claimed keys are still due")
	}
	if next := c.NextEvent(); !next.IsZero() {
		t.Fatalf("NextEvent = %v with every key in flight, want none", next)
	}
	c.Observe(kA, ok(30*time.Second, "192.0.2.1"), nil)
	// A slow refresh in flight holds the last answer past its lifetime.
	clk.advance(30 * time.Second)
	c.Claim([]Key{kA})
	clk.advance(time.Hour)
	if lost := c.Expire(); len(lost) != 0 || !same(c.Addrs("x.test"), "192.0.2.1") {
		t.Fatalf("in-flight refresh: lost %v, addrs %v", lost, c.Addrs("x.test"))
	}
	// Its failure is then served stale (stale_grace counts from the last answer).
	if ch := c.Observe(kA, Result{}, errors.New("timeout")); !same(ch.Removed, "192.0.2.1") {
		t.Fatalf("past stale_grace the failure must drop the address: %+v", ch)
	}
	clk.advance(-time.Hour - 30*time.Second)
	c.Observe(kA, ok(30*time.Second, "192.0.2.1"), nil)
	c.Release(Key{"x.test", dns.TypeAAAA})
	if got := c.Due(); len(got) != 1 || got[0].Type != dns.TypeAAAA {
		t.Fatalf("after Observe and Release: due = %v", got)
	}
	clk.advance(30 * time.Second)
	c.Release(kA) // not claimed any more: no effect
	if got := c.Due(); len(got) != 2 {
		t.Fatalf("due = %v", got)
	}
}

// An address that left the answers is reported lingering until its TTL +
// linger run out; current addresses are not.
func TestCacheLingering(t *testing.T) {
	now := time.Unix(1000, 0)
	c := NewCache(Policy{MinTTL: time.Second, MaxTTL: time.Hour, Linger: 30 * time.Second, StaleGrace: time.Hour, MaxAddrs: 10}, func() time.Time { return now })
	c.Sync(map[string]bool{"a.example": true})
	k := Key{"a.example", dns.TypeA}
	a1, a2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	c.Observe(k, Result{Addrs: []netip.Addr{a1}, TTL: 10 * time.Second}, nil)
	if l := c.Lingering("a.example"); len(l) != 0 {
		t.Fatalf("current address reported lingering: %v", l)
	}
	now = now.Add(5 * time.Second)
	c.Observe(k, Result{Addrs: []netip.Addr{a2}, TTL: 10 * time.Second}, nil)
	l := c.Lingering("a.example")
	if want := time.Unix(1000+10+30, 0); len(l) != 1 || !l[a1].Equal(want) {
		t.Fatalf("lingering = %v, want %v until %v", l, a1, want)
	}
	now = now.Add(time.Minute)
	if l := c.Lingering("a.example"); len(l) != 0 {
		t.Fatalf("expired address still lingering: %v", l)
	}
}

// Lifetimes gives each allowed address the end the kernel's element
// carries: last seen + TTL + linger; for the last answer while DNS fails,
// last answer + stale_grace; an address that left the answers is not
// extended by a failure.
func TestCacheLifetimesUntil(t *testing.T) {
	c, clk := newTestCache("x.test")
	t0 := clk.t
	c.Observe(kA, ok(30*time.Second, "192.0.2.1", "192.0.2.2"), nil)
	want := func(what string, exp map[string]time.Time) {
		t.Helper()
		got := map[string]time.Time{}
		for _, l := range c.Lifetimes("x.test") {
			got[l.Addr.String()] = l.Until
		}
		if len(got) != len(exp) {
			t.Fatalf("%s: %v, want %v", what, got, exp)
		}
		for a, u := range exp {
			if !got[a].Equal(u) {
				t.Fatalf("%s: %s until %v, want %v", what, a, got[a], u)
			}
		}
	}
	want("answered", map[string]time.Time{"192.0.2.1": t0.Add(90 * time.Second), "192.0.2.2": t0.Add(90 * time.Second)})
	clk.advance(30 * time.Second)
	c.Observe(kA, ok(30*time.Second, "192.0.2.1"), nil) // .2 left the answers
	// Extensions are batched: the kernel keeps the earlier end until the
	// next renewal, one per renewal period (min(10s, linger/2)) at most.
	want("refreshed, not renewed yet", map[string]time.Time{"192.0.2.1": t0.Add(90 * time.Second), "192.0.2.2": t0.Add(90 * time.Second)})
	if next := c.NextEvent(); !next.Equal(clk.t) {
		t.Fatalf("NextEvent %v, want the renewal now", next.Sub(clk.t))
	}
	if !c.Renew() {
		t.Fatal("no renewal")
	}
	want("refreshed", map[string]time.Time{"192.0.2.1": t0.Add(120 * time.Second), "192.0.2.2": t0.Add(90 * time.Second)})
	clk.advance(5 * time.Second)
	c.Observe(kA, ok(30*time.Second, "192.0.2.1"), nil)
	if c.Renew() {
		t.Fatal("a second renewal within the renewal period")
	}
	if next := c.NextEvent(); !next.Equal(clk.t.Add(5 * time.Second)) {
		t.Fatalf("NextEvent %v, want the renewal at the end of its period (+5s)", next.Sub(clk.t))
	}
	clk.advance(5 * time.Second)
	if !c.Renew() {
		t.Fatal("no renewal after the period")
	}
	want("refreshed again", map[string]time.Time{"192.0.2.1": t0.Add(125 * time.Second), "192.0.2.2": t0.Add(90 * time.Second)})
	clk.advance(25 * time.Second)
	c.Observe(kA, Result{}, errors.New("SERVFAIL"))
	c.Renew()
	want("failing", map[string]time.Time{"192.0.2.1": t0.Add(35*time.Second + time.Hour), "192.0.2.2": t0.Add(90 * time.Second)})
	// A shorter lifetime (a negative answer) reaches the kernel at once.
	clk.advance(time.Second)
	c.Observe(kA, Result{Negative: true, TTL: 10 * time.Second}, nil)
	want("negative", map[string]time.Time{"192.0.2.1": clk.t.Add(10 * time.Second), "192.0.2.2": clk.t.Add(10 * time.Second)})
}

// Generation moves exactly when what AppendLifetimes returns may have
// changed: a refresh that brings the same address only marks its lifetime
// for the next renewal; the renewal, a new address, an expiry and a claim
// that holds an expired address again (isValid) move it.
func TestCacheGeneration(t *testing.T) {
	c, clk := newTestCache("x.test")
	lifetimes := func() []Lifetime { return c.Lifetimes("x.test") }
	step := func(what string, moved bool, f func()) {
		t.Helper()
		g, before := c.Generation(), lifetimes()
		f()
		if got := c.Generation() != g; got != moved {
			t.Fatalf("%s: generation moved %v, want %v", what, got, moved)
		}
		if !moved && !slices.Equal(before, lifetimes()) {
			t.Fatalf("%s: lifetimes changed from %v to %v, the generation did not move", what, before, lifetimes())
		}
	}
	step("the first answer", true, func() { c.Observe(kA, ok(30*time.Second, "192.0.2.1"), nil) })
	step("a renewal with nothing waiting", false, func() { c.Renew() })
	clk.advance(10 * time.Second)
	step("the same answer", false, func() { c.Observe(kA, ok(30*time.Second, "192.0.2.1"), nil) })
	step("a renewal", true, func() { c.Renew() })
	clk.advance(time.Second)
	step("the same answer again", false, func() { c.Observe(kA, ok(30*time.Second, "192.0.2.1"), nil) })
	step("a renewal not due", false, func() { c.Renew() })
	step("nothing expired", false, func() { c.Expire() })
	clk.advance(policy.renewEvery())
	step("the renewal", true, func() { c.Renew() })
	step("a new address", true, func() { c.Observe(kA, ok(30*time.Second, "192.0.2.1", "192.0.2.2"), nil) })
	step("the same names", false, func() { c.Sync(map[string]bool{"x.test": false}) })
	step("the same policy", false, func() { c.SetPolicy(policy) })
	// Past its lifetime, not yet forgotten: a claim holds it again.
	clk.advance(time.Hour)
	step("a claim of an expired address", true, func() { c.Claim([]Key{kA}) })
	c.Release(kA)
	step("an expiry", true, func() { c.Expire() })
	step("a name gone", true, func() { c.Sync(map[string]bool{}) })
}

// The loop's shortcuts (NextEvent and Due kept until the cache changes,
// Expire skipped until the earliest end of a lifetime) answer exactly as
// full scans do, through random lookups, failures, negative answers,
// claims, releases, refreshes, renewals and the passing of time.
func TestCacheShortcutsMatchScans(t *testing.T) {
	names := []string{"a.test", "b.test", "c.test", "d.test"}
	fast, clk := newTestCache(names...)
	slow := NewCache(policy, clk.now)
	slow.scanAlways = true
	slow.Sync(map[string]bool{"a.test": false, "b.test": false, "c.test": false, "d.test": false})
	rng := uint64(1)
	rand := func(n int) int {
		rng = rng*6364136223846793005 + 1442695040888963407
		return int(rng>>33) % n
	}
	pol := policy
	for i := 0; i < 20000; i++ {
		k := Key{names[rand(len(names))], dns.TypeA}
		if rand(2) == 0 {
			k.Type = dns.TypeAAAA
		}
		var op string
		switch rand(10) {
		case 0, 1, 2:
			op = "observe"
			res, err := ok(time.Duration(1+rand(90))*time.Second, fmt.Sprintf("192.0.2.%d", rand(6))), error(nil)
			switch rand(6) {
			case 0:
				res, err = Result{}, errors.New("timeout")
			case 1:
				res = Result{Negative: true, TTL: time.Duration(1+rand(30)) * time.Second}
			}
			fast.Observe(k, res, err)
			slow.Observe(k, res, err)
		case 3:
			op = "claim"
			fast.Claim([]Key{k})
			slow.Claim([]Key{k})
		case 4:
			op = "release"
			fast.Release(k)
			slow.Release(k)
		case 5:
			op = "refresh"
			fast.Refresh([]string{k.Name})
			slow.Refresh([]string{k.Name})
		case 6:
			op = "renew"
			if a, b := fast.Renew(), slow.Renew(); a != b {
				t.Fatalf("step %d: Renew %v, scan %v", i, a, b)
			}
		case 7:
			op = "policy"
			if rand(20) == 0 {
				pol.StaleGrace = time.Duration(rand(3)) * time.Minute
				fast.SetPolicy(pol)
				slow.SetPolicy(pol)
			}
		default:
			op = "time"
			clk.advance(time.Duration(rand(40000)) * time.Millisecond)
		}
		if a, b := fast.NextEvent(), slow.NextEvent(); !a.Equal(b) {
			t.Fatalf("step %d (%s): NextEvent %v, scan %v", i, op, a, b)
		}
		if a, b := fast.Due(), slow.Due(); !slices.Equal(a, b) {
			t.Fatalf("step %d (%s): Due %v, scan %v", i, op, a, b)
		}
		if a, b := fast.Expire(), slow.Expire(); fmt.Sprint(a) != fmt.Sprint(b) {
			t.Fatalf("step %d (%s): Expire %v, scan %v", i, op, a, b)
		}
		for _, n := range names {
			if a, b := fast.Lifetimes(n), slow.Lifetimes(n); !slices.Equal(a, b) {
				t.Fatalf("step %d (%s): %s lifetimes %v, scan %v", i, op, n, a, b)
			}
		}
	}
}

// HasAddrs says what len(Addrs) > 0 says, LastOK what Status says: an answered name, one of whose
// types failed, a negative answer, an expired address, an unknown name.
func TestCacheHasAddrsIsAddrs(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	c := NewCache(Policy{MinTTL: time.Second, MaxTTL: time.Hour, Linger: time.Second, StaleGrace: time.Minute, MaxAddrs: 8}, func() time.Time { return now })
	c.Sync(map[string]bool{"a.test": false, "neg.test": false, "v6.test": false, "new.test": false})
	c.Observe(Key{"a.test", dns.TypeA}, Result{Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, TTL: 10 * time.Second}, nil)
	c.Observe(Key{"a.test", dns.TypeAAAA}, Result{}, errors.New("timeout"))
	c.Observe(Key{"neg.test", dns.TypeA}, Result{Negative: true, TTL: 10 * time.Second}, nil)
	c.Observe(Key{"v6.test", dns.TypeAAAA}, Result{Addrs: []netip.Addr{netip.MustParseAddr("2001:db8::1")}, TTL: 10 * time.Second}, nil)
	check := func(when string) {
		for _, n := range []string{"a.test", "neg.test", "v6.test", "new.test", "unknown.test"} {
			if got, want := c.HasAddrs(n), len(c.Addrs(n)) > 0; got != want {
				t.Errorf("%s: HasAddrs(%s) = %v, Addrs %v", when, n, got, c.Addrs(n))
			}
			for _, k := range KeysFor(n) {
				st, known := c.Status(k)
				if last, ok := c.LastOK(k); ok != known || !last.Equal(st.LastOK) {
					t.Errorf("%s: LastOK(%v) = %v, %v; Status says %v, %v", when, k, last, ok, st.LastOK, known)
				}
			}
		}
	}
	check("answered")
	if !c.HasAddrs("a.test") || c.HasAddrs("neg.test") {
		t.Error("a.test has an address, neg.test none")
	}
	now = now.Add(time.Hour)
	check("an hour later")
	if c.HasAddrs("a.test") {
		t.Error("a.test's address expired")
	}
}

// A name whose DNS starts failing gets its stale_grace lifetime in the
// kernel at once, not at the next renewal: a daemon stopped right after
// the failure would otherwise let the last answer end at TTL + linger
// (TestStoppedDaemonClosesOnTime failed so under load). Once per streak.
func TestCacheFailureReachesKernelAtOnce(t *testing.T) {
	c, clk := newTestCache("x.test")
	c.Observe(kA, ok(30*time.Second, "192.0.2.1"), nil)
	lastOK := clk.t
	clk.advance(time.Second)
	c.Observe(kA, ok(30*time.Second, "192.0.2.1"), nil) // extends: pending
	c.Renew()                                           // the first renewal runs at once; the next waits renewEvery
	clk.advance(time.Second)
	c.Observe(kA, ok(30*time.Second, "192.0.2.1"), nil) // extends again: waits for the renewal
	lastOK = clk.t
	if c.Renew() {
		t.Fatal("a renewal ran before renewEvery")
	}
	g := c.Generation()
	clk.advance(time.Second)
	c.Observe(kA, Result{}, errors.New("SERVFAIL"))
	want := lastOK.Add(policy.StaleGrace)
	if l := c.Lifetimes("x.test"); len(l) != 1 || !l[0].Until.Equal(want) {
		t.Fatalf("kernel lifetime after the failure %v, want %v (last answer + stale_grace)", l, want)
	}
	if c.Generation() == g {
		t.Fatal("the failure's lifetime did not move the generation: the loop would not write it")
	}
	g = c.Generation()
	clk.advance(time.Second)
	c.Observe(kA, Result{}, errors.New("SERVFAIL"))
	if c.Generation() != g {
		t.Error("a second failure of the streak moved the generation")
	}
}
