package ruleset

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/egressd/egressd/internal/setdiff"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// The comparisons of Verify that need no netlink, shared by the netlink
// adapter (verify_linux.go) and the fake kernel, so that both report a
// difference with the same kind, object and detail.

// maxDetails bounds the elements a finding lists.
const maxDetails = 10

// ExpirySlack is how close to the end of its lifetime a plan's element may
// be missing from the kernel without being drift: the kernel runs its
// timeout out by itself, moments before the daemon drops it from the plan
// (or while the refresh that renews it is in flight).
const ExpirySlack = 2 * time.Second

// elementFindings compares the plan's sets with the elements a kernel holds
// (ReadSets's form) at now: element_missing, element_extra, set_extra.
func elementFindings(p Plan, have map[string][]Element, now time.Time) []Finding {
	var fs []Finding
	add := func(kind, obj, format string, a ...any) {
		fs = append(fs, Finding{Kind: kind, Object: obj, Detail: fmt.Sprintf(format, a...)})
	}
	for _, name := range sortedKeys(p.Sets) {
		missing, extra := setdiff.Of(have[name], p.Sets[name])
		if us := p.Until[name]; us != nil && len(missing) > 0 {
			ending := map[Element]bool{}
			for i, e := range p.Sets[name] {
				if !us[i].IsZero() && us[i].Before(now.Add(ExpirySlack)) {
					ending[e] = true
				}
			}
			kept := missing[:0]
			for _, e := range missing {
				if !ending[e] {
					kept = append(kept, e)
				}
			}
			missing = kept
		}
		if len(missing) > 0 {
			add("element_missing", name, "%d missing: %s", len(missing), elementList(missing))
		}
		if len(extra) > 0 {
			add("element_extra", name, "%d not in the plan: %s", len(extra), elementList(extra))
		}
	}
	for _, name := range sortedKeys(have) {
		if _, ok := p.Sets[name]; !ok && len(have[name]) > 0 {
			add("set_extra", name, "%d elements not in the plan: %s", len(have[name]), elementList(have[name]))
		}
	}
	return fs
}

// usersFindings compares the plan's users with the users set (uid →
// allowlist).
func usersFindings(p Plan, got map[uint32]string) []Finding {
	return subjectListFindings(p, SubjectUser, got)
}

// subjectListFindings compares the plan's subjects of kind k with the set
// that lists them (users: uid → allowlist; unitids: unit key → "ALLOWLIST
// UNIT"), as read back: id → element comment.
func subjectListFindings(p Plan, k SubjectKind, got map[uint32]string) []Finding {
	object, label := kUsers, "uid"
	if k == SubjectUnit {
		object, label = kUnitIDs, "unit key"
	}
	want := map[uint32]string{}
	for _, a := range p.Of(k) {
		want[a.Subject.ID] = listedAs(a)
	}
	var diffs []string
	for id, name := range want {
		if g, ok := got[id]; !ok || g != name {
			diffs = append(diffs, fmt.Sprintf("%s %d → %q, want %q", label, id, g, name))
		}
	}
	for id, name := range got {
		if _, ok := want[id]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s %d → %q not in the plan", label, id, name))
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	sort.Strings(diffs)
	return []Finding{{Kind: "users_differ", Object: object, Detail: strings.Join(diffs, "; ")}}
}

// listedAs is the comment of an allowlist's subject in the set that lists
// its kind: the allowlist (users), "ALLOWLIST UNIT" (unitids).
func listedAs(a AllowlistPlan) string {
	if a.Subject.Kind == SubjectUnit {
		return a.Allowlist + " " + a.Subject.Unit
	}
	return a.Allowlist
}

// uidSetMember says which of the plan's users a uid set holds.
func uidSetMember(name string) func(AllowlistPlan) bool {
	switch name {
	case kDNSUsers:
		return func(ch AllowlistPlan) bool { return ch.DNS }
	case kAudit:
		return func(ch AllowlistPlan) bool { return ch.Audit }
	case kProxyUsers:
		return func(ch AllowlistPlan) bool { return ch.Proxy }
	case kListenMarks:
		return func(ch AllowlistPlan) bool { return ch.Listen }
	}
	return func(AllowlistPlan) bool { return true } // owners
}

// uidSetFindings compares one uid set (owners, dnsusers, audit) with the plan.
func uidSetFindings(name string, p Plan, got map[uint32]bool) []Finding {
	member := uidSetMember(name)
	want := map[uint32]bool{}
	for _, ch := range p.Of(SubjectUser) {
		if member(ch) {
			want[ch.Subject.ID] = true
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
	if len(diffs) == 0 {
		return nil
	}
	sort.Strings(diffs)
	return []Finding{{Kind: "users_differ", Object: name, Detail: strings.Join(diffs, "; ")}}
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

// tableFlagDormant is NFT_TABLE_F_DORMANT: the table's base chains are
// unregistered from their hooks (`nft add table inet egressd { flags
// dormant; }`), every object still reads back as before.
const tableFlagDormant = 0x1

// setDeclFindings compares the layout's set declarations with the kernel's:
// set_missing, and set_differs for a set declared otherwise. Elements are
// read back by their start keys (and, for element sets, their ends); a set
// re-declared with intervals, a default timeout or another key reads back
// the same elements while the kernel matches others (owners as intervals
// from (u . u) matches uid u with any later mark).
func setDeclFindings(want []Set, have []*nftables.Set) []Finding {
	got := make(map[string]*nftables.Set, len(have))
	for _, s := range have {
		got[s.Name] = s
	}
	var fs []Finding
	for _, w := range want {
		h, ok := got[w.Name]
		switch {
		case !ok:
			fs = append(fs, Finding{Kind: "set_missing", Object: w.Name, Detail: "kernel set missing"})
		case setDecl(h) != setDecl(w.Kernel):
			fs = append(fs, Finding{Kind: "set_differs", Object: w.Name, Detail: fmt.Sprintf("declared %s, want %s", setDecl(h), setDecl(w.Kernel))})
		}
	}
	return fs
}

// setDecl is what of a set's declaration decides what it matches: its
// flags, default timeout, key and data types (not its size: the kernel
// gives a dynamic set one, and a full set fails egressd's additions, which
// a full apply reports). The netlink library
// reads a verdict map's data type into KeyType (and loses the key's):
// such a map is compared by its flags and its data. NFT_SET_CONCAT
// chooses the kernel's backend for concatenated intervals only (nft sets
// it on no other set).
func setDecl(s *nftables.Set) string {
	flags := []struct {
		on   bool
		name string
	}{{s.Constant, "constant"}, {s.Anonymous, "anonymous"}, {s.Interval, "interval"}, {s.IsMap, "map"},
		{s.HasTimeout, "timeout"}, {s.Dynamic, "dynamic"}, {s.Interval && s.Concatenation, "concat"}}
	var b strings.Builder
	b.WriteString("flags")
	for _, f := range flags {
		if f.on {
			b.WriteString(" " + f.name)
		}
	}
	if s.Timeout != 0 {
		fmt.Fprintf(&b, ", timeout %v", s.Timeout)
	}
	if s.KeyType.GetNFTMagic() == nftables.TypeVerdict.GetNFTMagic() || s.DataType.GetNFTMagic() == nftables.TypeVerdict.GetNFTMagic() {
		return b.String() + ", data verdict"
	}
	fmt.Fprintf(&b, ", key %#x/%d", s.KeyType.GetNFTMagic(), s.KeyType.Bytes)
	if s.IsMap {
		fmt.Fprintf(&b, ", data %#x/%d", s.DataType.GetNFTMagic(), s.DataType.Bytes)
	}
	return b.String()
}

// kernelChain is a chain as the kernel holds it: its declaration and its
// rules' signatures (sig).
type kernelChain struct {
	ch    *nftables.Chain
	rules []string
}

// kernelForm is the table's chains in the form Verify reads the kernel's:
// the fake kernel holds its chains so.
func (t Table) kernelForm() map[string]kernelChain {
	out := make(map[string]kernelChain, len(t.Chains))
	for _, ch := range t.Chains {
		rules := make([]string, len(ch.Rules))
		for i, r := range ch.Rules {
			rules[i] = sig(r.Exprs())
		}
		out[ch.Name] = kernelChain{ch: ch.kernel(), rules: rules}
	}
	return out
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

// sig is a rule's shape: every expression with every field that decides
// what it does (registers, xor, directions, flags), without counters'
// values or set IDs. A field left out is a change Verify cannot see: with
// the xor of `ct state established,related` in the owner check turned to
// the mask, every new flow of a protected user passed, and the rule read
// back as planned (TestRedteamVerifyRuleFieldDrift).
func sig(es []expr.Any) string {
	var b strings.Builder
	r := normReg
	for _, e := range es {
		switch v := e.(type) {
		case *expr.Counter:
			b.WriteString("counter ")
		case *expr.Lookup:
			fmt.Fprintf(&b, "lookup(%s,r%d,%v", v.SetName, r(v.SourceRegister), v.Invert)
			if v.IsDestRegSet {
				fmt.Fprintf(&b, ",d%d", r(v.DestRegister))
			}
			b.WriteString(") ")
		case *expr.Verdict:
			fmt.Fprintf(&b, "verdict(%d,%s) ", v.Kind, v.Chain)
		case *expr.Log:
			fmt.Fprintf(&b, "log(g%d,l%d,%q,f%d,k%d,s%d,q%d) ", v.Group, v.Level, strings.TrimRight(string(v.Data), "\x00"), v.Flags, v.Key, v.Snaplen, v.QThreshold)
		case *expr.Limit:
			fmt.Fprintf(&b, "limit(%d/%d,t%d,b%d,%v) ", v.Rate, v.Unit, v.Type, v.Burst, v.Over)
		case *expr.Reject:
			fmt.Fprintf(&b, "reject(%d,%d) ", v.Type, v.Code)
		case *expr.Meta:
			fmt.Fprintf(&b, "meta(%d,r%d,%v) ", v.Key, r(v.Register), v.SourceRegister)
		case *expr.Cmp:
			fmt.Fprintf(&b, "cmp(%d,r%d,%x) ", v.Op, r(v.Register), v.Data)
		case *expr.Payload:
			fmt.Fprintf(&b, "payload(%d,%d,%d,o%d,d%d,s%d,c%d/%d/%d) ", v.Base, v.Offset, v.Len, v.OperationType,
				r(v.DestRegister), r(v.SourceRegister), v.CsumType, v.CsumOffset, v.CsumFlags)
		case *expr.Ct:
			fmt.Fprintf(&b, "ct(%d,r%d,%v,%d) ", v.Key, r(v.Register), v.SourceRegister, v.Direction)
		case *expr.Bitwise:
			fmt.Fprintf(&b, "bitwise(r%d,r%d,%d,%x,%x) ", r(v.SourceRegister), r(v.DestRegister), v.Len, v.Mask, v.Xor)
		case *expr.Fib:
			fmt.Fprintf(&b, "fib(r%d,%v,%v,%v,%v,%v,%v,%v,%v,%v) ", r(v.Register), v.ResultOIF, v.ResultOIFNAME, v.ResultADDRTYPE,
				v.FlagSADDR, v.FlagDADDR, v.FlagMARK, v.FlagIIF, v.FlagOIF, v.FlagPRESENT)
		case *expr.Exthdr:
			fmt.Fprintf(&b, "exthdr(%d,%d,%d,%d,%d,d%d,s%d) ", v.Op, v.Type, v.Offset, v.Len, v.Flags, r(v.DestRegister), r(v.SourceRegister))
		case *expr.Immediate:
			fmt.Fprintf(&b, "immediate(r%d,%x) ", r(v.Register), v.Data)
		case *expr.Redir:
			max := v.RegisterProtoMax // none: the range is the one port
			if max == 0 {
				max = v.RegisterProtoMin
			}
			fmt.Fprintf(&b, "redir(r%d,r%d,%d) ", r(v.RegisterProtoMin), r(max), v.Flags)
		case *expr.Byteorder:
			fmt.Fprintf(&b, "byteorder(r%d,r%d,%d,%d,%d) ", r(v.SourceRegister), r(v.DestRegister), v.Op, v.Len, v.Size)
		case *expr.Socket:
			fmt.Fprintf(&b, "socket(%d,%d,r%d) ", v.Key, v.Level, r(v.Register))
		case *expr.Dynset:
			fmt.Fprintf(&b, "dynset(%s,%d,r%d,r%d,%v,%v,%s) ", v.SetName, v.Operation, r(v.SrcRegKey), r(v.SrcRegData), v.Timeout, v.Invert, sig(v.Exprs))
		case *expr.Opaque: // undecoded (third_party/nftables/PATCHES.md)
			fmt.Fprintf(&b, "%s(%x) ", v.Name, v.Data)
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

// unitSetFindings compares the unit sets with the plan: the unit keys
// (unitids: key → "ALLOWLIST UNIT") and, when read (cgsRead), the cgroup
// map. Whether each unit allowlist resolves its DNS and is audited is in its
// chains' rules (diffChains).
func unitSetFindings(p Plan, got map[uint32]string, cgs []Cgroup, cgsRead bool) []Finding {
	fs := subjectListFindings(p, SubjectUnit, got)
	if !cgsRead {
		return fs
	}
	if add, del := CgroupDelta(cgs, p.Cgroups); len(add)+len(del) > 0 {
		fs = append(fs, Finding{Kind: "users_differ", Object: kUnitChains, Detail: fmt.Sprintf("%d cgroups missing, %d not in the plan", len(add), len(del))})
	}
	return fs
}
