package dnsproxy

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/dnstest"
	"github.com/egressd/egressd/ruleset"
)

// Red team of the answer cache (issue 24, second round). The attacker is
// an unprivileged process of a dns: proxy uid (uidWeb) that also controls
// the authoritative answers of a domain its allowlist names; the victim is
// a second dns: proxy uid (uidOther).

// askMsg sends q as it is (its bits, its EDNS, the case of its name).
func (r *rig) askMsg(network string, q *dns.Msg) *dns.Msg {
	r.t.Helper()
	c := &dns.Client{Net: network, Timeout: 2 * time.Second, UDPSize: 4096}
	resp, _, err := c.Exchange(q, r.addr)
	if err != nil {
		r.t.Fatalf("%v over %s: %v", q.Question, network, err)
	}
	return resp
}

// Attack: a cache hit whose kernel write fails (ENOBUFS, the table gone)
// releases nothing, for another uid's hit and for the same uid's hit on a
// lapsing element: SERVFAIL without addresses. Control: once the kernel
// takes writes again, the same hits answer.
func TestRedteamRTCCacheHitKernelFails(t *testing.T) {
	for _, kerr := range []error{errors.New("netlink: ENOBUFS"), errors.New("netlink: ENOENT (table inet egressd gone)")} {
		r, who, clk, tk := cacheRig(t, webAllowlist(t, "api.example.com:443"), otherAllowlist(t, "api.example.com:443"), nil)
		pol := r.policyWith(webAllowlist(t, "api.example.com:443"), otherAllowlist(t, "api.example.com:443"))
		pol.MinTTL, pol.Linger = time.Second, 0
		r.p.SetPolicy(pol)
		r.up.Set("api.example.com", dnstest.Record{A: addrs("192.0.2.10"), TTL: 30})
		if m := r.ask("udp", "api.example.com", dns.TypeA); m.Rcode != dns.RcodeSuccess {
			t.Fatalf("warm (control): %v", m)
		}
		// Another uid's hit.
		who.uid.Store(uidOther)
		r.k.FailNext(ruleset.FakeAddProxy, kerr)
		if m := r.ask("udp", "api.example.com", dns.TypeA); m.Rcode != dns.RcodeServerFailure || len(handedAddrs(m)) != 0 {
			t.Errorf("%v: uid B's cache hit whose write failed: %v, want SERVFAIL without addresses", kerr, m)
		}
		if tk.holds(uidOther, "192.0.2.10", clk.Now()) {
			t.Fatalf("%v: the failed write is in the kernel (the fake failed it)", kerr)
		}
		// The same uid, its element lapsing within the TTL floor.
		who.uid.Store(uidWeb)
		clk.Add(29*time.Second + 600*time.Millisecond)
		r.k.FailNext(ruleset.FakeAddProxy, kerr)
		if m := r.ask("udp", "api.example.com", dns.TypeA); m.Rcode != dns.RcodeServerFailure || len(handedAddrs(m)) != 0 {
			t.Errorf("%v: uid A's hit on a lapsing element whose renewal failed: %v, want SERVFAIL without addresses", kerr, m)
		}
		if n := r.up.QueriesFor("api.example.com"); n != 1 {
			t.Fatalf("%v: upstream asked %d times, want 1 (the failures were cache hits)", kerr, n)
		}
		// Control: the kernel takes writes again.
		for _, uid := range []uint32{uidWeb, uidOther} {
			who.uid.Store(uid)
			m := r.ask("udp", "api.example.com", dns.TypeA)
			if m.Rcode != dns.RcodeSuccess || !tk.holds(uid, "192.0.2.10", clk.Now().Add(answeredTTL(t, m))) {
				t.Errorf("%v: uid %d after the kernel recovered: %v", kerr, uid, m)
			}
		}
	}
}

// Attack: the attacker's domain answers its own name with a CNAME into a
// name only the victim's allowlist names, and an address of its choosing
// for that name, with the largest TTL. The reply is stored under the
// attacker's question only: the victim's query for its name goes to the
// upstream and gets the real address; the victim's kernel never holds the
// attacker's; the attacker's name is refused to the victim.
func TestRedteamRTCCNAMEIntoAnotherUIDsName(t *testing.T) {
	r, who, clk, tk := cacheRig(t, webAllowlist(t, "**.attacker.example:443"), otherAllowlist(t, "victim.example.com:443"), nil)
	r.up.Set("victim.example.com", dnstest.Record{A: addrs("192.0.2.10"), TTL: 300})
	r.up.Set("evil.attacker.example", dnstest.Record{A: addrs("192.0.2.99"), TTL: 300})
	r.up.SetMangle(func(m *dns.Msg) {
		if m.Question[0].Name == "evil.attacker.example." {
			m.Answer = rrs(t, "evil.attacker.example. 2147483647 IN CNAME victim.example.com.",
				"victim.example.com. 2147483647 IN A 203.0.113.66")
		}
	})
	if m := r.ask("udp", "evil.attacker.example", dns.TypeA); m.Rcode != dns.RcodeSuccess {
		t.Fatalf("attacker (control): %v", m)
	}
	r.up.SetMangle(nil)
	who.uid.Store(uidOther)
	clk.Add(time.Second)
	m := r.ask("udp", "victim.example.com", dns.TypeA)
	if got := strings.Join(handedAddrs(m), ","); got != "192.0.2.10" {
		t.Errorf("the victim was handed %q, want the upstream's 192.0.2.10", got)
	}
	if n := r.up.QueriesFor("victim.example.com"); n != 1 {
		t.Errorf("the victim's name: upstream asked %d times, want 1 (not served from the attacker's reply)", n)
	}
	if tk.holds(uidOther, "203.0.113.66", clk.Now()) {
		t.Error("the victim's kernel holds the attacker's address")
	}
	if m := r.ask("udp", "evil.attacker.example", dns.TypeA); m.Rcode != dns.RcodeRefused || len(m.Answer) != 0 {
		t.Errorf("the victim asked the attacker's cached name: %v, want REFUSED", m)
	}
}

// Attack: bits and EDNS state split the key; the upstream answers a query
// with CD (checking disabled) with a bogus address a validating resolver
// would have refused. It is stored under the CD question only: the
// victim's plain query, with or without EDNS and DO, gets the validated
// answer. Case and the client's EDNS buffer size do not split it (the
// upstream sees neither): a mixed-case query is a hit, and writes the
// element for the asker.
func TestRedteamRTCKeyBits(t *testing.T) {
	r, who, clk, tk := cacheRig(t, webAllowlist(t, "api.example.com:443"), otherAllowlist(t, "api.example.com:443"), nil)
	r.up.Set("api.example.com", dnstest.Record{A: addrs("192.0.2.10"), TTL: 300})
	r.up.SetMangle(func(m *dns.Msg) {
		if m.CheckingDisabled {
			m.Answer = rrs(t, "api.example.com. 300 IN A 203.0.113.66")
		}
	})
	q := new(dns.Msg)
	q.SetQuestion("api.example.com.", dns.TypeA)
	q.CheckingDisabled = true
	if got := strings.Join(handedAddrs(r.askMsg("udp", q)), ","); got != "203.0.113.66" {
		t.Fatalf("the attacker's CD query (control): %s", got)
	}
	who.uid.Store(uidOther)
	for _, v := range []struct {
		name string
		f    func(q *dns.Msg)
	}{
		{"plain", func(*dns.Msg) {}},
		{"EDNS", func(q *dns.Msg) { q.SetEdns0(1232, false) }},
		{"EDNS DO", func(q *dns.Msg) { q.SetEdns0(4096, true) }},
		{"mixed case, EDNS 512", func(q *dns.Msg) { q.Question[0].Name = "API.Example.COM."; q.SetEdns0(512, false) }},
	} {
		q := new(dns.Msg)
		q.SetQuestion("api.example.com.", dns.TypeA)
		v.f(q)
		m := r.askMsg("udp", q)
		if got := strings.Join(handedAddrs(m), ","); got != "192.0.2.10" {
			t.Errorf("victim, %s: handed %q, want 192.0.2.10", v.name, got)
		}
	}
	if tk.holds(uidOther, "203.0.113.66", clk.Now()) {
		t.Error("the victim's kernel holds the CD answer's address")
	}
	// plain, EDNS, EDNS DO: three questions upstream; the mixed-case one
	// with another buffer size was the EDNS one's hit.
	if n := r.up.QueriesFor("api.example.com"); n != 4 {
		t.Errorf("upstream asked %d times, want 4 (CD, plain, EDNS, EDNS DO)", n)
	}
}

// Attack: a negative answer with the largest SOA TTL and minimum, for a
// name another uid needs, is kept at most cacheNegMax (5 minutes): then
// the upstream is asked again. A positive answer with the largest TTL is
// kept at most max_ttl; TTL 0, and a TTL with its top bit set, are not
// kept at all.
func TestRedteamRTCTTLExtremes(t *testing.T) {
	r, who, clk, _ := cacheRig(t, webAllowlist(t, "*.example.com:443"), otherAllowlist(t, "*.example.com:443"), nil)
	r.up.SetMangle(func(m *dns.Msg) {
		if m.Question[0].Name == "gone.example.com." {
			m.Rcode = dns.RcodeNameError
			m.Answer = nil
			m.Ns = rrs(t, "example.com. 2147483647 IN SOA ns.example.com. root.example.com. 1 60 60 60 2147483647")
		}
	})
	if m := r.ask("udp", "gone.example.com", dns.TypeA); m.Rcode != dns.RcodeNameError {
		t.Fatalf("attacker's NXDOMAIN (control): %v", m)
	}
	r.up.SetMangle(nil)
	r.up.Set("gone.example.com", dnstest.Record{A: addrs("192.0.2.50"), TTL: 60})
	who.uid.Store(uidOther)
	clk.Add(cacheNegMax - time.Second)
	if m := r.ask("udp", "gone.example.com", dns.TypeA); m.Rcode != dns.RcodeNameError {
		t.Errorf("within 5 minutes: %v, want the cached NXDOMAIN (control)", dns.RcodeToString[m.Rcode])
	}
	clk.Add(time.Second)
	if m := r.ask("udp", "gone.example.com", dns.TypeA); strings.Join(handedAddrs(m), ",") != "192.0.2.50" {
		t.Errorf("after 5 minutes: %v, want the upstream's answer", m)
	}
	for _, c := range []struct {
		ttl  uint32
		kept time.Duration // 0: not kept
	}{{0, 0}, {1 << 31, 0}, {1<<32 - 1, 0}, {1<<31 - 1, 10 * time.Minute}} {
		name := fmt.Sprintf("t%d.example.com", c.ttl)
		r.up.Set(name, dnstest.Record{A: addrs("192.0.2.60"), TTL: c.ttl})
		r.ask("udp", name, dns.TypeA)
		if c.kept > 0 {
			clk.Add(c.kept - time.Second)
			r.ask("udp", name, dns.TypeA)
			clk.Add(time.Second)
		}
		r.ask("udp", name, dns.TypeA)
		// Not kept: each query asks. Kept: the second is a hit, the
		// third, at the end of the lifetime, asks again.
		if n := r.up.QueriesFor(name); n != 2 {
			t.Errorf("TTL %d: upstream asked %d times, want 2 (kept %s)", c.ttl, n, c.kept)
		}
	}
}

// Attack: a reload between a query and its reply. The reply, asked under
// the previous policy (its resolvers), is answered but not stored: the
// next query asks the upstream again. Control: that one is stored.
func TestRedteamRTCReloadBetweenQueryAndReply(t *testing.T) {
	r, _, _, _ := cacheRig(t, webAllowlist(t, "api.example.com:443"), otherAllowlist(t), nil)
	r.up.Set("api.example.com", dnstest.Record{A: addrs("192.0.2.10"), TTL: 300})
	arrived, release := make(chan struct{}), make(chan struct{})
	r.up.SetInspect(func(*dns.Msg) {
		arrived <- struct{}{}
		<-release
	})
	done := make(chan *dns.Msg)
	go func() {
		q := new(dns.Msg)
		q.SetQuestion("api.example.com.", dns.TypeA)
		m, _, err := (&dns.Client{Net: "tcp", Timeout: 5 * time.Second}).Exchange(q, r.addr)
		if err != nil {
			t.Error(err)
		}
		done <- m
	}()
	<-arrived
	r.p.SetPolicy(r.policyWith(webAllowlist(t, "api.example.com:443")))
	r.up.SetInspect(nil)
	close(release)
	if m := <-done; m == nil || m.Rcode != dns.RcodeSuccess {
		t.Fatalf("the query across the reload: %v", m)
	}
	if n, _ := r.p.cache.stats(); n != 0 {
		t.Errorf("a reply asked for under the previous policy was stored (%d entries)", n)
	}
	r.ask("udp", "api.example.com", dns.TypeA)
	r.ask("udp", "api.example.com", dns.TypeA)
	if n := r.up.QueriesFor("api.example.com"); n != 2 {
		t.Errorf("upstream asked %d times, want 2 (the reload's reply not stored, the next one stored)", n)
	}
}

// Attack: memory. The cache's byte bound counts each entry as its wire
// form, its name and cacheEntryOverhead; what the heap really holds per
// entry (the entry, its list element, its map slot, the wire's and the
// name's allocations) must not be more, or random names grow the daemon
// past the bound it was given.
func TestRedteamRTCCacheMemoryAccounted(t *testing.T) {
	for _, n := range []int{1000, 1700, 3500, DefaultCacheEntries, 14000, 20000} {
		cacheMemory(t, n, 1)
	}
	// Large replies (an attacker's domain answers with many records, over
	// TCP): the allocator rounds their wire up to its size classes.
	cacheMemory(t, 200, 70)   // ~1.1 KB
	cacheMemory(t, 200, 1500) // ~63 KB, the most a DNS message holds
}

func cacheMemory(t *testing.T, n, records int) {
	c := newAnswerCache(n, 1<<30)
	msgs := make([]*dns.Msg, n)
	keys := make([]cacheKey, n)
	for i := range msgs {
		q := new(dns.Msg)
		q.SetQuestion(fmt.Sprintf("r%08d.attacker.example.", i), dns.TypeA)
		m := new(dns.Msg)
		m.SetReply(q)
		for j := 0; j < records; j++ {
			m.Answer = append(m.Answer, rrs(t, fmt.Sprintf("r%08d.attacker.example. 3600 IN A 192.0.%d.%d", i, j/250, j%250+1))...)
		}
		msgs[i], keys[i] = m, keyOf(q)
	}
	now := time.Now()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i, m := range msgs {
		c.put(c.generation(), keys[i], m, time.Hour, now)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	entries, accounted := c.stats()
	heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d entries: accounted %d bytes (%d per entry), heap grew %d bytes (%d per entry)",
		entries, accounted, accounted/entries, heap, heap/int64(entries))
	// slack: what else the test binary may allocate meanwhile (a few
	// KiB); the undercount this catches was 80 to 110 KiB at 10,000 to
	// 20,000 small entries.
	const slack = 16 << 10
	if heap > int64(accounted)+slack {
		t.Errorf("%d entries: the heap holds %d bytes, the bound counts %d: the cache can outgrow its byte bound by %.0f %%",
			entries, heap, accounted, 100*float64(heap-int64(accounted))/float64(accounted))
	}
	runtime.KeepAlive(msgs)
	runtime.KeepAlive(c)
}

// Attack: truncation across the cache and two uids. The upstream's
// truncated UDP reply carries an address its full (TCP) answer does not;
// the proxy asks again over TCP and stores that. Another uid's UDP hit is
// cut to its buffer (TC set), every address handed is in the kernel for
// that uid, the truncated reply's address never is; over TCP it gets the
// whole answer, from the cache.
func TestRedteamRTCTruncatedAcrossUIDs(t *testing.T) {
	r, who, clk, tk := cacheRig(t, webAllowlist(t, "*.cdn.example.com:443"), otherAllowlist(t, "*.cdn.example.com:443"), nil)
	var many []netip.Addr
	for i := 1; i <= 40; i++ {
		many = append(many, netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}))
	}
	r.up.Set(rtName, dnstest.Record{A: many, TTL: 60})
	r.up.SetMangle(func(m *dns.Msg) {
		if m.Truncated {
			m.Answer = rrs(t, rtName+" 60 IN A 203.0.113.66")
		}
	})
	r.ask("udp", rtName, dns.TypeA)
	who.uid.Store(uidOther)
	m := r.ask("udp", rtName, dns.TypeA)
	if !m.Truncated || len(handedAddrs(m)) == 0 {
		t.Fatalf("uid B's UDP hit: not truncated, or empty: %v", m)
	}
	for _, a := range handedAddrs(m) {
		if !tk.holds(uidOther, a, clk.Now().Add(answeredTTL(t, m))) {
			t.Errorf("uid B was handed %s, which the kernel does not hold for it", a)
		}
	}
	for _, uid := range []uint32{uidWeb, uidOther} {
		if tk.holds(uid, "203.0.113.66", clk.Now()) {
			t.Errorf("the truncated reply's address is in the kernel for uid %d", uid)
		}
	}
	if m := r.ask("tcp", rtName, dns.TypeA); len(handedAddrs(m)) != len(many) || m.Truncated {
		t.Errorf("uid B over TCP: %d addresses (truncated %v), want %d", len(handedAddrs(m)), m.Truncated, len(many))
	}
	if n := r.up.QueriesFor(rtName); n != 2 {
		t.Errorf("upstream asked %d times, want 2 (UDP then TCP, for uid A's query; uid B's from the cache)", n)
	}
}
