//go:build linux

package ruleset

import (
	"fmt"
	"sort"
	"strings"

	"github.com/egressd/egressd/internal/setdiff"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// maxDetails bounds the elements a finding lists.
const maxDetails = 10

// Verify reads the table back through netlink and compares it with the plan:
// table, chains and hooks, every rule in order (a reject without its log rule
// before it shows as rules_differ), every set's elements and the users map.
func (k *Netlink) Verify(p Plan) ([]Finding, error) {
	c, t, err := k.existing()
	if err == ErrNoTable {
		return []Finding{{Kind: "table_missing", Object: "inet " + TableName, Detail: "the table does not exist"}}, nil
	}
	if err != nil {
		return nil, err
	}
	var fs []Finding
	add := func(kind, obj, format string, a ...any) {
		fs = append(fs, Finding{Kind: kind, Object: obj, Detail: fmt.Sprintf(format, a...)})
	}

	// Expected chains and their rule signatures, built by the same code that applies them.
	want := map[string][]string{}
	out := outputChain()
	want[out.Name] = sigs(outputRules(out))
	restr := &nftables.Chain{Name: chainRestr, Table: table}
	want[restr.Name] = sigs(restrictedRules(restr))
	deny := &nftables.Chain{Name: chainDeny, Table: table}
	want[deny.Name] = sigs(denyRules(deny, p.DenyLog))

	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	have := map[string]*nftables.Chain{}
	for _, ch := range chains {
		if ch.Table.Name == TableName {
			have[ch.Name] = ch
		}
	}
	for _, name := range sortedKeys(want) {
		ch, ok := have[name]
		if !ok {
			add("chain_missing", name, "chain missing")
			continue
		}
		if name == out.Name && (ch.Hooknum == nil || *ch.Hooknum != *out.Hooknum || ch.Type != out.Type ||
			ch.Priority == nil || *ch.Priority != *out.Priority || (ch.Policy != nil && *ch.Policy != nftables.ChainPolicyAccept)) {
			add("chain_hook", name, "base chain is not type filter hook output priority filter policy accept")
		}
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return nil, fmt.Errorf("list rules of %s: %w", name, err)
		}
		got := make([]string, len(rules))
		for i, r := range rules {
			got[i] = sig(r.Exprs)
		}
		if d := diffRules(want[name], got); d != "" {
			add("rules_differ", name, "%s", d)
		}
	}
	for name := range have {
		if _, ok := want[name]; !ok {
			add("chain_extra", name, "chain not in the plan")
		}
	}

	kset, err := c.GetSets(t)
	if err != nil {
		return nil, fmt.Errorf("list sets: %w", err)
	}
	haveSet := map[string]bool{}
	for _, s := range kset {
		haveSet[s.Name] = true
	}
	structural := []string{kUsers, kOwners, kDNSUsers, kAudit, kDenied, kDenyLog}
	for _, ks := range allKernelSets() {
		structural = append(structural, ks.name())
	}
	for _, name := range structural {
		if !haveSet[name] {
			add("set_missing", name, "kernel set missing")
		}
	}

	kernelSets, err := k.ReadSets()
	if err != nil {
		return nil, err
	}
	for _, name := range sortedKeys(p.Sets) {
		got := kernelSets[name]
		missing, extra := setdiff.Of(got, p.Sets[name])
		if len(missing) > 0 {
			add("element_missing", name, "%d missing: %s", len(missing), elementList(missing))
		}
		if len(extra) > 0 {
			add("element_extra", name, "%d not in the plan: %s", len(extra), elementList(extra))
		}
	}
	for _, name := range sortedKeys(kernelSets) {
		if _, ok := p.Sets[name]; !ok {
			add("set_extra", name, "%d elements not in the plan: %s", len(kernelSets[name]), elementList(kernelSets[name]))
		}
	}
	gotUsers, err := readUsers(c, t)
	if err != nil {
		add("users_differ", kUsers, "cannot read the users set: %v", err)
	} else {
		wantUsers := map[uint32]string{}
		for _, ch := range p.Chains {
			wantUsers[ch.UID] = ch.Allowlist
		}
		var diffs []string
		for uid, name := range wantUsers {
			if got, ok := gotUsers[uid]; !ok || got != name {
				diffs = append(diffs, fmt.Sprintf("uid %d → %q, want %q", uid, got, name))
			}
		}
		for uid, name := range gotUsers {
			if _, ok := wantUsers[uid]; !ok {
				diffs = append(diffs, fmt.Sprintf("uid %d → %q not in the plan", uid, name))
			}
		}
		sort.Strings(diffs)
		if len(diffs) > 0 {
			add("users_differ", kUsers, "%s", strings.Join(diffs, "; "))
		}
	}
	for _, us := range []struct {
		name string
		want func(ChainPlan) bool
	}{{kOwners, func(ChainPlan) bool { return true }}, {kDNSUsers, func(ch ChainPlan) bool { return ch.DNS }},
		{kAudit, func(ch ChainPlan) bool { return ch.Audit }}} {
		if !haveSet[us.name] {
			continue
		}
		got, err := readUIDSet(c, t, us.name)
		if err != nil {
			add("users_differ", us.name, "cannot read: %v", err)
			continue
		}
		want := map[uint32]bool{}
		for _, ch := range p.Chains {
			if us.want(ch) {
				want[ch.UID] = true
			}
		}
		var diffs []string
		for uid := range want {
			if !got[uid] {
				diffs = append(diffs, fmt.Sprintf("uid %d missing", uid))
			}
		}
		for uid := range got {
			if !want[uid] {
				diffs = append(diffs, fmt.Sprintf("uid %d not in the plan", uid))
			}
		}
		sort.Strings(diffs)
		if len(diffs) > 0 {
			add("users_differ", us.name, "%s", strings.Join(diffs, "; "))
		}
	}
	return fs, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func elementList(es []Element) string {
	var parts []string
	for i, e := range es {
		if i == maxDetails {
			parts = append(parts, fmt.Sprintf("and %d more", len(es)-maxDetails))
			break
		}
		parts = append(parts, e.String())
	}
	return strings.Join(parts, ", ")
}

func diffRules(want, got []string) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d rules, want %d%s", len(got), len(want), firstDiff(want, got))
	}
	return strings.TrimPrefix(firstDiff(want, got), "; ")
}

func firstDiff(want, got []string) string {
	for i := range want {
		if i >= len(got) {
			return fmt.Sprintf("; rule %d missing (%s)", i+1, want[i])
		}
		if want[i] != got[i] {
			return fmt.Sprintf("; rule %d is %s, want %s", i+1, got[i], want[i])
		}
	}
	if len(got) > len(want) {
		return fmt.Sprintf("; extra rule %d (%s)", len(want)+1, got[len(want)])
	}
	return ""
}

func sigs(rs []*nftables.Rule) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = sig(r.Exprs)
	}
	return out
}

// sig is a rule's shape: every expression with the fields that decide what
// it does, without counters' values or set IDs.
func sig(es []expr.Any) string {
	var b strings.Builder
	for _, e := range es {
		switch v := e.(type) {
		case *expr.Counter:
			b.WriteString("counter ")
		case *expr.Lookup:
			fmt.Fprintf(&b, "lookup(%s,r%d,%v) ", v.SetName, normReg(v.SourceRegister), v.Invert)
		case *expr.Verdict:
			fmt.Fprintf(&b, "verdict(%d,%s) ", v.Kind, v.Chain)
		case *expr.Log:
			fmt.Fprintf(&b, "log(g%d,l%d,%q) ", v.Group, v.Level, strings.TrimRight(string(v.Data), "\x00"))
		case *expr.Limit:
			fmt.Fprintf(&b, "limit(%d/%d) ", v.Rate, v.Unit)
		case *expr.Reject:
			fmt.Fprintf(&b, "reject(%d,%d) ", v.Type, v.Code)
		case *expr.Meta:
			fmt.Fprintf(&b, "meta(%d,r%d) ", v.Key, normReg(v.Register))
		case *expr.Cmp:
			fmt.Fprintf(&b, "cmp(%d,%x) ", v.Op, v.Data)
		case *expr.Payload:
			fmt.Fprintf(&b, "payload(%d,%d,%d) ", v.Base, v.Offset, v.Len)
		case *expr.Ct:
			fmt.Fprintf(&b, "ct(%d) ", v.Key)
		case *expr.Bitwise:
			fmt.Fprintf(&b, "bitwise(%x) ", v.Mask)
		case *expr.Fib:
			fmt.Fprintf(&b, "fib(%v,%v,%v) ", v.ResultADDRTYPE, v.FlagSADDR, v.FlagDADDR)
		case *expr.Exthdr:
			fmt.Fprintf(&b, "exthdr(%d,%d,%d,%d,%d,%v) ", v.Op, v.Type, v.Offset, v.Len, v.Flags, v.SourceRegister != 0)
		case *expr.Immediate:
			fmt.Fprintf(&b, "immediate(%x) ", v.Data)
		case *expr.Dynset:
			fmt.Fprintf(&b, "dynset(%s,%d,%s) ", v.SetName, v.Operation, sig(v.Exprs))
		default:
			fmt.Fprintf(&b, "%T ", e)
		}
	}
	return strings.TrimSpace(b.String())
}

// normReg names a register the way the kernel dumps it: a 32-bit register
// that starts a 16-byte one (NFT_REG32_04 is NFT_REG_2) under the 16-byte name.
func normReg(r uint32) uint32 {
	if r >= 8 && (r-8)%4 == 0 {
		return 1 + (r-8)/4
	}
	return r
}
