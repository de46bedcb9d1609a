package dnsproxy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/ruleset"
)

// Red team of issue 24's inline answers (f7df337): writer.Held is what
// lets the reader answer a cache hit without waiting. It must say true
// only when Ensure would write nothing: the kernel holds every element,
// for this uid, for this entry's protocol and ports, under the policy in
// force, until at least now+hold.

// rtb2Elems is what ensure builds for the addresses a, answered for
// allowlist al (each of its entries matching name).
func rtb2Elems(t *testing.T, al *Allowlist, name string, keep time.Duration, as ...string) []ruleset.ProxyElement {
	t.Helper()
	var es []ruleset.ProxyElement
	for _, s := range as {
		a := netip.MustParseAddr(s)
		for _, e := range al.Match(name) {
			es = append(es, ruleset.ProxyElement{UID: al.UID, Timeout: keep,
				Element: ruleset.ElementFor(e.Proto, netip.PrefixFrom(a, a.BitLen()), e.PortFrom, e.PortTo)})
		}
	}
	if len(es) == 0 {
		t.Fatalf("%s lists no entry for %s", al.Name, name)
	}
	return es
}

func rtb2Writer(t *testing.T, als ...*Allowlist) (*writer, *testClock, *ruleset.Fake) {
	t.Helper()
	var plans []ruleset.AllowlistPlan
	byUID := map[uint32]*Allowlist{}
	for _, al := range als {
		plans = append(plans, ruleset.AllowlistPlan{Allowlist: al.Name, Subject: ruleset.UserSubject(al.UID), Proxy: true})
		byUID[al.UID] = al
	}
	k := &ruleset.Fake{Plan: ruleset.Plan{Allowlists: plans}}
	clk := newTestClock()
	w := newWriter(k, clk.Now, 1000)
	if _, err := w.SetPolicy(&Policy{ByUID: byUID}); err != nil {
		t.Fatal(err)
	}
	return w, clk, k
}

// Attack: Held for an element that is not the asker's: about to expire,
// another uid's, the same address for another port, the same address and
// port for another protocol, an element a reload took out, a uid that left
// dns: proxy. Each must be false (the reader then defers to a worker,
// whose Ensure writes or fails), and a false Held changes nothing. The
// control: the element written for this uid, this entry, with the hold
// left, is held (the reader may answer).
func TestRedteamRTB2HeldOnlyWhatEnsureWouldNotWrite(t *testing.T) {
	const name = "api.example.com"
	web := webAllowlist(t, "api.example.com:443")
	other := otherAllowlist(t, "api.example.com:443")
	w, clk, k := rtb2Writer(t, web, other)
	const keep = 30 * time.Second
	mine := rtb2Elems(t, web, name, keep, "192.0.2.10")
	if err := w.Ensure(mine, name, keep); err != nil {
		t.Fatal(err)
	}
	writes := k.Calls(ruleset.FakeAddProxy)

	// Control: held for the TTL handed, and for the whole element's life.
	if !w.Held(mine, name, 20*time.Second) || !w.Held(mine, name, keep) {
		t.Fatal("control: the element just written for the asker is not held")
	}
	// About to expire: 10 s later the element has 20 s left.
	clk.Add(10 * time.Second)
	if w.Held(mine, name, 20*time.Second+time.Millisecond) {
		t.Error("Held: true for an element that lapses 1 ms before the TTL handed ends")
	}
	if !w.Held(mine, name, 20*time.Second) {
		t.Error("control: an element with exactly the TTL left is not held")
	}
	// The TTL floor: an element with 0.5 s left, a TTL 0 answer (hold 1 s).
	clk.Add(19*time.Second + 500*time.Millisecond)
	if w.Held(mine, name, time.Second) {
		t.Error("Held: true for an element with 0.5 s left, a hold of 1 s (the TTL floor)")
	}
	// Expired: the writer has not swept yet (a minute between sweeps).
	clk.Add(time.Second)
	if w.Held(mine, name, time.Second) {
		t.Error("Held: true for an element expired 0.5 s ago (not swept yet)")
	}
	clk.Add(-30 * time.Second) // back to 0.5 s after the write: alive, 29.5 s left
	for _, c := range []struct {
		what string
		es   []ruleset.ProxyElement
	}{
		{"another uid's element of the same address", rtb2Elems(t, other, name, keep, "192.0.2.10")},
		{"the same address for another port", rtb2Elems(t, webAllowlist(t, "api.example.com:8443"), name, keep, "192.0.2.10")},
		{"the same address for another protocol", rtb2Elems(t, webAllowlist(t, "api.example.com:443/udp"), name, keep, "192.0.2.10")},
		{"the same address for a port range holding 443", rtb2Elems(t, webAllowlist(t, "api.example.com:400-500"), name, keep, "192.0.2.10")},
		{"another address of the same element family", rtb2Elems(t, web, name, keep, "192.0.2.11")},
		{"one held, one not", rtb2Elems(t, web, name, keep, "192.0.2.10", "192.0.2.11")},
	} {
		if w.Held(c.es, name, time.Second) {
			t.Errorf("Held: true for %s", c.what)
		}
	}
	if !w.Held(mine, name, time.Second) {
		t.Fatal("control: the element is no longer held after the failed Helds")
	}
	// A name the allowlist does not list: the element is held, but not
	// for that name (the writer would refuse it: errPolicyChanged).
	if w.Held(mine, "evil.example.net", time.Second) {
		t.Error("Held: true for an element answered for a name the allowlist does not list")
	}
	if st := w.known[elemKey{mine[0].UID, mine[0].Element}]; len(st.names) != 1 || st.names[0] != name {
		t.Errorf("a refused Held recorded a name: %v", st.names)
	}
	// A reload that takes the name out: the element is removed, never held.
	if _, err := w.SetPolicy(&Policy{ByUID: map[uint32]*Allowlist{uidWeb: webAllowlist(t, "other.example.com:443"), uidOther: other}}); err != nil {
		t.Fatal(err)
	}
	if w.Held(mine, name, time.Second) {
		t.Error("Held: true after a reload took the name out of the allowlist")
	}
	// The name back, the element not: Held must not trust a stale view.
	if _, err := w.SetPolicy(&Policy{ByUID: map[uint32]*Allowlist{uidWeb: web, uidOther: other}}); err != nil {
		t.Fatal(err)
	}
	if w.Held(mine, name, time.Second) {
		t.Error("Held: true for an element a reload removed, after the name came back")
	}
	if err := w.Ensure(mine, name, keep); err != nil {
		t.Fatal(err)
	}
	// The uid leaves dns: proxy.
	if _, err := w.SetPolicy(&Policy{ByUID: map[uint32]*Allowlist{uidOther: other}}); err != nil {
		t.Fatal(err)
	}
	if w.Held(mine, name, time.Second) {
		t.Error("Held: true after the uid left dns: proxy")
	}
	if n := k.Calls(ruleset.FakeAddProxy) - writes; n != 1 {
		t.Errorf("%d kernel writes, want 1 (the Ensure after the reload): Held must never write", n)
	}
}
