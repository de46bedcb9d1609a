//go:build linux

package ruleset

import (
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
)

// Red team of Verify: drift that another root tool (nft by hand, a
// firewall manager) can make to an unowned table (kernels before 6.9, e.g.
// Debian 12's 6.1) and that weakens enforcement while every rule, element
// and uid set still reads back as planned. Verify must report each, and a
// full apply (the daemon's repair) must undo it.
func TestRedteamVerifyWeakeningDrift(t *testing.T) {
	e := newEnv(t)
	e.k.own.unowned = true
	p := basePlan()
	wt, err := layout(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	var restricted Chain
	for _, ch := range wt.Chains {
		if ch.Name == chainRestr {
			restricted = ch
		}
	}
	apply := func() {
		t.Helper()
		if err := e.k.ApplyFull(p); err != nil {
			t.Fatal(err)
		}
		if fs, err := e.k.Verify(p); err != nil || len(fs) != 0 {
			t.Fatalf("after a full apply: findings %v, err %v", fs, err)
		}
	}
	// drifted commits a change and wants Verify to report it (then repairs).
	drifted := func(what string, change func(c *nftables.Conn)) {
		t.Helper()
		apply()
		c, err := e.k.conn()
		if err != nil {
			t.Fatal(err)
		}
		change(c)
		if err := c.Flush(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		fs, err := e.k.Verify(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(fs) == 0 {
			t.Errorf("%s: Verify found nothing", what)
		}
		t.Logf("%s: %v", what, fs)
		apply()
	}
	// redeclare replaces a set the restricted chain looks up by one
	// declared otherwise, with the same rules around it (one transaction,
	// as `nft -f` would).
	redeclare := func(c *nftables.Conn, s *nftables.Set, es []nftables.SetElement) {
		ch := &nftables.Chain{Name: chainRestr, Table: table}
		c.FlushChain(ch)
		c.DelSet(&nftables.Set{Table: table, Name: s.Name})
		if err := c.AddSet(s, es); err != nil {
			t.Fatal(err)
		}
		for _, r := range restricted.Rules {
			c.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: r.Exprs()})
		}
	}
	u32 := binaryutil.NativeEndian.PutUint32
	cat := func(a, b []byte) []byte { return append(append([]byte{}, a...), b...) }

	// The table made dormant (`nft add table inet egressd { flags dormant; }`):
	// none of its chains sees a packet, every rule reads back as planned.
	drifted("table dormant", func(c *nftables.Conn) {
		c.AddTable(&nftables.Table{Name: TableName, Family: nftables.TableFamilyINet, Flags: 0x1}) // NFT_TABLE_F_DORMANT
	})

	// owners made an interval set whose elements start at (u . u): the
	// read-back sees (u . u), the kernel matches uid a with any conntrack
	// mark from a's up (a joins a flow another protected user opened).
	drifted("owners redeclared as intervals", func(c *nftables.Conn) {
		var es []nftables.SetElement
		for _, u := range []uint32{uidA, uidB} {
			es = append(es, nftables.SetElement{Key: cat(u32(u), u32(u)), KeyEnd: cat(u32(^uint32(0)), u32(u))})
		}
		redeclare(c, &nftables.Set{Table: table, Name: kOwners, KeyType: nftables.MustConcatSetType(nftables.TypeMark, nftables.TypeUID),
			Concatenation: true, Interval: true}, es)
	})

	// uidmarks made an interval map with the planned elements as starts
	// and ends that no reading checks: every uid above b opens its flows with b's mark (b then
	// joins them as their owner).
	drifted("uidmarks redeclared as intervals", func(c *nftables.Conn) {
		es := []nftables.SetElement{
			{Key: u32(uidA), Val: u32(uidA)},
			{Key: u32(uidB), IntervalEnd: true},
			{Key: u32(uidB), Val: u32(uidB)},
			{Key: u32(^uint32(0)), IntervalEnd: true},
		}
		redeclare(c, &nftables.Set{Table: table, Name: kUIDMarks, KeyType: nftables.TypeUID, DataType: nftables.TypeMark,
			IsMap: true, Interval: true, KeyByteOrder: binaryutil.NativeEndian}, es)
	})

	// The output chain re-created with another priority (after any filter
	// chain of another table, or, for dnszone, after conntrack): found as
	// chain_hook (control: this was found before too).
	drifted("output chain at another priority", func(c *nftables.Conn) {
		var out Chain
		for _, ch := range wt.Chains {
			if ch.Name == chainOut {
				out = ch
			}
		}
		k := out.kernel()
		c.FlushChain(k)
		c.DelChain(k)
		prio := nftables.ChainPriorityRef(100)
		nc := c.AddChain(&nftables.Chain{Name: chainOut, Table: table, Type: k.Type, Hooknum: k.Hooknum, Priority: prio})
		for _, r := range out.Rules {
			c.AddRule(&nftables.Rule{Table: table, Chain: nc, Exprs: r.Exprs()})
		}
	})

	// A default timeout on owners: every (u . u) egressd adds expires by
	// itself; until then nothing reads differently.
	drifted("owners given a default timeout", func(c *nftables.Conn) {
		var es []nftables.SetElement
		for _, u := range []uint32{uidA, uidB} {
			es = append(es, nftables.SetElement{Key: cat(u32(u), u32(u))})
		}
		redeclare(c, &nftables.Set{Table: table, Name: kOwners, KeyType: nftables.MustConcatSetType(nftables.TypeMark, nftables.TypeUID),
			Concatenation: true, HasTimeout: true, Timeout: 3600e9}, es)
	})
}

// A rule changed in a field the rule signature left out: the bitwise's xor
// of `ct state established,related` in the owner check. (state & (est|rel))
// ^ (est|rel) != 0 holds for a new flow, whose mark the rule before has
// just set to its own uid: every new flow of every protected user is
// accepted. Verify must report it, and the repair must cut the user off
// again. Control: b reaches its own destination before and after.
func TestRedteamVerifyRuleFieldDrift(t *testing.T) {
	e := newEnv(t)
	e.k.own.unowned = true
	e.serveTCP(t, "192.0.2.10:444")
	p := basePlan()
	if err := e.k.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	mustAllow(t, "b to its own 192.0.2.10:444", e.tcp(uidB, "192.0.2.10:444"))
	mustRefuse(t, "a to b's 192.0.2.10:444", e.tcp(uidA, "192.0.2.10:444"))

	c, err := e.k.conn()
	if err != nil {
		t.Fatal(err)
	}
	rules, err := c.GetRules(table, &nftables.Chain{Name: chainRestr, Table: table})
	if err != nil {
		t.Fatal(err)
	}
	changed := false
	for _, r := range rules {
		var owners, direction bool
		for _, x := range r.Exprs {
			if l, ok := x.(*expr.Lookup); ok && l.SetName == kOwners && !l.Invert {
				owners = true
			}
			if ct, ok := x.(*expr.Ct); ok && ct.Key == expr.CtKeyDIRECTION {
				direction = true
			}
		}
		if !owners || !direction || changed {
			continue
		}
		for _, x := range r.Exprs {
			if b, ok := x.(*expr.Bitwise); ok {
				b.Xor = append([]byte(nil), b.Mask...) // the first bitwise: ct state & (established|related)
				break
			}
		}
		c.ReplaceRule(r)
		changed = true
	}
	if !changed {
		t.Fatal("no owner check in the restricted chain")
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := e.tcp(uidA, "192.0.2.10:444"); err == nil {
		t.Log("with the xor changed, a reaches b's 192.0.2.10:444 (the drift weakens enforcement)")
	}
	fs, err := e.k.Verify(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) == 0 {
		t.Fatal("the owner check's xor changed: Verify found nothing")
	}
	t.Logf("found: %v", fs)
	if err := e.k.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	mustRefuse(t, "a to b's 192.0.2.10:444 after the repair", e.tcp(uidA, "192.0.2.10:444"))
	mustAllow(t, "b to its own 192.0.2.10:444 after the repair", e.tcp(uidB, "192.0.2.10:444"))
}

// An expression the netlink library cannot decode (rt, last, xfrm, osf,
// ...) is dropped from the rule it reads back. One inserted into the
// output chain's `meta skuid @users jump restricted`, between the uid's
// load and the lookup, overwrites the uid with the route's TCP MSS: no
// protected user jumps to its chain, every destination is open, and the
// rule read back as planned. Verify must report it.
func TestRedteamVerifyUndecodedExpression(t *testing.T) {
	e := newEnv(t)
	e.k.own.unowned = true
	e.serveTCP(t, "192.0.2.10:444")
	p := basePlan()
	if err := e.k.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	mustRefuse(t, "a to b's 192.0.2.10:444", e.tcp(uidA, "192.0.2.10:444"))
	c, err := e.k.conn()
	if err != nil {
		t.Fatal(err)
	}
	rules, err := c.GetRules(table, &nftables.Chain{Name: chainOut, Table: table})
	if err != nil {
		t.Fatal(err)
	}
	jump := rules[len(rules)-1]
	if _, ok := jump.Exprs[0].(*expr.Meta); !ok || len(jump.Exprs) != 3 {
		t.Fatalf("the output chain's last rule is not meta skuid @users jump: %#v", jump.Exprs)
	}
	jump.Exprs = []expr.Any{jump.Exprs[0], &expr.Rt{Register: 1, Key: expr.RtTCPMSS}, jump.Exprs[1], jump.Exprs[2]}
	c.ReplaceRule(jump)
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := e.tcp(uidA, "192.0.2.10:444"); err == nil {
		t.Log("with rt tcpmss inserted, a reaches b's 192.0.2.10:444 (the drift opens every destination)")
	}
	fs, err := e.k.Verify(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) == 0 {
		t.Fatal("an undecodable expression inserted in the jump to restricted: Verify found nothing")
	}
	t.Logf("found: %v", fs)
	if err := e.k.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	mustRefuse(t, "a to b's 192.0.2.10:444 after the repair", e.tcp(uidA, "192.0.2.10:444"))
}

// The DNS proxy's sets are written by the proxy, not the plan, and every
// protected user's allow rules look them up (meta skuid . ... @proxy4).
// Another tool's element there for a uid without dns: proxy, or without a
// timeout (the proxy gives every element TTL + linger), opens a
// destination; Verify must report it. Control: the plan's own destinations.
func TestRedteamVerifyProxySetElement(t *testing.T) {
	e := newEnv(t)
	e.k.own.unowned = true
	e.serveTCP(t, "192.0.2.10:444")
	p := Render(Desired{
		Allowlists: []Allowlist{
			{Name: "a", Subject: UserSubject(uidA), Elements: []Element{ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.10/32"), 443, 443)}},
			{Name: "b", Subject: UserSubject(uidB), Proxy: true},
		},
		DenyLog:   config.Defaults().DenyLog,
		ProxyPort: 153,
	})
	for _, tc := range []struct {
		name    string
		uid     uint32
		timeout time.Duration
	}{
		{"a uid without dns: proxy", uidA, time.Hour},
		{"a proxy user's element without a timeout", uidB, 0},
	} {
		if err := e.k.ApplyFull(p); err != nil {
			t.Fatal(err)
		}
		if fs, err := e.k.Verify(p); err != nil || len(fs) != 0 {
			t.Fatalf("fresh table: %v %v", fs, err)
		}
		mustRefuse(t, tc.name+": before", e.tcp(int(tc.uid), "192.0.2.10:444"))
		c, err := e.k.conn()
		if err != nil {
			t.Fatal(err)
		}
		ks := kernelSet{Proxy: true}
		el := ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.10/32"), 444, 444)
		if err := c.SetAddElements(ks.nft(), []nftables.SetElement{{Key: encode(ks, tc.uid, el, false), Timeout: tc.timeout}}); err != nil {
			t.Fatal(err)
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := e.tcp(int(tc.uid), "192.0.2.10:444"); err == nil {
			t.Logf("%s: the element opens 192.0.2.10:444", tc.name)
		}
		fs, err := e.k.Verify(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(fs) == 0 {
			t.Errorf("%s: Verify found nothing", tc.name)
		}
		t.Logf("%s: %v", tc.name, fs)
	}
}
