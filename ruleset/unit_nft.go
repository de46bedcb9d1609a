package ruleset

import (
	"fmt"
	"strings"

	"github.com/egressd/egressd/config"
)

// The text of the unit part of the layout (unit_linux.go), for Plan.NFT.

// writeUnits writes the unit sets and, with unit allowlists, the unit chains.
func writeUnits(b *strings.Builder, p Plan, placed map[kernelSet][]keyed) {
	key := unitKeys(p)
	var cgroups, ids []string
	for _, cg := range p.Cgroups {
		cgroups = append(cgroups, fmt.Sprintf("%d : jump %s", cg.ID, unitChain(key[cg.Allowlist])))
	}
	for _, u := range p.Units {
		ids = append(ids, fmt.Sprintf("%s comment %q", unitKeyText(u.Key), u.Allowlist+" ("+u.Unit+")"))
	}
	fmt.Fprintf(b, "\tmap %s { # a restricted unit's current cgroup id -> its allowlist's chain\n\t\ttype cgroupsv2 : verdict\n", kUnitChains)
	if len(cgroups) > 0 {
		fmt.Fprintf(b, "\t\telements = { %s }\n", strings.Join(cgroups, ", "))
	}
	b.WriteString("\t}\n")
	writeSet(b, kUnitIDs, "unit keys, element comment = allowlist", []string{"type mark"}, ids)
	for _, ks := range unitKernelSets() {
		writeSet(b, ks.name(), "", ks.decl(), keyedText(ks, placed[ks]))
	}
	writeSet(b, kUDenied, "rejected packets per unit key", []string{"type mark", "flags dynamic"}, nil)
	writeSet(b, kUDenyLog, "per-unit log rate limit (a meter)", []string{"type mark", "flags dynamic"}, nil)
	for _, u := range p.Units {
		writeChain(b, unitChain(u.Key), "", unitRuleText(u))
		writeChain(b, unitDenyChain(u.Key), "", unitDenyRuleText(u, p.DenyLog))
	}
}

// unitKeyText is a unit key as nft prints a mark.
func unitKeyText(k uint32) string { return fmt.Sprintf("0x%08x", k) }

// unitLabelText is the conntrack label bits of unit key k (bits 64-95), as
// nft prints them; unitLabelMaskText is bits 64-95.
func unitLabelText(k uint32) string {
	var bits []string
	for i := 0; i < 32; i++ {
		// Label bytes 8-11 hold k in host order (unitLabel): on a
		// little-endian host bit i of k is label bit 64+i.
		if k&(1<<i) != 0 {
			bits = append(bits, fmt.Sprint(64+i))
		}
	}
	return strings.Join(bits, " | ")
}

func unitLabelMaskText() string { return "(bits 64-95)" }

// unitOutputRuleText, unitRuleText and unitDenyRuleText are the rules of
// unitOutputRules, unitRules and unitDenyRules, in order.
func unitOutputRuleText(p Plan) []string {
	if len(p.Units) == 0 {
		return nil
	}
	var out []string
	for l := 1; l <= UnitLevels; l++ {
		out = append(out, fmt.Sprintf("socket cgroupv2 level %d vmap @%s", l, kUnitChains))
	}
	return out
}

func unitRuleText(u UnitPlan) []string {
	deny, label := "goto "+unitDenyChain(u.Key), unitLabelText(u.Key)
	rules := []string{
		"ct state new ct status & confirmed == 0 ct label set " + label + " # label bits 64-95: the unit that opened the flow (key " + unitKeyText(u.Key) + ")",
		"meta nfproto ipv6 exthdr rt exists " + deny + " # IPV6_RTHDR: source routing",
		"meta nfproto ipv4 ip ihl != 5 " + deny + " # IP_OPTIONS: LSRR/SSRR",
		"meta l4proto tcp tcp flags & syn != 0 tcp option mptcp exists tcp option mptcp @16,16 set 0xf000 # MPTCP falls back to TCP",
		"ct state established,related ct direction original ct label & " + unitLabelMaskText() + " == " + label + " return",
		"ct state established,related ct direction reply ct label & " + unitLabelMaskText() + " != " + label + " fib saddr type local return",
		"ct state established,related ct direction reply fib daddr type local fib saddr type local return",
		"fib saddr type != local " + deny + " # IP_FREEBIND, IPV6_FREEBIND, IP_TRANSPARENT",
	}
	for _, ks := range unitKernelSets() {
		nfproto, daddr := "ipv4", "ip daddr"
		if ks.V6 {
			nfproto, daddr = "ipv6", "ip6 daddr"
		}
		rules = append(rules, fmt.Sprintf("meta nfproto %s %s . meta l4proto . %s . th dport @%s return", nfproto, unitKeyText(u.Key), daddr, ks.name()))
	}
	if u.DNS {
		for _, ks := range allKernelSets() {
			if !ks.DNS {
				continue
			}
			nfproto, daddr := "ipv4", "ip daddr"
			if ks.V6 {
				nfproto, daddr = "ipv6", "ip6 daddr"
			}
			rules = append(rules, fmt.Sprintf("meta nfproto %s meta l4proto . %s . th dport @%s return", nfproto, daddr, ks.name()))
		}
	}
	return append(rules, deny)
}

func unitDenyRuleText(u UnitPlan, dl config.DenyLog) []string {
	k := unitKeyText(u.Key)
	rules := []string{"update @" + kUDenied + " { " + k + " counter }"}
	if l := unitLogText(u, dl); l != "" {
		rules = append(rules, l)
	}
	if u.Audit {
		return append(rules, "return # mode: audit: on to the uid rule")
	}
	return append(rules, rejectText()...)
}

func unitLogText(u UnitPlan, dl config.DenyLog) string {
	prefix := UnitLogPrefix(dl.Prefix)
	if u.Audit {
		prefix = UnitAuditPrefix(dl.Prefix)
	}
	k := unitKeyText(u.Key)
	meter := fmt.Sprintf("update @%s { %s limit rate %d/%s burst %d packets } meta mark set %s ", kUDenyLog, k, dl.Rate.Count, unitText(dl.Rate.Unit), min(dl.Rate.Count, 1000), k)
	restore, note := "", " # the log carries the unit key as the mark; the packet is rejected next"
	if u.Audit {
		restore, note = " meta mark set meta mark", " # the log carries the unit key as the mark; the packet goes on with its own mark, saved before"
	}
	switch dl.Mode {
	case config.LogNFLOG:
		return meter + fmt.Sprintf("log prefix %q group %d", prefix, dl.Group) + restore + note
	case config.LogKernel:
		return meter + fmt.Sprintf("log prefix %q level warn flags skuid", prefix) + restore + note
	}
	return ""
}
