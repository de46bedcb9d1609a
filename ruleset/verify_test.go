package ruleset

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Verification is a diff of two object lists: the layout's chains and the
// kernel's, read into the same form. Each way another tool can change the
// chains is one finding; the table as applied is none.
func TestDiffChains(t *testing.T) {
	p := everyKindPlan(everyDenyLog[0], true)
	want, err := layout(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if fs := diffChains(want.Chains, want.kernelForm()); len(fs) != 0 {
		t.Fatalf("the layout against itself: %v", fs)
	}
	for _, tc := range []struct {
		name   string
		change func(map[string]kernelChain)
		want   string // kind object: detail prefix
	}{
		{"chain deleted", func(m map[string]kernelChain) { delete(m, chainRestr) }, "chain_missing restricted: chain missing"},
		{"chain added", func(m map[string]kernelChain) {
			m["mine"] = kernelChain{ch: &nftables.Chain{Name: "mine"}}
		}, "chain_extra mine: chain not in the plan"},
		{"hook changed", func(m map[string]kernelChain) {
			kc := m[chainOut]
			ch := *kc.ch
			ch.Priority = nftables.ChainPriorityMangle
			kc.ch = &ch
			m[chainOut] = kc
		}, "chain_hook output: base chain is not type filter hook output priority filter policy accept"},
		{"hook removed", func(m map[string]kernelChain) {
			kc := m[chainIn]
			kc.ch = &nftables.Chain{Name: chainIn}
			m[chainIn] = kc
		}, "chain_hook input: base chain is not type filter hook input priority filter policy accept"},
		{"policy drop", func(m map[string]kernelChain) {
			kc := m[chainNAT]
			ch := *kc.ch
			drop := nftables.ChainPolicyDrop
			ch.Policy = &drop
			kc.ch = &ch
			m[chainNAT] = kc
		}, "chain_hook dnsproxy: base chain is not type nat hook output priority -100 policy accept"},
		{"last rule deleted", func(m map[string]kernelChain) {
			kc := m[chainDeny]
			kc.rules = kc.rules[:len(kc.rules)-1]
			m[chainDeny] = kc
		}, "rules_differ deny: 5 rules, want 6; rule 6 missing (reject(2,3))"},
		{"rule added", func(m map[string]kernelChain) {
			kc := m[chainOut]
			kc.rules = append([]string(nil), kc.rules...)
			kc.rules = append(kc.rules, "verdict(1,)")
			m[chainOut] = kc
		}, "rules_differ output: 10 rules, want 9; extra rule 10 (verdict(1,))"},
		{"rule changed", func(m map[string]kernelChain) {
			kc := m[chainRestr]
			kc.rules = append([]string(nil), kc.rules...)
			kc.rules[0] = "verdict(1,)"
			m[chainRestr] = kc
		}, "rules_differ restricted: rule 1 is verdict(1,), want ct(0,r1,false,0) bitwise(r1,r1,4,08000000,00000000)"},
	} {
		have := want.kernelForm()
		tc.change(have)
		fs := diffChains(want.Chains, have)
		if len(fs) != 1 || !strings.HasPrefix(fs[0].String(), tc.want) {
			t.Errorf("%s: %v, want one finding %q", tc.name, fs, tc.want)
		}
	}
}

// The fake kernel holds the layout's chains and diffs them as Verify does:
// a chain another tool changed, and a plan whose rules are not the ones it
// holds (another DNS proxy port), are rules_differ.
func TestFakeVerifiesChains(t *testing.T) {
	p := everyKindPlan(everyDenyLog[1], false)
	f := &Fake{}
	if err := f.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	if fs, _ := f.Verify(p); len(fs) != 0 {
		t.Fatalf("as applied: %v", fs)
	}
	q := everyKindPlan(everyDenyLog[1], false)
	q.ProxyPort = 154
	if fs, _ := f.Verify(q); kinds(fs) != "rules_differ dnsproxy, rules_differ dnszone, rules_differ input, rules_differ restricted" {
		t.Errorf("another proxy port: %v", fs)
	}
	f.BreakRules("mine")
	f.BreakRules(chainIn)
	if fs, _ := f.Verify(p); kinds(fs) != "rules_differ input, chain_extra mine" {
		t.Errorf("changed by another tool: %v", fs)
	}
}

// The fake kernel holds the DNS proxy's answers as the adapter does: an
// element there already gets the new timeout and keeps its name, deleting
// one that is not there is ignored, a full apply keeps those of uids that
// still have dns: proxy, and without a table every call fails.
func TestFakeProxy(t *testing.T) {
	p := everyKindPlan(everyDenyLog[0], false) // uid 4002: dns: proxy
	e := ElementFor(config.TCP, netip.MustParsePrefix("198.51.100.9/32"), 443, 443)
	f := &Fake{}
	if err := f.AddProxy([]ProxyElement{{UID: 4002, Element: e}}); err == nil {
		t.Fatal("AddProxy without a table succeeded")
	}
	if _, err := f.ReadProxy(); err != ErrNoTable {
		t.Fatalf("ReadProxy without a table: %v", err)
	}
	if err := f.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("a", MaxCommentName+5)
	if err := f.AddProxy([]ProxyElement{{UID: 4002, Element: e, Timeout: time.Minute, Name: long}, {UID: 4001, Element: e, Timeout: time.Minute}}); err != nil {
		t.Fatal(err)
	}
	if err := f.AddProxy([]ProxyElement{{UID: 4002, Element: e, Timeout: time.Hour, Name: "other.example"}}); err != nil {
		t.Fatal(err)
	}
	got, _ := f.ReadProxy()
	if len(got) != 2 || got[0].Timeout != time.Hour || got[0].Name != CommentFor(long) || !strings.HasPrefix(got[0].Name, `\`) {
		t.Fatalf("after a renewal: %v", got)
	}
	if s := got[0].String(); s != "4002 . "+e.String()+" (1h0m0s)" {
		t.Errorf("String: %q", s)
	}
	if ProxySetName(e) != "proxy4" || KernelSetName(SetID{Allowlist: "c"}.Name(), e) != "allow4" || KernelSetName(SetID{Allowlist: "c", V6: true}.Name(),
		ElementFor(config.TCP, netip.MustParsePrefix("2001:db8::/64"), 1, 2)) != "allow6r" {
		t.Error("kernel set names")
	}
	if err := f.ApplyFull(p); err != nil { // uid 4001 has no dns: proxy: its answer goes
		t.Fatal(err)
	}
	if got, _ := f.ReadProxy(); len(got) != 1 || got[0].UID != 4002 {
		t.Fatalf("after a full apply: %v", got)
	}
	if err := f.DeleteProxy([]ProxyElement{{UID: 4002, Element: e}, {UID: 9, Element: e}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.ReadProxy(); len(got) != 0 {
		t.Fatalf("after a deletion: %v", got)
	}
	f.RemoveTable()
	if err := f.DeleteProxy(nil); err == nil {
		t.Error("DeleteProxy without a table succeeded")
	}
}

// The unit keys and the cgroup map are compared as the adapter compares
// them, and a unit allowlist's settings through its chains.
func TestFakeUnitFindings(t *testing.T) {
	p := everyKindPlan(everyDenyLog[0], true)
	f := &Fake{}
	if err := f.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	q := everyKindPlan(everyDenyLog[0], true)
	nthOf(t, &q, SubjectUnit, 0).Subject.Unit = "other.service"
	audited := nthOf(t, &q, SubjectUnit, 1)
	audited.Audit = !audited.Audit
	q.Cgroups = q.Cgroups[:1]
	fs, _ := f.Verify(q)
	if kinds(fs) != "rules_differ "+unitDenyChain(audited.Subject.ID)+", users_differ unitids, users_differ unitchains" ||
		!strings.Contains(fs[1].Detail, `→ "batch batch.service", want "batch other.service"`) || fs[2].Detail != "0 cgroups missing, 1 not in the plan" {
		t.Errorf("findings %v", fs)
	}
}

// A rule changed in any field that decides what it matches reads back
// differently: the xor of a bitwise (`ct state & m == 0` turned into `!= m`),
// the register a cmp reads, a ct load's direction, a limit's `over`.
func TestSigSeesEveryField(t *testing.T) {
	base := func() []expr.Any {
		return []expr.Any{
			&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{6, 0, 0, 0}, Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
			&expr.Limit{Type: expr.LimitTypePkts, Rate: 5, Unit: expr.LimitTimeMinute, Burst: 5},
		}
	}
	for name, change := range map[string]func([]expr.Any){
		"xor":          func(es []expr.Any) { es[1].(*expr.Bitwise).Xor = []byte{6, 0, 0, 0} },
		"cmp register": func(es []expr.Any) { es[2].(*expr.Cmp).Register = 2 },
		"ct direction": func(es []expr.Any) { es[0].(*expr.Ct).Direction = 1 },
		"ct set":       func(es []expr.Any) { es[0].(*expr.Ct).SourceRegister = true },
		"limit over":   func(es []expr.Any) { es[3].(*expr.Limit).Over = true },
	} {
		es := base()
		change(es)
		if sig(es) == sig(base()) {
			t.Errorf("%s changed: the same signature %s", name, sig(es))
		}
	}
}
