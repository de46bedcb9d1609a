package dnsproxy

import (
	"fmt"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/dnstest"
	"github.com/egressd/egressd/ruleset"
)

// The answer cache's attack tests. The attacker is a service of another
// uid (or the same uid later) that asks for a name some other query put in
// the cache: it must never get an address the kernel does not hold for its
// own uid, for at least the TTL it is handed (a second at least).

const uidOther = 4002

// whoIdent answers every query as the uid it holds now.
type whoIdent struct{ uid atomic.Uint32 }

func (w *whoIdent) Opener(uint8, netip.AddrPort, netip.AddrPort) (uint32, bool, error) {
	return w.uid.Load(), true, nil
}

// testClock is a clock the test moves.
type testClock struct{ ns atomic.Int64 }

func newTestClock() *testClock {
	c := &testClock{}
	c.ns.Store(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *testClock) Now() time.Time        { return time.Unix(0, c.ns.Load()) }
func (c *testClock) Add(d time.Duration)   { c.ns.Add(int64(d)) }
func (c *testClock) opt() func(o *Options) { return func(o *Options) { o.Now = c.Now } }
func (c *testClock) optWith(f func(*Options)) func(o *Options) {
	return func(o *Options) { o.Now = c.Now; f(o) }
}

// timedKernel is the fake kernel with time: it remembers until when each
// element was written to be held (the fake itself keeps elements forever).
type timedKernel struct {
	*ruleset.Fake
	now   func() time.Time
	mu    sync.Mutex
	until map[elemKey]time.Time
}

func (k *timedKernel) AddProxy(es []ruleset.ProxyElement) error {
	if err := k.Fake.AddProxy(es); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, pe := range es {
		k.until[elemKey{pe.UID, pe.Element}] = k.now().Add(pe.Timeout)
	}
	return nil
}

// holds reports whether the kernel holds the element of a:443/tcp for uid
// until at least t.
func (k *timedKernel) holds(uid uint32, a string, t time.Time) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	e := ruleset.ElementFor(config.TCP, netip.MustParsePrefix(a+"/32"), 443, 443)
	u, ok := k.until[elemKey{uid, e}]
	return ok && !u.Before(t)
}

// cacheRig is a rig with two allowlists (uidWeb, uidOther), a test clock
// and the timed kernel.
func cacheRig(t *testing.T, web, other *Allowlist, opt func(*Options)) (*rig, *whoIdent, *testClock, *timedKernel) {
	t.Helper()
	clk := newTestClock()
	who := &whoIdent{}
	who.uid.Store(uidWeb)
	var tk *timedKernel
	r := newRigWith(t, who, func(o *Options) {
		o.Now = clk.Now
		tk = &timedKernel{Fake: o.Kernel.(*ruleset.Fake), now: clk.Now, until: map[elemKey]time.Time{}}
		o.Kernel = tk
		if opt != nil {
			opt(o)
		}
	}, []*Allowlist{web, other})
	return r, who, clk, tk
}

func otherAllowlist(t *testing.T, es ...string) *Allowlist {
	return &Allowlist{Name: "other", User: "other", UID: uidOther, Entries: entries(t, es...)}
}

// answeredTTL is the TTL of the first address record handed.
func answeredTTL(t *testing.T, m *dns.Msg) time.Duration {
	t.Helper()
	for _, rr := range m.Answer {
		if _, ok := rrAddr(rr); ok {
			return time.Duration(rr.Header().Ttl) * time.Second
		}
	}
	t.Fatalf("no address in %v", m)
	return 0
}

// Attack: uid A warms the cache; uid B asks the same name. B's answer comes
// from the cache (the upstream is asked once), and when it arrives the
// kernel holds the address for B, for the TTL handed.
func TestCacheHitForAnotherUIDWritesItsElementFirst(t *testing.T) {
	r, who, clk, tk := cacheRig(t, webAllowlist(t, "api.example.com:443"), otherAllowlist(t, "api.example.com:443"), nil)
	r.up.Set("api.example.com", dnstest.Record{A: addrs("192.0.2.10"), TTL: 300})
	if m := r.ask("udp", "api.example.com", dns.TypeA); m.Rcode != dns.RcodeSuccess {
		t.Fatalf("uid A: %v", m)
	}
	clk.Add(10 * time.Second)
	who.uid.Store(uidOther)
	m := r.ask("udp", "api.example.com", dns.TypeA)
	if m.Rcode != dns.RcodeSuccess || strings.Join(addrsOf(m), ",") != "192.0.2.10" {
		t.Fatalf("uid B: %v", m)
	}
	if n := r.up.QueriesFor("api.example.com"); n != 1 {
		t.Fatalf("the upstream was asked %d times, want 1 (B's answer from the cache)", n)
	}
	if ttl := answeredTTL(t, m); ttl != 290*time.Second {
		t.Errorf("B was handed TTL %s, want 290s (counted down)", ttl)
	}
	if !tk.holds(uidOther, "192.0.2.10", clk.Now().Add(answeredTTL(t, m))) {
		t.Fatalf("uid B got 192.0.2.10 from the cache; the kernel does not hold it for B for the TTL handed")
	}
	if n := r.k.Calls(ruleset.FakeAddProxy); n != 2 {
		t.Errorf("%d kernel writes, want 2 (one per uid)", n)
	}
	rec := httptest.NewRecorder()
	r.m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if want := "egressd_dns_proxy_cache_hits_total 1\n"; !strings.Contains(rec.Body.String(), want) {
		t.Errorf("metrics lack %s", want)
	}
}

// Attack: the same uid asks again when its element is about to lapse (the
// kernel wrote it for less than the cache keeps the answer: min_ttl above
// a short TTL is not it, so here the element's lifetime is the TTL, linger
// 0). The hit writes the element again before it answers.
func TestCacheHitRenewsALapsingElement(t *testing.T) {
	r, _, clk, tk := cacheRig(t, webAllowlist(t, "api.example.com:443"), otherAllowlist(t), nil)
	pol := r.policyWith(webAllowlist(t, "api.example.com:443"))
	pol.MinTTL, pol.Linger = time.Second, 0
	r.p.SetPolicy(pol)
	r.up.Set("api.example.com", dnstest.Record{A: addrs("192.0.2.10"), TTL: 30})
	r.ask("udp", "api.example.com", dns.TypeA)
	clk.Add(29*time.Second + 600*time.Millisecond) // the element has 0.4 s left; the entry 0.4 s
	m := r.ask("udp", "api.example.com", dns.TypeA)
	if n := r.up.QueriesFor("api.example.com"); n != 1 {
		t.Fatalf("the upstream was asked %d times, want 1 (from the cache)", n)
	}
	if ttl := answeredTTL(t, m); ttl != time.Second {
		t.Errorf("handed TTL %s, want 1s", ttl)
	}
	if !tk.holds(uidWeb, "192.0.2.10", clk.Now().Add(time.Second)) {
		t.Fatal("a cache hit handed an address whose element lapses within the TTL floor, without renewing it")
	}
	// Control: a hit while the element has long to live writes nothing.
	r.up.Set("b.example.com", dnstest.Record{A: addrs("192.0.2.11"), TTL: 30})
	pol = r.policyWith(webAllowlist(t, "api.example.com:443", "b.example.com:443"))
	pol.MinTTL, pol.Linger = time.Second, 0
	r.p.SetPolicy(pol)
	r.ask("udp", "b.example.com", dns.TypeA)
	before := r.k.Calls(ruleset.FakeAddProxy)
	clk.Add(5 * time.Second)
	r.ask("udp", "b.example.com", dns.TypeA)
	if n := r.k.Calls(ruleset.FakeAddProxy); n != before {
		t.Errorf("%d kernel writes for a hit whose element is held, want none", n-before)
	}
}

// Attack: an entry whose TTL ran out is never served: the upstream is asked
// again and its new address handed (and written).
func TestCacheExpiredEntryNotServed(t *testing.T) {
	r, _, clk, tk := cacheRig(t, webAllowlist(t, "api.example.com:443"), otherAllowlist(t), nil)
	r.up.Set("api.example.com", dnstest.Record{A: addrs("192.0.2.10"), TTL: 60})
	r.ask("udp", "api.example.com", dns.TypeA)
	r.up.Set("api.example.com", dnstest.Record{A: addrs("192.0.2.99"), TTL: 60})
	clk.Add(59 * time.Second)
	if m := r.ask("udp", "api.example.com", dns.TypeA); strings.Join(addrsOf(m), ",") != "192.0.2.10" {
		t.Fatalf("within its TTL: %v, want the cached 192.0.2.10 (control)", addrsOf(m))
	}
	clk.Add(time.Second)
	m := r.ask("udp", "api.example.com", dns.TypeA)
	if got := strings.Join(addrsOf(m), ","); got != "192.0.2.99" {
		t.Fatalf("after its TTL: %s, want the upstream's new 192.0.2.99", got)
	}
	if n := r.up.QueriesFor("api.example.com"); n != 2 {
		t.Errorf("the upstream was asked %d times, want 2", n)
	}
	if !tk.holds(uidWeb, "192.0.2.99", clk.Now().Add(answeredTTL(t, m))) {
		t.Error("the new address is not in the kernel")
	}
}

// Attack: the policy is the asker's, on every hit. A name uid A may ask,
// cached by A, is refused to uid B whose allowlist does not name it; an
// address A may have (allow_private_answers) is not handed to B, whose
// allowlist does not opt in.
func TestCacheHitUnderTheAskersPolicy(t *testing.T) {
	web := webAllowlist(t, "api.example.com:443", "lan.example.com:443")
	web.PrivateOK = true
	r, who, _, tk := cacheRig(t, web, otherAllowlist(t, "lan.example.com:443"), nil)
	r.up.Set("api.example.com", dnstest.Record{A: addrs("192.0.2.10"), TTL: 300})
	r.up.Set("lan.example.com", dnstest.Record{A: addrs("10.0.0.5"), TTL: 300})
	for _, n := range []string{"api.example.com", "lan.example.com"} {
		if m := r.ask("udp", n, dns.TypeA); m.Rcode != dns.RcodeSuccess || len(addrsOf(m)) != 1 {
			t.Fatalf("uid A, %s (control): %v", n, m)
		}
	}
	who.uid.Store(uidOther)
	if m := r.ask("udp", "api.example.com", dns.TypeA); m.Rcode != dns.RcodeRefused || len(m.Answer) != 0 {
		t.Errorf("uid B asked a name its allowlist does not name, cached by A: %v, want REFUSED", m)
	}
	m := r.ask("udp", "lan.example.com", dns.TypeA)
	if len(addrsOf(m)) != 0 || tk.holds(uidOther, "10.0.0.5", time.Time{}) {
		t.Errorf("uid B got a private address from A's cached answer: %v", addrsOf(m))
	}
}

// Attack: cache poisoning. An upstream reply never fills the entry of
// another question: records for other names in a reply are not served for
// those names, an A answer is not served for AAAA, a reply that fails the
// resolver's rules (a CNAME loop) is not stored.
func TestCachePoisoning(t *testing.T) {
	r, _, _, _ := cacheRig(t, webAllowlist(t, "*.example.com:443"), otherAllowlist(t), nil)
	r.up.Set("a.example.com", dnstest.Record{A: addrs("192.0.2.10"), AAAA: addrs("2001:db8::10"), TTL: 300})
	r.up.Set("b.example.com", dnstest.Record{A: addrs("192.0.2.20"), TTL: 300})
	r.up.SetMangle(func(m *dns.Msg) {
		if m.Question[0].Name == "a.example.com." {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "b.example.com.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: netip.MustParseAddr("192.0.2.66").AsSlice()})
		}
	})
	r.ask("udp", "a.example.com", dns.TypeA)
	m := r.ask("udp", "b.example.com", dns.TypeA)
	if got := strings.Join(addrsOf(m), ","); got != "192.0.2.20" {
		t.Errorf("b.example.com after a reply for a.example.com carried a record for it: %s, want 192.0.2.20", got)
	}
	if n := r.up.QueriesFor("b.example.com"); n != 1 {
		t.Errorf("b.example.com: upstream asked %d times, want 1 (not served from a's reply)", n)
	}
	m = r.ask("udp", "a.example.com", dns.TypeAAAA)
	if got := strings.Join(addrsOf(m), ","); got != "2001:db8::10" {
		t.Errorf("AAAA after A: %s", got)
	}
	r.up.SetMangle(nil)
	r.up.Set("loop.example.com", dnstest.Record{CNAME: "loop2.example.com", TTL: 300})
	r.up.Set("loop2.example.com", dnstest.Record{CNAME: "loop.example.com", TTL: 300})
	for i := 0; i < 2; i++ {
		if m := r.ask("udp", "loop.example.com", dns.TypeA); m.Rcode != dns.RcodeServerFailure {
			t.Errorf("a CNAME loop: %s, want SERVFAIL", dns.RcodeToString[m.Rcode])
		}
	}
	if n := r.up.QueriesFor("loop.example.com"); n != 2 {
		t.Errorf("a reply that failed the resolver's rules: upstream asked %d times, want 2 (never stored)", n)
	}
	// A reply to another question (a spoof) is not stored under either.
	r.up.SetMangle(func(m *dns.Msg) {
		if m.Question[0].Name == "c.example.com." {
			m.Question[0].Name = "d.example.com."
		}
	})
	r.up.Set("c.example.com", dnstest.Record{A: addrs("192.0.2.30"), TTL: 300})
	r.up.Set("d.example.com", dnstest.Record{A: addrs("192.0.2.40"), TTL: 300})
	if m := r.ask("udp", "c.example.com", dns.TypeA); m.Rcode != dns.RcodeServerFailure {
		t.Errorf("a reply to another question: %s, want SERVFAIL", dns.RcodeToString[m.Rcode])
	}
	r.up.SetMangle(nil)
	if m := r.ask("udp", "d.example.com", dns.TypeA); strings.Join(addrsOf(m), ",") != "192.0.2.40" || r.up.QueriesFor("d.example.com") != 1 {
		t.Errorf("d.example.com after a reply to c carried its question: %v", addrsOf(m))
	}
}

// Negative answers are cached for the SOA's minimum (RFC 2308; dnstest's
// SOA: TTL 30, MINIMUM 10), and not past it.
func TestCacheNegative(t *testing.T) {
	r, _, clk, _ := cacheRig(t, webAllowlist(t, "*.example.com:443"), otherAllowlist(t), nil)
	for i := 0; i < 2; i++ {
		if m := r.ask("udp", "gone.example.com", dns.TypeA); m.Rcode != dns.RcodeNameError {
			t.Fatalf("NXDOMAIN: %v", m)
		}
	}
	if n := r.up.QueriesFor("gone.example.com"); n != 1 {
		t.Errorf("NXDOMAIN: upstream asked %d times, want 1", n)
	}
	clk.Add(10 * time.Second)
	r.up.Set("gone.example.com", dnstest.Record{A: addrs("192.0.2.50"), TTL: 60})
	if m := r.ask("udp", "gone.example.com", dns.TypeA); strings.Join(addrsOf(m), ",") != "192.0.2.50" {
		t.Errorf("after the SOA minimum: %v, want the new answer", m)
	}
	// NODATA: an AAAA question of a name with A only.
	r.ask("udp", "gone.example.com", dns.TypeAAAA)
	r.ask("udp", "gone.example.com", dns.TypeAAAA)
	if n := r.up.QueriesFor("gone.example.com"); n != 3 {
		t.Errorf("upstream asked %d times, want 3 (NODATA cached)", n)
	}
}

// Attack: an allowlist with a wildcard over a domain the attacker serves
// asks many random names: the cache stays within its bounds, in entries and
// bytes, and keeps answering (least recently used out first).
func TestCacheBoundedUnderRandomNames(t *testing.T) {
	const maxEntries, maxBytes = 64, 64 * 300
	r, _, _, _ := cacheRig(t, webAllowlist(t, "**.attacker.example:443"), otherAllowlist(t), func(o *Options) {
		o.CacheEntries, o.CacheBytes, o.MaxElements = maxEntries, maxBytes, 1<<20
	})
	r.up.Set("*.attacker.example", dnstest.Record{A: addrs("192.0.2.7"), TTL: 3600})
	for i := 0; i < 400; i++ {
		r.ask("udp", fmt.Sprintf("r%d.attacker.example", i), dns.TypeA)
		if n, b := r.p.cache.stats(); n > maxEntries || b > maxBytes {
			t.Fatalf("after %d names: %d entries, %d bytes; bounds %d, %d", i+1, n, b, maxEntries, maxBytes)
		}
	}
	if n, _ := r.p.cache.stats(); n == 0 {
		t.Fatal("nothing cached (control)")
	}
	// The most recent name is still there; the first long gone.
	r.ask("udp", "r399.attacker.example", dns.TypeA)
	r.ask("udp", "r0.attacker.example", dns.TypeA)
	if a, b := r.up.QueriesFor("r399.attacker.example"), r.up.QueriesFor("r0.attacker.example"); a != 1 || b != 2 {
		t.Errorf("upstream asked r399 %d times (want 1), r0 %d times (want 2)", a, b)
	}
}

// A configuration change empties the cache: the resolvers may have
// changed, and a reply of the old ones is not served under the new policy.
func TestCacheClearedByPolicy(t *testing.T) {
	r, _, _, _ := cacheRig(t, webAllowlist(t, "api.example.com:443"), otherAllowlist(t), nil)
	r.up.Set("api.example.com", dnstest.Record{A: addrs("192.0.2.10"), TTL: 300})
	r.ask("udp", "api.example.com", dns.TypeA)
	r.p.SetPolicy(r.policyWith(webAllowlist(t, "api.example.com:443")))
	r.ask("udp", "api.example.com", dns.TypeA)
	if n := r.up.QueriesFor("api.example.com"); n != 2 {
		t.Errorf("upstream asked %d times, want 2", n)
	}
}

// The cache key of a client's query is the key of what the upstream is
// asked for it (upstreamQuery): no bit the upstream sees is left out of
// the key, nothing the upstream does not see splits it.
func TestCacheKeyIsTheUpstreamQuestion(t *testing.T) {
	for _, c := range []struct {
		name string
		q    func(q *dns.Msg)
	}{
		{"plain", func(q *dns.Msg) {}},
		{"case", func(q *dns.Msg) { q.Question[0].Name = "ExAmPlE.CoM." }},
		{"no RD", func(q *dns.Msg) { q.RecursionDesired = false }},
		{"CD", func(q *dns.Msg) { q.CheckingDisabled = true }},
		{"AD", func(q *dns.Msg) { q.AuthenticatedData = true }},
		{"EDNS", func(q *dns.Msg) { q.SetEdns0(1232, false) }},
		{"EDNS DO", func(q *dns.Msg) { q.SetEdns0(4096, true) }},
		{"AAAA", func(q *dns.Msg) { q.Question[0].Qtype = dns.TypeAAAA }},
		{"class CH", func(q *dns.Msg) { q.Question[0].Qclass = dns.ClassCHAOS }},
	} {
		q := new(dns.Msg)
		q.SetQuestion("example.com.", dns.TypeA)
		c.q(q)
		if k, uk := keyOf(q), keyOf(upstreamQuery(q)); k != uk {
			t.Errorf("%s: client's key %+v, upstream question's %+v", c.name, k, uk)
		}
	}
	// Different questions upstream, different keys.
	a, b := new(dns.Msg), new(dns.Msg)
	a.SetQuestion("example.com.", dns.TypeA)
	b.SetQuestion("example.com.", dns.TypeA)
	b.SetEdns0(1232, true)
	if keyOf(a) == keyOf(b) {
		t.Error("a query with DO and one without share a key")
	}
}
