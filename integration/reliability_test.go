//go:build linux

package integration

import (
	"fmt"
	"math/rand"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/dnstest"
	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/internal/policy"
	"github.com/egressd/egressd/ruleset"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/miekg/dns"
)

// kernelElements returns the elements of an allowlist's IPv4 set.
func (w *world) kernelElements(allowlist string) []ruleset.Element {
	w.t.Helper()
	sets, err := (&ruleset.Netlink{NetNSFd: w.ns.Fd()}).ReadSets()
	if err != nil {
		w.t.Fatal(err)
	}
	return sets[ruleset.SetName4(allowlist)]
}

func hasAddr(es []ruleset.Element, a string) bool {
	ip := netip.MustParseAddr(a)
	for _, e := range es {
		if e.AddrFrom.Compare(ip) <= 0 && ip.Compare(e.AddrTo) <= 0 {
			return true
		}
	}
	return false
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// DNS faults: for each, the denied destination is never reachable (probed
// continuously), configured allowances are kept (served stale while DNS
// fails), and the right event is logged.
func TestDNSFaults(t *testing.T) {
	const name = "api.example.test"
	cases := []struct {
		name    string
		mainExt string         // appended to the main configuration
		linger  string         // replaces the default linger
		fault   func(w *world) // applied once the daemon runs
		event   string         // expected event after the fault
		match   func(map[string]any) bool
		kept    bool // 192.0.2.10:443 stays allowed
		after   func(t *testing.T, w *world)
	}{
		{name: "server down", fault: func(w *world) { w.dns.Close() }, event: event.ResolveFailed,
			match: func(e map[string]any) bool { return e["serving_stale"] == true }, kept: true},
		{name: "slow (2.5 s, past the 2 s timeout)", fault: func(w *world) {
			w.dns.Set(name, dnstest.Record{A: addrs("192.0.2.10"), TTL: 1, Delay: 2500 * time.Millisecond})
		}, event: event.ResolveFailed, match: func(e map[string]any) bool { return e["serving_stale"] == true }, kept: true},
		{name: "SERVFAIL", fault: func(w *world) { w.dns.Set(name, dnstest.Record{Rcode: dns.RcodeServerFailure}) }, event: event.ResolveFailed,
			match: func(e map[string]any) bool { return strings.Contains(fmt.Sprint(e["error"]), "SERVFAIL") }, kept: true},
		{name: "REFUSED", fault: func(w *world) { w.dns.Set(name, dnstest.Record{Rcode: dns.RcodeRefused}) }, event: event.ResolveFailed,
			match: func(e map[string]any) bool { return strings.Contains(fmt.Sprint(e["error"]), "REFUSED") }, kept: true},
		{name: "spoofed reply: wrong question", fault: func(w *world) {
			w.dns.SetMangle(func(m *dns.Msg) {
				m.Question[0].Name = "evil.example.test."
				m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "evil.example.test.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: netip.MustParseAddr("198.51.100.20").AsSlice()}}
			})
		}, event: event.ResolveFailed, match: func(e map[string]any) bool { return strings.Contains(fmt.Sprint(e["error"]), "does not match") }, kept: true,
			after: func(t *testing.T, w *world) {
				if hasAddr(w.kernelElements("billing"), "198.51.100.20") {
					t.Error("a spoofed answer reached the kernel")
				}
			}},
		{name: "spoofed reply: wrong ID", fault: func(w *world) { w.dns.SetMangle(func(m *dns.Msg) { m.Id ^= 0x5a5a }) }, event: event.ResolveFailed,
			match: func(e map[string]any) bool { return e["serving_stale"] == true }, kept: true},
		{name: "CNAME loop", fault: func(w *world) {
			w.dns.Set(name, dnstest.Record{CNAME: "loop.example.test", TTL: 1})
			w.dns.Set("loop.example.test", dnstest.Record{CNAME: name, TTL: 1})
		}, event: event.ResolveFailed, match: func(e map[string]any) bool { return strings.Contains(fmt.Sprint(e["error"]), "CNAME chain") }, kept: true},
		{name: "over-long CNAME chain", fault: func(w *world) {
			w.dns.Set(name, dnstest.Record{CNAME: "c1.example.test", TTL: 1})
			for i := 1; i < 12; i++ {
				w.dns.Set(fmt.Sprintf("c%d.example.test", i), dnstest.Record{CNAME: fmt.Sprintf("c%d.example.test", i+1), TTL: 1})
			}
			w.dns.Set("c12.example.test", dnstest.Record{A: addrs("198.51.100.20"), TTL: 1})
		}, event: event.ResolveFailed, match: func(e map[string]any) bool { return strings.Contains(fmt.Sprint(e["error"]), "CNAME chain") }, kept: true},
		{name: "rebinding to loopback, private, link-local", fault: func(w *world) {
			w.dns.Set(name, dnstest.Record{A: addrs("192.0.2.10", "127.0.0.1", "10.0.0.1", "169.254.169.254"), TTL: 1})
		}, event: event.Resolved, match: func(e map[string]any) bool { return e["dropped"] == float64(3) }, kept: true,
			after: func(t *testing.T, w *world) {
				for _, a := range []string{"127.0.0.1", "10.0.0.1", "169.254.169.254"} {
					if hasAddr(w.kernelElements("billing"), a) {
						t.Errorf("rebinding answer %s reached the kernel", a)
					}
				}
			}},
		{name: "TTL 0 is raised to min_ttl", fault: func(w *world) {
			w.dns.Set(name, dnstest.Record{A: addrs("192.0.2.10"), TTL: 0})
		}, kept: true, after: func(t *testing.T, w *world) {
			before := w.dns.QueriesFor(name)
			time.Sleep(3 * time.Second)
			// min_ttl 1s: about one A and one AAAA query per second, not a storm.
			if n := w.dns.QueriesFor(name) - before; n > 10 || n < 2 {
				t.Errorf("%d queries in 3 s with TTL 0 and min_ttl 1s", n)
			}
		}},
		{name: "TTL 2^31-1 is lowered to max_ttl", mainExt: "max_ttl: 2s\n", fault: func(w *world) {
			w.dns.Set(name, dnstest.Record{A: addrs("192.0.2.10"), TTL: 1<<31 - 1})
		}, kept: true, after: func(t *testing.T, w *world) {
			time.Sleep(1500 * time.Millisecond)
			before := w.dns.QueriesFor(name)
			time.Sleep(3 * time.Second)
			if n := w.dns.QueriesFor(name) - before; n < 1 {
				t.Error("no refresh within max_ttl of a huge TTL")
			}
		}},
		{name: "5,000 records: TCP, capped", mainExt: "max_addresses_per_name: 64\n", fault: func(w *world) {
			// 768 distinct addresses (the three documentation /24s, repeated:
			// 198.18.0.0/15 is refused as not globally reachable).
			docs := [][3]byte{{192, 0, 2}, {198, 51, 100}, {203, 0, 113}}
			var many []netip.Addr
			for i := 0; i < 5000; i++ {
				p := docs[i%768/256]
				many = append(many, netip.AddrFrom4([4]byte{p[0], p[1], p[2], byte(i)}))
			}
			w.dns.Set(name, dnstest.Record{A: many, TTL: 1})
		}, event: event.Resolved, match: func(e map[string]any) bool { d, _ := e["dropped"].(float64); return d > 500 }, kept: false,
			after: func(t *testing.T, w *world) {
				if n := len(w.kernelElements("billing")); n > 64+1 {
					t.Errorf("kernel holds %d elements for a name capped at 64 (+1 literal)", n)
				}
			}},
		{name: "round-robin subsets accumulate, capped", mainExt: "max_addresses_per_name: 4\n", linger: "30s", fault: func(w *world) {
			w.dns.Set(name, dnstest.Record{TTL: 1, Rotate: [][]netip.Addr{
				addrs("203.0.113.1", "203.0.113.2"), addrs("203.0.113.3", "203.0.113.4"), addrs("203.0.113.5", "203.0.113.6")}})
		}, event: event.Resolved, match: func(e map[string]any) bool { return len(e["added"].([]any)) > 0 }, kept: false,
			after: func(t *testing.T, w *world) {
				time.Sleep(4 * time.Second)
				n := 0
				for _, e := range w.kernelElements("billing") {
					if strings.HasPrefix(e.AddrFrom.String(), "203.0.113.") && e.PortFrom == 443 {
						n++
					}
				}
				if n < 3 || n > 4 {
					t.Errorf("%d accumulated addresses, want 3..4 (capped at 4)", n)
				}
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			w.standardConfig()
			main := mainConfig + c.mainExt
			if c.linger != "" {
				main = strings.Replace(main, "linger: 2s", "linger: "+c.linger, 1)
			}
			w.write("egressd.yaml", main)
			w.dns.Set(name, dnstest.Record{A: addrs("192.0.2.10"), TTL: 1})
			w.start()
			p := w.probe(uidA, "198.51.100.20:4444")
			m := w.mark()
			c.fault(w)
			if c.event != "" {
				deadline := time.Now().Add(8 * time.Second)
				for {
					found := false
					for _, e := range w.eventsSince(c.event, m) {
						if e["name"] == name && (c.match == nil || c.match(e)) {
							found = true
						}
					}
					if found {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("no matching %s event; log:\n%s", c.event, w.logText())
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
			if c.after != nil {
				c.after(t, w)
			}
			if c.kept {
				w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)
			}
			w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)
			if tries, leaks := p.finish(); leaks > 0 || tries == 0 {
				t.Errorf("denied destination reachable %d times in %d tries", leaks, tries)
			}
		})
	}
}

// A resolver that never answers in time must not delay reloads or drift
// repair: DNS rounds run beside the loop.
func TestResponsiveDuringSlowDNS(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.dns.Set("api.example.test", dnstest.Record{A: addrs("192.0.2.10"), TTL: 1})
	w.unowned = true // the drift below: an owned table cannot be removed by another tool
	w.start()
	w.dns.Set("api.example.test", dnstest.Record{A: addrs("192.0.2.10"), TTL: 1, Delay: 5 * time.Second})
	time.Sleep(1500 * time.Millisecond) // a round is now stuck on the slow server
	w.write("allow.d/web.yaml", fmt.Sprintf("user: %d\nallow: [198.51.100.20:443]\ndns: none\n", uidB))
	took := w.eventually(uidB, "tcp", "198.51.100.20:443", okConnected, 1500*time.Millisecond)
	t.Logf("edit applied in %v while DNS hangs", took)
	m := w.mark()
	if err := (&ruleset.Netlink{NetNSFd: w.ns.Fd()}).Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.waitEvent(event.DriftRepaired, m, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)
	w.expect(uidA, "tcp", "192.0.2.10:443", okConnected) // served stale meanwhile
}

// Private answers are refused by default but taken when the allowlist opts in.
func TestPrivateAnswersOptIn(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.write("allow.d/lan.yaml", fmt.Sprintf("user: %d\nallow: [nas.example.test:443]\nallow_private_answers: true\n", uidNone))
	w.dns.Set("nas.example.test", dnstest.Record{A: addrs("10.1.2.3"), TTL: 60})
	w.dns.Set("api.example.test", dnstest.Record{A: addrs("192.0.2.10", "10.1.2.4"), TTL: 60})
	w.start()
	sets, err := (&ruleset.Netlink{NetNSFd: w.ns.Fd()}).ReadSets()
	if err != nil {
		t.Fatal(err)
	}
	if !hasAddr(sets[ruleset.SetName4("lan")], "10.1.2.3") {
		t.Error("an opted-in private answer is not in the kernel")
	}
	if hasAddr(sets[ruleset.SetName4("billing")], "10.1.2.4") || !hasAddr(sets[ruleset.SetName4("billing")], "192.0.2.10") {
		t.Errorf("billing (not opted in): %v", sets[ruleset.SetName4("billing")])
	}
}

// A name that never resolved allows nothing; stale_grace ends stale service.
func TestStaleGraceFailsClosed(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.write("egressd.yaml", strings.Replace(mainConfig, "stale_grace: 30s", "stale_grace: 3s", 1))
	w.dns.Set("api.example.test", dnstest.Record{A: addrs("192.0.2.10"), TTL: 1})
	w.start()
	w.dns.Set("api.example.test", dnstest.Record{Rcode: dns.RcodeServerFailure})
	w.expect(uidA, "tcp", "192.0.2.10:443", okConnected) // served stale
	took := w.eventually(uidA, "tcp", "192.0.2.10:443", okRefused, 6*time.Second)
	t.Logf("stale address refused %v after DNS began failing (stale_grace 3s)", took)
}

// Main configuration pointing at unreachable resolvers: the daemon starts,
// literal entries are enforced, names allow nothing, failures are logged.
func TestUnreachableResolvers(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.write("egressd.yaml", strings.Replace(mainConfig, "192.0.2.53:53", "192.0.2.99:53", 1))
	w.start()
	if _, err := w.waitEvent(event.ResolveFailed, 0, time.Second); err != nil {
		t.Fatal(err)
	}
	w.expect(uidA, "udp", "203.0.113.5:5353", okConnected) // literal entry
	w.expect(uidA, "tcp", "192.0.2.10:443", okRefused)     // the name never resolved
	w.expect(uidB, "tcp", "192.0.2.12:443", okConnected)
}

// 1,000 malformed allowlists: each rejected with file and position, and the
// kernel unchanged. run --once exercises the same loader as the daemon.
func TestMalformedConfigsChangeNothing(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	// The kernel keeps a DNS-derived element for TTL + linger (issue 26):
	// long enough to outlast the test on a loaded machine, so that only
	// the malformed files could change the count.
	w.dns.Set("api.example.test", dnstest.Record{A: addrs("192.0.2.10"), AAAA: addrs("2001:db8::10"), TTL: 300})
	once := func() (int, string) {
		code, _, errs := w.egressdCmd(w.tw.RunArgs("--once")...)
		return code, errs
	}
	if code, out := once(); code != 0 {
		t.Fatalf("valid configuration: exit %d\n%s", code, out)
	}
	before := w.kernelElements("billing")
	rng := rand.New(rand.NewSource(42))
	valid := fmt.Sprintf("user: %d\nallow:\n  - api.example.test:443\n  - 203.0.113.5:5353/udp\ndns: resolvers\n", uidA)
	n := 0
	for n < 1000 {
		bad := mutate(rng, valid)
		if _, err := config.ParseAllowlist("x.yaml", "x", []byte(bad)); err == nil {
			continue // this mutation happens to be valid
		}
		n++
		if n%50 != 0 { // every malformed file is checked by the parser; every 50th also through the binary
			continue
		}
		w.write("allow.d/billing.yaml", bad)
		code, out := once()
		if code != 2 || !strings.Contains(out, "billing.yaml") {
			t.Fatalf("malformed file %d: exit %d, want 2 naming the file\n%q\n%s", n, code, bad, out)
		}
		if after := w.kernelElements("billing"); len(after) != len(before) {
			t.Fatalf("malformed file %d changed the kernel", n)
		}
	}
	w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)
	w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)
}

// mutate damages a valid allowlist the way typos and bad tooling do.
func mutate(rng *rand.Rand, s string) string {
	b := []byte(s)
	switch rng.Intn(6) {
	case 0: // flip a byte
		i := rng.Intn(len(b))
		b[i] = byte(rng.Intn(256))
	case 1: // delete a span
		i := rng.Intn(len(b))
		j := min(len(b), i+1+rng.Intn(8))
		b = append(b[:i], b[j:]...)
	case 2: // insert punctuation
		i := rng.Intn(len(b))
		b = append(b[:i], append([]byte{":[]{}-\"'\t#"[rng.Intn(10)]}, b[i:]...)...)
	case 3: // truncate
		b = b[:rng.Intn(len(b))]
	case 4: // a bad entry
		bad := []string{"  - host\n", "  - 1.2.3.4:0\n", "  - [::1]:99999\n", "  - *.x.test:443\n", "  - 10.0.0.1/8:1\n", "  - a:1-0\n", "bogus: 1\n", "user: root\n"}
		b = append(b, bad[rng.Intn(len(bad))]...)
	default: // duplicate a key
		b = append(b, "dns: resolvers\n"...)
	}
	return string(b)
}

// A file rewritten 100 times a second for 10 s: coalesced, no crash, the
// final state right.
func TestRapidRewritesCoalesce(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.start()
	m := w.mark()
	p := w.probe(uidA, "198.51.100.20:4444")
	start := time.Now()
	end := start.Add(10 * time.Second)
	i := 0
	for ; time.Now().Before(end); i++ {
		// 100 writes a second: catch up when the machine is slow, else wait.
		if ahead := time.Duration(i)*10*time.Millisecond - time.Since(start); ahead > 0 {
			time.Sleep(ahead)
		}
		port := 443
		if i%2 == 1 {
			port = 8443
		}
		// Written in place, not renamed: the hardest case (partial reads).
		os.WriteFile(filepath.Join(w.dir, "allow.d/web.yaml"), []byte(fmt.Sprintf("user: %d\nallow: [192.0.2.12:%d]\ndns: none\n", uidB, port)), 0o644) //nolint:errcheck
	}
	w.write("allow.d/web.yaml", fmt.Sprintf("user: %d\nallow: [198.51.100.20:443]\ndns: none\n", uidB))
	w.eventually(uidB, "tcp", "198.51.100.20:443", okConnected, 3*time.Second)
	w.expect(uidB, "tcp", "192.0.2.12:443", okRefused)
	loads := len(w.eventsSince(event.ConfigLoaded, m))
	t.Logf("%d writes in 10 s → %d reloads applied", i, loads)
	if loads > i/5 {
		t.Errorf("%d reloads for %d writes: not coalesced", loads, i)
	}
	if w.daemon == nil {
		t.Fatal("daemon gone")
	}
	if tries, leaks := p.finish(); leaks > 0 {
		t.Errorf("denied destination reachable %d times in %d tries", leaks, tries)
	}
}

// A foreign table with a drop rule on the same hook is left alone: egressd
// neither deletes it nor reports it as drift. (Its drop wins over egressd's
// accept: nftables runs every base chain; documented in docs/security.md.)
func TestForeignTableLeftAlone(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.start()
	c, err := nftables.New(nftables.WithNetNSFd(w.ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	other := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "other"})
	ch := c.AddChain(&nftables.Chain{Name: "out", Table: other, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter})
	c.AddRule(&nftables.Rule{Table: other, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{6}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x20, 0xfb}}, // dport 8443
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
	m := w.mark()
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if n := len(w.eventsSince(event.DriftRepaired, m)); n != 0 {
		t.Errorf("a foreign table triggered %d repairs", n)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, tb := range tables {
		found = found || tb.Name == "other"
	}
	if !found {
		t.Fatal("egressd removed a foreign table")
	}
	w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)
	w.expect(uidNone, "tcp", "192.0.2.10:8443", timedOut) // the foreign drop applies to everyone
}

// SIGKILL at random points during applies, 100 times: the kernel always
// holds the previous or the next complete state, never a mix; the restart
// reconciles.
func TestKillDuringApplies(t *testing.T) {
	w := newWorld(t)
	w.write("egressd.yaml", mainConfig)
	// Two configurations of 10,000 literal elements each: big enough that an
	// apply takes a while, different enough that a mix would show.
	gen := func(base byte) string {
		var b strings.Builder
		fmt.Fprintf(&b, "user: %d\nallow:\n", uidA)
		for i := 0; i < 10000; i++ {
			fmt.Fprintf(&b, "  - 198.%d.%d.%d:443\n", base+byte(i>>16), byte(i>>8), byte(i))
		}
		return b.String()
	}
	configs := []string{gen(18), gen(19)}
	plans := make([]ruleset.Plan, 2)
	for i, body := range configs {
		w.write("allow.d/billing.yaml", body)
		cfg, err := config.Load(filepath.Join(w.dir, "egressd.yaml"), true)
		if err != nil {
			t.Fatal(err)
		}
		plans[i] = ruleset.Render(policy.Build(policy.Inputs{Config: cfg, Users: policy.LookupUsers(cfg, config.SystemUsers)}).Ruleset)
	}
	k := &ruleset.Netlink{NetNSFd: w.ns.Fd()}
	rng := rand.New(rand.NewSource(7))
	states := map[string]int{}
	everApplied := true // the run --once below applies config 1
	// How long a start takes up to its first complete apply, to spread the
	// kills over it.
	w.write("allow.d/billing.yaml", configs[1])
	start := time.Now()
	if code, _, errs := w.egressdCmd(w.tw.RunArgs("--once")...); code != 0 {
		t.Fatalf("run --once: %d %s", code, errs)
	}
	span := time.Since(start)
	// The daemon's own start to its first complete apply, measured the same
	// way (it opens more than run --once does: the DNS proxy, the deny log,
	// the listen restriction), so that the kills spread over it on a loaded
	// machine too.
	w.write("allow.d/billing.yaml", configs[0])
	cmd := w.daemonCmd()
	start = time.Now()
	if err := w.ns.Start(cmd); err != nil {
		t.Fatal(err)
	}
	for {
		if fs, err := k.Verify(plans[0]); err == nil && len(fs) == 0 {
			break
		}
		if time.Since(start) > time.Minute {
			t.Fatal("the daemon did not apply config 0 within a minute")
		}
		time.Sleep(5 * time.Millisecond)
	}
	span = max(span, time.Since(start)) + 20*time.Millisecond
	cmd.Process.Signal(syscall.SIGKILL) //nolint:errcheck
	cmd.Wait()                          //nolint:errcheck
	for i := 0; i < 100; i++ {
		w.write("allow.d/billing.yaml", configs[i%2])
		cmd := w.daemonCmd()
		if err := w.ns.Start(cmd); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.Int63n(int64(span))))
		cmd.Process.Signal(syscall.SIGKILL) //nolint:errcheck
		cmd.Wait()                          //nolint:errcheck
		state := "none"
		for j, p := range plans {
			if fs, err := k.Verify(p); err == nil && len(fs) == 0 {
				state = fmt.Sprintf("config %d", j)
			}
		}
		if state == "none" {
			// Only before any apply completed may there be no table at all.
			if _, err := k.ReadSets(); err != ruleset.ErrNoTable || everApplied {
				fs, _ := k.Verify(plans[i%2])
				t.Fatalf("kill %d: the kernel holds neither complete state: %v", i, fs)
			}
		} else {
			everApplied = true
		}
		states[state]++
	}
	t.Logf("100 kills at random points within %v of start: kernel states seen %v", span.Round(time.Millisecond), states)
	if states["config 0"] == 0 || states["config 1"] == 0 {
		t.Errorf("the kills never landed after an apply: %v", states)
	}
	// A restart reconciles.
	w.start()
	if fs, err := k.Verify(plans[1]); err != nil || len(fs) != 0 {
		t.Fatalf("after restart: %v %v", fs, err)
	}
}

func (w *world) daemonCmd() *exec.Cmd {
	return exec.Command(egressd, w.tw.RunArgs()...)
}
