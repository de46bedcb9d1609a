//go:build linux

package ruleset

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

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

	// The plan's objects (an inconsistent plan's missing elements are
	// reported by elementFindings below) and the kernel's, in the same
	// form: chains with their hooks and the signatures of their rules.
	wt, _ := layout(p, nil)
	have, err := kernelChains(c, t)
	if err != nil {
		return nil, err
	}
	fs = append(fs, diffChains(wt.Chains, have)...)

	kset, err := c.GetSets(t)
	if err != nil {
		return nil, fmt.Errorf("list sets: %w", err)
	}
	haveSet := map[string]bool{}
	for _, s := range kset {
		haveSet[s.Name] = true
	}
	for _, s := range wt.Sets {
		if !haveSet[s.Name] {
			add("set_missing", s.Name, "kernel set missing")
		}
	}

	kernelSets, err := k.ReadSets()
	if err != nil {
		return nil, err
	}
	fs = append(fs, elementFindings(p, kernelSets, time.Now())...)
	gotUsers, err := readUsers(c, t)
	if err != nil {
		add("users_differ", kUsers, "cannot read the users set: %v", err)
	} else {
		fs = append(fs, usersFindings(p, gotUsers)...)
	}
	for _, name := range []string{kOwners, kOpeners, kDNSUsers, kProxyUsers, kAudit} {
		if !haveSet[name] {
			continue
		}
		got, err := readUIDSet(c, t, name)
		if err != nil {
			add("users_differ", name, "cannot read: %v", err)
			continue
		}
		fs = append(fs, uidSetFindings(name, p, got)...)
	}
	return append(fs, unitFindings(c, t, p)...), nil
}

// kernelChain is a chain as the kernel holds it: its declaration and its
// rules' signatures (sig).
type kernelChain struct {
	ch    *nftables.Chain
	rules []string
}

// kernelChains reads the table's chains and their rules.
func kernelChains(c *nftables.Conn, t *nftables.Table) (map[string]kernelChain, error) {
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	out := map[string]kernelChain{}
	for _, ch := range chains {
		if ch.Table.Name != TableName {
			continue
		}
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return nil, fmt.Errorf("list rules of %s: %w", ch.Name, err)
		}
		got := make([]string, len(rules))
		for i, r := range rules {
			got[i] = sig(r.Exprs)
		}
		out[ch.Name] = kernelChain{ch: ch, rules: got}
	}
	return out, nil
}

// diffChains compares the layout's chains with the kernel's: chain_missing,
// chain_hook, rules_differ, chain_extra. A rule is compared by its lowering.
func diffChains(want []Chain, have map[string]kernelChain) []Finding {
	var fs []Finding
	add := func(kind, obj, format string, a ...any) {
		fs = append(fs, Finding{Kind: kind, Object: obj, Detail: fmt.Sprintf(format, a...)})
	}
	wanted := map[string]bool{}
	sorted := append([]Chain(nil), want...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	for _, w := range sorted {
		wanted[w.Name] = true
		h, ok := have[w.Name]
		if !ok {
			add("chain_missing", w.Name, "chain missing")
			continue
		}
		if w.Hook != nil {
			k, ch := w.kernel(), h.ch
			if ch.Hooknum == nil || *ch.Hooknum != *k.Hooknum || ch.Type != k.Type ||
				ch.Priority == nil || *ch.Priority != *k.Priority || (ch.Policy != nil && *ch.Policy != nftables.ChainPolicyAccept) {
				add("chain_hook", w.Name, "base chain is not %s", strings.TrimSuffix(strings.ReplaceAll(w.Hook.Text(), ";", ""), " "))
			}
		}
		ws := make([]string, len(w.Rules))
		for i, r := range w.Rules {
			ws[i] = sig(r.Exprs())
		}
		if d := diffRules(ws, h.rules); d != "" {
			add("rules_differ", w.Name, "%s", d)
		}
	}
	for _, name := range sortedKeys(have) {
		if !wanted[name] {
			add("chain_extra", name, "chain not in the plan")
		}
	}
	return fs
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
		case *expr.Redir:
			fmt.Fprintf(&b, "redir(r%d,%d) ", normReg(v.RegisterProtoMin), v.Flags)
		case *expr.Byteorder:
			fmt.Fprintf(&b, "byteorder(r%d,r%d,%d,%d,%d) ", normReg(v.SourceRegister), normReg(v.DestRegister), v.Op, v.Len, v.Size)
		case *expr.Socket:
			fmt.Fprintf(&b, "socket(%d,%d,r%d) ", v.Key, v.Level, normReg(v.Register))
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
