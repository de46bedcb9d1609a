package ruleset

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/setdiff"
)

// The text rendering of plans and deltas, in nft's syntax, for people
// (`egressd plan`, the fake kernel's Dump). It describes the table the
// netlink adapter builds (kernel_linux.go); nft_linux_test.go checks that
// every chain has the same rules, in the same order, looking up the same
// sets with the same verdicts, so the two cannot drift apart. It is not fed
// to nft.

// NFT renders the plan as the table inet egressd the kernel adapter builds
// for it: every set with its elements (keyed by uid, as the kernel holds
// them), then the chains with their rules. A plan whose sets cannot be
// placed (a set of an allowlist without a uid) renders with a comment
// saying so instead of those elements.
func (p Plan) NFT() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", TableName)
	placed, err := placeElements(p.Sets, p.Until, uids(p))
	if err != nil {
		fmt.Fprintf(&b, "\t# cannot place the elements: %v\n", err)
	}
	users := sortedChains(p.Chains)
	uidSet := func(name, comment string, keep func(ChainPlan) bool, elem func(ChainPlan) string) {
		var es []string
		for _, ch := range users {
			if keep(ch) {
				es = append(es, elem(ch))
			}
		}
		writeSet(&b, name, comment, []string{"type uid"}, es)
	}
	all := func(ChainPlan) bool { return true }
	uid := func(ch ChainPlan) string { return fmt.Sprint(ch.UID) }
	uidSet(kUsers, "protected uids, element comment = allowlist", all, func(ch ChainPlan) string { return fmt.Sprintf("%d comment %q", ch.UID, ch.Allowlist) })
	writeSet(&b, kOwners, "(u . u) for every protected uid", []string{"type mark . uid"}, func() []string {
		var es []string
		for _, ch := range users {
			es = append(es, fmt.Sprintf("%d . %d", ch.UID, ch.UID))
		}
		return es
	}())
	uidSet(kDNSUsers, "dns: resolvers", func(ch ChainPlan) bool { return ch.DNS }, uid)
	uidSet(kProxyUsers, "dns: proxy", func(ch ChainPlan) bool { return ch.Proxy }, uid)
	uidSet(kAudit, "mode: audit", func(ch ChainPlan) bool { return ch.Audit }, uid)
	for _, ks := range allKernelSets() {
		writeSet(&b, ks.name(), "", ks.decl(), keyedText(ks, placed[ks]))
	}
	for _, ks := range proxyKernelSets() {
		writeSet(&b, ks.name(), "what the DNS proxy answered: written as it answers, each element for TTL + linger", ks.decl(), nil)
	}
	writeSet(&b, kDenied, "rejected packets per uid", []string{"type uid", "flags dynamic"}, nil)
	writeSet(&b, kDenyLog, "per-uid log rate limit (a meter)", []string{"type uid", "flags dynamic"}, nil)
	writeUnits(&b, p, placed)
	if p.HasProxy() {
		writeChain(&b, chainZone, "type filter hook output priority raw; policy accept;", zoneRuleText(p.ProxyPort))
		writeChain(&b, chainNAT, "type nat hook output priority dstnat; policy accept;", natRuleText(p.ProxyPort))
	}
	writeChain(&b, chainIn, "type filter hook input priority filter; policy accept;", inputRuleText(p.ProxyPort, p.HasProxy()))
	writeChain(&b, chainOut, "type filter hook output priority filter; policy accept;", append(unitOutputRuleText(p), outputRuleText()...))
	writeChain(&b, chainRestr, "", restrictedRuleText(p.ProxyPort))
	writeChain(&b, chainDeny, "", denyRuleText(p.DenyLog))
	b.WriteString("}\n")
	return b.String()
}

// NFT renders the delta as the nft commands of its one transaction: the
// deletions, then the additions, per kernel set, as ApplyDelta sends them.
// p is the plan the delta leads to (it maps allowlists to uids).
func (d Delta) NFT(p Plan) string {
	adds, dels := map[string][]Element{}, map[string][]Element{}
	for name, sd := range d {
		adds[name], dels[name] = sd.Add, sd.Del
	}
	var b strings.Builder
	for _, op := range []struct {
		verb string
		sets map[string][]Element
	}{{"delete", dels}, {"add", adds}} {
		placed, err := placeElements(op.sets, nil, uids(p))
		if err != nil {
			fmt.Fprintf(&b, "# cannot place the elements to %s: %v\n", op.verb, err)
			continue
		}
		for _, ks := range everyKernelSet() {
			if es := keyedText(ks, placed[ks]); len(es) > 0 {
				writeElements(&b, op.verb, ks.name(), es)
			}
		}
	}
	return b.String()
}

// UsersNFT renders a change of the protected users (uid → allowlist) as nft
// commands on the users set.
func UsersNFT(add, del map[uint32]string) string {
	var b strings.Builder
	for _, op := range []struct {
		verb string
		m    map[uint32]string
	}{{"delete", del}, {"add", add}} {
		uids := make([]uint32, 0, len(op.m))
		for u := range op.m {
			uids = append(uids, u)
		}
		sort.Slice(uids, func(i, j int) bool { return uids[i] < uids[j] })
		var es []string
		for _, u := range uids {
			es = append(es, fmt.Sprintf("%d comment %q", u, op.m[u]))
		}
		if len(es) > 0 {
			writeElements(&b, op.verb, kUsers, es)
		}
	}
	return b.String()
}

func writeElements(b *strings.Builder, verb, set string, es []string) {
	fmt.Fprintf(b, "%s element inet %s %s { %s }\n", verb, TableName, set, strings.Join(es, ", "))
}

func sortedChains(chs []ChainPlan) []ChainPlan {
	out := append([]ChainPlan(nil), chs...)
	sort.Slice(out, func(i, j int) bool { return out[i].UID < out[j].UID })
	return out
}

func writeSet(b *strings.Builder, name, comment string, decl, elements []string) {
	fmt.Fprintf(b, "\tset %s {", name)
	if comment != "" {
		fmt.Fprintf(b, " # %s", comment)
	}
	b.WriteString("\n")
	for _, d := range decl {
		fmt.Fprintf(b, "\t\t%s\n", d)
	}
	if len(elements) > 0 {
		b.WriteString("\t\telements = {")
		for i, e := range elements {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(b, "\n\t\t\t%s", e)
		}
		b.WriteString(" }\n")
	}
	b.WriteString("\t}\n")
}

func writeChain(b *strings.Builder, name, hook string, rules []string) {
	fmt.Fprintf(b, "\tchain %s {\n", name)
	if hook != "" {
		fmt.Fprintf(b, "\t\t%s\n", hook)
	}
	for _, r := range rules {
		fmt.Fprintf(b, "\t\t%s\n", r)
	}
	b.WriteString("\t}\n")
}

// decl is the kernel set's type and flags.
func (s kernelSet) decl() []string {
	t := "inet_proto . ipv4_addr . inet_service"
	if s.V6 {
		t = "inet_proto . ipv6_addr . inet_service"
	}
	if s.Unit {
		t = "mark . " + t
	} else if !s.DNS {
		t = "uid . " + t
	}
	out := []string{"type " + t}
	switch {
	case s.Range && s.Timed():
		out = append(out, "flags interval,timeout")
	case s.Range:
		out = append(out, "flags interval")
	case s.Timed():
		out = append(out, "flags timeout")
	}
	return out
}

// keyedText renders the elements of one kernel set, sorted by uid, then element.
func keyedText(ks kernelSet, es []keyed) []string {
	es = append([]keyed(nil), es...)
	sort.Slice(es, func(i, j int) bool {
		if es[i].uid != es[j].uid {
			return es[i].uid < es[j].uid
		}
		return lessElement(es[i].e, es[j].e)
	})
	out := make([]string, len(es))
	for i, k := range es {
		s := elementText(k.e)
		if !ks.DNS {
			s = fmt.Sprintf("%d . %s", k.uid, s)
		}
		out[i] = s
	}
	return out
}

// elementText is proto . addr . port as nft prints a concatenation: an
// address range that is a prefix as a CIDR, other ranges as from-to.
func elementText(e Element) string {
	addr := e.AddrFrom.String()
	if e.AddrTo != e.AddrFrom {
		addr += "-" + e.AddrTo.String()
		for bits := 0; bits < e.AddrFrom.BitLen(); bits++ {
			if p := netip.PrefixFrom(e.AddrFrom, bits); p.Masked().Addr() == e.AddrFrom && lastAddr(p) == e.AddrTo {
				addr = p.String()
				break
			}
		}
	}
	port := fmt.Sprint(e.PortFrom)
	if e.PortTo != e.PortFrom {
		port += fmt.Sprintf("-%d", e.PortTo)
	}
	return fmt.Sprintf("%s . %s . %s", e.Proto, addr, port)
}

// outputRuleText, restrictedRuleText and denyRuleText are the rules of
// outputRules, restrictedRules and denyRules (kernel_linux.go), in order.
func outputRuleText() []string {
	return []string{"meta skuid @" + kUsers + " jump " + chainRestr}
}

func inputRuleText(port uint16, proxy bool) []string {
	rules := []string{
		"udp sport 53 meta iiftype loopback fib saddr type != local ct status & (snat | dnat) == 0 drop # a DNS answer forged on this host (IPV6_FREEBIND)",
		"tcp sport 53 meta iiftype loopback fib saddr type != local ct status & (snat | dnat) == 0 drop",
	}
	if !proxy {
		return rules
	}
	return append(rules,
		fmt.Sprintf("udp dport %d ct status dnat ct direction original ct mark @%s socket mark != 0x%08x reject with icmpx admin-prohibited # a redirected query: only to the proxy's own sockets", port, kUsers, ProxySocketMark),
		fmt.Sprintf("tcp dport %d ct status dnat ct direction original ct mark @%s socket mark != 0x%08x reject with icmpx admin-prohibited", port, kUsers, ProxySocketMark),
		fmt.Sprintf("ct status dnat ct direction reply ct mark @%s socket transparent { 0, 1 } accept # the proxy's answer: to a socket that takes it", kUsers),
		fmt.Sprintf("ct status dnat ct direction reply ct mark @%s drop # to none: no ICMP error or reset, quoting it, to the address the service asked", kUsers))
}

func zoneRuleText(port uint16) []string {
	var out []string
	for _, proto := range []string{"udp", "tcp"} {
		out = append(out, fmt.Sprintf("%s dport 53 meta skuid @%s ct zone set %d # dns: proxy: their DNS flows in a conntrack zone of their own", proto, kProxyUsers, DNSZone))
	}
	for _, src := range []string{"ip saddr 127.0.0.1", "ip6 saddr ::1"} {
		for _, proto := range []string{"udp", "tcp"} {
			out = append(out, fmt.Sprintf("%s %s sport %d ct zone set %d # the proxy's answers", src, proto, port, DNSZone))
		}
	}
	return out
}

func natRuleText(port uint16) []string {
	return []string{
		fmt.Sprintf("udp dport 53 meta skuid @%s redirect to :%d # dns: proxy: every query, to any address", kProxyUsers, port),
		fmt.Sprintf("tcp dport 53 meta skuid @%s redirect to :%d", kProxyUsers, port),
	}
}

func restrictedRuleText(proxyPort uint16) []string {
	rules := []string{
		"ct state new ct status & confirmed == 0 ct mark set meta skuid # the conntrack mark: the uid that opened the flow",
		"udp dport 53 meta skuid @" + kProxyUsers + " goto " + chainDeny + " # dns: proxy: a query that was not redirected",
		"tcp dport 53 meta skuid @" + kProxyUsers + " goto " + chainDeny,
		"meta nfproto ipv6 exthdr rt exists goto " + chainDeny + " # IPV6_RTHDR: source routing",
		"meta nfproto ipv4 ip ihl != 5 goto " + chainDeny + " # IP_OPTIONS: LSRR/SSRR",
		"meta l4proto tcp tcp flags & syn != 0 tcp option mptcp exists tcp option mptcp @16,16 set 0xf000 # MPTCP falls back to TCP: no kernel subflows",
		"ct state established,related ct direction original ct status & expected == 0 ct mark . meta skuid @" + kOwners + " accept",
		"ct state established,related ct direction reply ct mark . meta skuid != @" + kOwners + " fib saddr type local accept",
		"ct state established,related ct direction reply ct status & expected != 0 fib saddr type local accept # a helper's flow (FTP data): its ct mark is its master's",
		"ct state established,related ct direction reply fib daddr type local fib saddr type local accept",
		"fib saddr type != local goto " + chainDeny + " # IP_FREEBIND, IPV6_FREEBIND, IP_TRANSPARENT",
		fmt.Sprintf("udp dport %d meta skuid @%s ct status & expected == 0 ct mark . meta skuid @%s ct status dnat fib daddr type local accept # redirected to the DNS proxy, on its own flow", proxyPort, kProxyUsers, kOwners),
		fmt.Sprintf("tcp dport %d meta skuid @%s ct status & expected == 0 ct mark . meta skuid @%s ct status dnat fib daddr type local accept", proxyPort, kProxyUsers, kOwners),
	}
	for _, ks := range append(allKernelSets(), proxyKernelSets()...) {
		nfproto, daddr := "ipv4", "ip daddr"
		if ks.V6 {
			nfproto, daddr = "ipv6", "ip6 daddr"
		}
		key := "meta l4proto . " + daddr + " . th dport"
		r := "meta nfproto " + nfproto + " "
		if ks.DNS {
			r = "meta skuid @" + kDNSUsers + " " + r
		} else {
			key = "meta skuid . " + key
		}
		rules = append(rules, r+key+" @"+ks.name()+" accept")
	}
	return append(rules, "goto "+chainDeny)
}

func denyRuleText(dl config.DenyLog) []string {
	rules := []string{"update @" + kDenied + " { meta skuid counter }"}
	if l := logText(dl, false); l != "" {
		rules = append(rules, "meta skuid != @"+kAudit+" "+l, "meta skuid @"+kAudit+" "+logText(dl, true))
	}
	return append(append(rules, "meta skuid @"+kAudit+" accept # mode: audit"), rejectText()...)
}

// rejectText is the text of rejectExprs.
func rejectText() []string {
	return []string{"meta l4proto tcp reject with tcp reset", "reject with icmpx admin-prohibited"}
}

func logText(dl config.DenyLog, audit bool) string {
	prefix := LogPrefix(dl.Prefix)
	if audit {
		prefix = AuditPrefix(dl.Prefix)
	}
	meter := fmt.Sprintf("update @%s { meta skuid limit rate %d/%s burst %d packets } ", kDenyLog, dl.Rate.Count, unitText(dl.Rate.Unit), min(dl.Rate.Count, 1000))
	switch dl.Mode {
	case config.LogNFLOG:
		return meter + fmt.Sprintf("log prefix %q group %d", prefix, dl.Group)
	case config.LogKernel:
		return meter + fmt.Sprintf("log prefix %q level warn flags skuid", prefix)
	}
	return ""
}

func unitText(u string) string {
	switch u {
	case "minute", "hour", "day":
		return u
	}
	return "second"
}

// KernelDiffNFT renders how a kernel that holds sets (as ReadSets returns
// them) and users (as ReadUsers returns them) differs from the plan, as the
// nft commands that would take it there: users to delete and add, elements
// to delete and add. n counts the elements and users that differ; 0 means
// the kernel's elements and users are the plan's.
func KernelDiffNFT(p Plan, sets map[string][]Element, users map[uint32]string) (text string, n int) {
	var b strings.Builder
	want := map[uint32]string{}
	for _, ch := range p.Chains {
		want[ch.UID] = ch.Allowlist
	}
	addU, delU := map[uint32]string{}, map[uint32]string{}
	for uid, name := range want {
		if got, ok := users[uid]; !ok || got != name {
			addU[uid] = name
		}
	}
	for uid, name := range users {
		if got, ok := want[uid]; !ok || got != name {
			delU[uid] = name
		}
	}
	b.WriteString(UsersNFT(addU, delU))
	n += len(addU) + len(delU)

	// Elements of allowlists the plan does not have are placed by the
	// kernel's own uids; elements of uids the kernel's users set does not
	// name (ReadSets's "uid:N") cannot be named as a logical set.
	place := Plan{Chains: append([]ChainPlan(nil), p.Chains...)}
	for uid, name := range users {
		if _, ok := want[uid]; !ok {
			place.Chains = append(place.Chains, ChainPlan{Allowlist: name, UID: uid})
		}
	}
	d := Delta{}
	names := map[string]bool{}
	for name := range p.Sets {
		names[name] = true
	}
	for name := range sets {
		names[name] = true
	}
	var orphans []string
	for name := range names {
		add, del := setdiff.Of(sets[name], p.Sets[name])
		if _, ok := ParseSetName(name); !ok {
			orphans = append(orphans, fmt.Sprintf("# %d elements keyed by %s, which the users set does not name: not in the plan", len(del), name))
			n += len(del)
			continue
		}
		if len(add)+len(del) > 0 {
			d[name] = SetDelta{Add: add, Del: del}
			n += len(add) + len(del)
		}
	}
	b.WriteString(d.NFT(place))
	sort.Strings(orphans)
	for _, o := range orphans {
		b.WriteString(o + "\n")
	}
	return b.String(), n
}
