package ruleset

import (
	"fmt"
	"strings"

	"github.com/egressd/egressd/config"
)

// The text of the unit part of the layout (unit_linux.go), for Plan.NFT.

// writeUnits writes the unit sets and, with unit allowlists, the unit chains.
func writeUnits(b *strings.Builder, p Plan, placed map[kernelSet][]keyed) {
	key := uids(p)
	var keys, ids, owners, dns, audit []string
	for _, cg := range p.Cgroups {
		keys = append(keys, fmt.Sprintf("%d : %d", cg.ID, key[cg.Allowlist]))
	}
	for _, u := range p.Units {
		ids = append(ids, fmt.Sprintf("%d comment %q", u.Key, u.Allowlist+" ("+u.Unit+")"))
		owners = append(owners, fmt.Sprintf("%d . %d", u.Key, u.Key))
		if u.DNS {
			dns = append(dns, fmt.Sprint(u.Key))
		}
		if u.Audit {
			audit = append(audit, fmt.Sprint(u.Key))
		}
	}
	fmt.Fprintf(b, "\tmap %s { # a restricted unit's current cgroup id -> its unit key\n\t\ttype cgroupsv2 : mark\n", kUnitKeys)
	if len(keys) > 0 {
		fmt.Fprintf(b, "\t\telements = { %s }\n", strings.Join(keys, ", "))
	}
	b.WriteString("\t}\n")
	writeSet(b, kUnitIDs, "unit keys, element comment = allowlist", []string{"type mark"}, ids)
	writeSet(b, kUnitOwners, "(k . k) for every unit key", []string{"type mark . mark"}, owners)
	writeSet(b, kUnitDNS, "unit allowlists with dns: resolvers", []string{"type mark"}, dns)
	writeSet(b, kUnitAudit, "unit allowlists with mode: audit", []string{"type mark"}, audit)
	for _, ks := range unitKernelSets() {
		writeSet(b, ks.name(), "", ks.decl(), keyedText(ks, placed[ks]))
	}
	writeSet(b, kUDenied, "rejected packets per unit key", []string{"type mark", "flags dynamic"}, nil)
	writeSet(b, kUDenyLog, "per-unit log rate limit (a meter)", []string{"type mark", "flags dynamic"}, nil)
	if len(p.Units) == 0 {
		return
	}
	for l := 1; l <= UnitLevels; l++ {
		writeChain(b, unitChain(l), "", unitRuleText(l))
		writeChain(b, unitDenyChain(l), "", unitDenyRuleText(l, p.DenyLog))
	}
}

// unitOutputRuleText, unitRuleText and unitDenyRuleText are the rules of
// unitOutputRules, unitRules and unitDenyRules, in order.
func unitOutputRuleText(p Plan) []string {
	if len(p.Units) == 0 {
		return nil
	}
	var out []string
	for l := 1; l <= UnitLevels; l++ {
		out = append(out, fmt.Sprintf("socket cgroupv2 level %d @%s jump %s", l, kUnitKeys, unitChain(l)))
	}
	return out
}

func unitKeyText(level int) string {
	return fmt.Sprintf("socket cgroupv2 level %d map @%s", level, kUnitKeys)
}

func unitRuleText(level int) []string {
	k, deny := unitKeyText(level), "goto "+unitDenyChain(level)
	rules := []string{
		"ct state new ct status & confirmed == 0 ct label set " + k + " << 64 # label bits 64-95: the unit that opened the flow",
		"meta nfproto ipv6 exthdr rt exists " + deny + " # IPV6_RTHDR: source routing",
		"meta nfproto ipv4 ip ihl != 5 " + deny + " # IP_OPTIONS: LSRR/SSRR",
		"meta l4proto tcp tcp flags & syn != 0 tcp option mptcp exists tcp option mptcp @16,16 set 0xf000 # MPTCP falls back to TCP",
		"ct state established,related ct direction original ct label[64:96] . " + k + " @" + kUnitOwners + " return",
		"ct state established,related ct direction reply ct label[64:96] . " + k + " != @" + kUnitOwners + " fib saddr type local return",
		"ct state established,related ct direction reply fib daddr type local fib saddr type local return",
		"fib saddr type != local " + deny + " # IP_FREEBIND, IPV6_FREEBIND, IP_TRANSPARENT",
	}
	for _, ks := range unitKernelSets() {
		nfproto, daddr := "ipv4", "ip daddr"
		if ks.V6 {
			nfproto, daddr = "ipv6", "ip6 daddr"
		}
		rules = append(rules, fmt.Sprintf("meta nfproto %s %s . meta l4proto . %s . th dport @%s return", nfproto, k, daddr, ks.name()))
	}
	for _, ks := range allKernelSets() {
		if !ks.DNS {
			continue
		}
		nfproto, daddr := "ipv4", "ip daddr"
		if ks.V6 {
			nfproto, daddr = "ipv6", "ip6 daddr"
		}
		rules = append(rules, fmt.Sprintf("%s @%s meta nfproto %s meta l4proto . %s . th dport @%s return", k, kUnitDNS, nfproto, daddr, ks.name()))
	}
	return append(rules, deny)
}

func unitDenyRuleText(level int, dl config.DenyLog) []string {
	k := unitKeyText(level)
	rules := []string{k + " update @" + kUDenied + " { that key counter }"}
	if l := unitLogText(dl, false); l != "" {
		rules = append(rules, k+" != @"+kUnitAudit+" "+l, k+" @"+kUnitAudit+" "+unitLogText(dl, true))
	}
	return append(append(rules, k+" @"+kUnitAudit+" return # mode: audit: on to the uid rule"), rejectText()...)
}

func unitLogText(dl config.DenyLog, audit bool) string {
	prefix := UnitLogPrefix(dl.Prefix)
	if audit {
		prefix = UnitAuditPrefix(dl.Prefix)
	}
	meter := fmt.Sprintf("update @%s { that key limit rate %d/%s burst %d packets } meta mark set that key ", kUDenyLog, dl.Rate.Count, unitText(dl.Rate.Unit), min(dl.Rate.Count, 1000))
	switch dl.Mode {
	case config.LogNFLOG:
		return meter + fmt.Sprintf("log prefix %q group %d meta mark set (the mark before) # the log carries the unit key as the mark", prefix, dl.Group)
	case config.LogKernel:
		return meter + fmt.Sprintf("log prefix %q level warn flags skuid meta mark set (the mark before) # MARK= is the unit key", prefix)
	}
	return ""
}
