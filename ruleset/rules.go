package ruleset

import (
	"fmt"
	"net/netip"
	"sort"

	"github.com/egressd/egressd/config"
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The kernel layout: the one function that turns a plan into the table's
// objects. Its cost per packet and per apply does not grow with the number
// of allowlists: every allowlist's elements live in shared sets keyed by
// uid (or unit key), and one chain judges every protected user. Each kind of
// subject has its part (kindLayouts: userSets, unitSets, the matches in
// output, userChains, unitChains); the rest is shared.
//
//	table inet egressd {
//	  set users    { type uid }                                   # protected uids; element comment = allowlist
//	  set owners   { type mark . uid }                            # (u . u) for every protected uid
//	  set openers  { type mark }                                  # every protected uid, as a conntrack mark
//	  map uidmarks { type uid : mark }                            # u : u for every protected uid (ct mark set meta skuid map @uidmarks)
//	  set dnsusers { type uid }                                   # dns: resolvers
//	  set proxyusers { type uid }                                 # dns: proxy
//	  set audit    { type uid }                                   # mode: audit
//	  set allow4   { type uid . inet_proto . ipv4_addr . inet_service }                  # exact elements (hash)
//	  set allow4r  { type uid . inet_proto . ipv4_addr . inet_service; flags interval }  # CIDRs, port ranges
//	  set allow6, allow6r                                         # the same for IPv6
//	  set dns4, dns4r, dns6, dns6r { type inet_proto . ipv*_addr . inet_service }        # the resolvers
//	  set proxy4, proxy4r, proxy6, proxy6r { like allow*; flags timeout }  # what the DNS proxy answered, for TTL + linger
//	  set denied   { type uid; flags dynamic; counter }           # rejected packets per uid
//	  set denylog  { type uid; flags dynamic }                    # per-uid log rate limit (a meter)
//	  (the unit sets: unitSets)
//	  chain dnszone, dnsproxy                                     # only while an allowlist has dns: proxy (zoneRules, natRules)
//	  chain input    (inputRules)
//	  chain inbound  { type filter hook input priority 2147483646; (inboundRules) }  # only while an allowlist has listen:
//	  chain icmperr (icmpErrorRules)                              # ICMP and ICMPv6 from inbound (jump): the errors dropped
//	  chain output { type filter hook output priority filter; (unitMatch) meta skuid @users jump restricted }
//	  chain restricted (restrictedRules)
//	  chain deny       (denyRules)
//	  chain unit_K, unitdeny_K                                    # per unit allowlist (unitRules)
//	}
//
// Established and related packets are accepted only on flows that the same
// uid opened (original direction) or that another uid or a peer outside
// opened (the reply direction: an inbound connection, or a local client's
// connection to a protected server). A protected user's packet on a flow that
// another process opened, or in the reply direction of a flow it opened
// itself (a forged-source "flow" from a FREEBIND socket), is judged like a
// new one: by its destination.
//
// layout builds the table for p; carry are the DNS proxy's elements to keep
// across a rebuild (those of uids with dns: proxy in p are kept). An error
// says the plan is inconsistent (a set or cgroup of an allowlist it has no
// uid or unit for); the table is then complete but for those elements.
func layout(p Plan, carry []ProxyElement) (Table, error) {
	var t Table
	placed, err := placeElements(p.Sets, p.Until, subjects(p))
	broken := ""
	if err != nil {
		broken = err.Error()
	}
	// Every kind's sets, whether or not the plan has allowlists of it (a
	// new allowlist is then an element delta, not a rebuild).
	for _, k := range kindLayouts {
		sets, kerr := k.sets(p, p.Of(k.kind), placed, broken, carry)
		if err == nil {
			err = kerr
		}
		t.Sets = append(t.Sets, sets...)
	}
	if p.HasProxy() {
		t.Chains = append(t.Chains,
			Chain{Name: chainZone, Hook: &Hook{nftables.ChainTypeFilter, "output", "raw"}, Rules: zoneRules(p.ProxyPort)},
			Chain{Name: chainNAT, Hook: &Hook{nftables.ChainTypeNAT, "output", "-100"}, Rules: natRules(p.ProxyPort)})
	}
	t.Chains = append(t.Chains,
		Chain{Name: chainIn, Hook: &Hook{nftables.ChainTypeFilter, "input", "filter"}, Rules: inputRules(p.ProxyPort, p.HasProxy())},
		Chain{Name: chainOut, Hook: &Hook{nftables.ChainTypeFilter, "output", "filter"}, Rules: outputRules(p)})
	if p.Inbound {
		t.Chains = append(t.Chains, Chain{Name: chainInbound, Hook: &Hook{nftables.ChainTypeFilter, "input", InboundPriority}, Rules: inboundRules()},
			Chain{Name: chainICMPErr, Rules: icmpErrorRules(p)})
	}
	for _, k := range kindLayouts {
		t.Chains = append(t.Chains, k.chains(p, p.Of(k.kind))...)
	}
	return t, err
}

// kindLayout is how the layout restricts one kind of subject: the sets that
// list its subjects and key its allowlists' elements, the match in the
// output chain that sends a subject's packets to be judged, and the chains
// that judge them. Everything else — the plan's allowlists, the placement of
// their elements, the rules' statements, verification, the fake and the nft
// text — is shared. A third kind of identity is a third entry here.
type kindLayout struct {
	kind SubjectKind
	// sets are the kind's sets (members: its allowlists, by name);
	// an error says the plan is inconsistent (the sets are complete but
	// for what it names).
	sets func(p Plan, members []AllowlistPlan, placed map[kernelSet][]keyed, broken string, carry []ProxyElement) ([]Set, error)
	// match is the output chain's rules that send the kind's packets to
	// its chains (none when the plan has no allowlist of the kind and the
	// match would need a kernel feature older kernels lack).
	match func(members []AllowlistPlan) []Rule
	// chains are the chains that judge the kind's packets.
	chains func(p Plan, members []AllowlistPlan) []Chain
}

// kindLayouts in the order of their sets and chains in the table; their
// matches go into output in the reverse order (outputRules).
var kindLayouts = []kindLayout{
	{kind: SubjectUser, sets: userSets, match: userMatch, chains: userChains},
	{kind: SubjectUnit, sets: unitSets, match: unitMatch, chains: unitChains},
}

// userSets: the protected uids and their switches, the shared element sets
// keyed by uid (and the resolvers'), the DNS proxy's, and the deny
// counters and meters keyed by uid.
func userSets(p Plan, users []AllowlistPlan, placed map[kernelSet][]keyed, broken string, carry []ProxyElement) ([]Set, error) {
	var sets []Set
	users = byID(users)
	uidSet := func(name, comment string, keep func(AllowlistPlan) bool) {
		var vs []value
		for _, ch := range users {
			if keep(ch) {
				v := value{v: ch.Subject.ID}
				if name == kUsers {
					v.comment = listedAs(ch)
				}
				vs = append(vs, v)
			}
		}
		sets = append(sets, Set{Name: name, Comment: comment, Type: "uid", values: vs,
			Kernel: &nftables.Set{Table: table, Name: name, KeyType: nftables.TypeUID, KeyByteOrder: binaryutil.NativeEndian}})
	}
	uidSet(kUsers, "protected uids, element comment = allowlist", uidSetMember(kUsers))
	var owners []value
	for _, ch := range users {
		owners = append(owners, value{v: ch.Subject.ID, pair: true})
	}
	sets = append(sets, Set{Name: kOwners, Comment: "(u . u) for every protected uid", Type: "mark . uid", values: owners,
		Kernel: &nftables.Set{Table: table, Name: kOwners, KeyType: nftables.MustConcatSetType(nftables.TypeMark, nftables.TypeUID), Concatenation: true}})
	var marks []value
	for _, ch := range users {
		marks = append(marks, value{v: ch.Subject.ID, data: true})
	}
	sets = append(sets, Set{Name: kUIDMarks, Comment: "every protected uid to itself as a mark (nft has no cast from uid to mark)", Map: true, Type: "uid : mark", values: marks,
		Kernel: &nftables.Set{Table: table, Name: kUIDMarks, KeyType: nftables.TypeUID, DataType: nftables.TypeMark, IsMap: true, KeyByteOrder: binaryutil.NativeEndian}})
	var openers []value
	for _, ch := range users {
		openers = append(openers, value{v: ch.Subject.ID, hex: true})
	}
	sets = append(sets, Set{Name: kOpeners, Comment: "every protected uid as a conntrack mark: a flow a protected user opened", Type: "mark", values: openers,
		Kernel: &nftables.Set{Table: table, Name: kOpeners, KeyType: nftables.TypeMark, KeyByteOrder: binaryutil.NativeEndian}})
	var listening []value
	for _, ch := range users {
		if ch.Listen {
			listening = append(listening, value{v: ch.Subject.ID, hex: true})
		}
	}
	sets = append(sets, Set{Name: kListenMarks, Comment: "every uid with listen: as a conntrack mark: ICMP errors about its datagram flows are dropped (inbound)", Type: "mark", values: listening,
		Kernel: &nftables.Set{Table: table, Name: kListenMarks, KeyType: nftables.TypeMark, KeyByteOrder: binaryutil.NativeEndian}})
	uidSet(kDNSUsers, "dns: resolvers", uidSetMember(kDNSUsers))
	uidSet(kProxyUsers, "dns: proxy", uidSetMember(kProxyUsers))
	uidSet(kAudit, "mode: audit", uidSetMember(kAudit))
	for _, ks := range allKernelSets() {
		sets = append(sets, elementSet(ks, "", placed[ks], broken))
	}
	proxyUID := map[uint32]bool{}
	for _, ch := range users {
		if ch.Proxy {
			proxyUID[ch.Subject.ID] = true
		}
	}
	kept := map[kernelSet][]ProxyElement{}
	for _, pe := range carry {
		if proxyUID[pe.UID] && pe.Timeout > 0 {
			kept[proxySetOf(pe.Element)] = append(kept[proxySetOf(pe.Element)], pe)
		}
	}
	for _, ks := range proxyKernelSets() {
		s := elementSet(ks, "what the DNS proxy answered: written as it answers, each element for TTL + linger", nil, "")
		s.proxy = kept[ks]
		sets = append(sets, s)
	}
	return append(sets, dynSet(kDenied, "rejected packets per uid", "uid", binaryutil.NativeEndian),
		dynSet(kDenyLog, "per-uid log rate limit (a meter)", "uid", binaryutil.NativeEndian)), nil
}

// unitSets: the cgroup map, the unit keys, the shared element sets keyed by
// unit key, and the deny counters and meters keyed by it. A cgroup of an
// allowlist that is not a unit allowlist of the plan is left out: an error.
func unitSets(p Plan, units []AllowlistPlan, placed map[kernelSet][]keyed, broken string, _ []ProxyElement) ([]Set, error) {
	var sets []Set
	var err error
	keyOf := unitKeys(p)
	var jumps []jump
	for _, cg := range p.Cgroups {
		k, ok := keyOf[cg.Allowlist]
		if !ok {
			if err == nil {
				err = fmt.Errorf("cgroup %d: allowlist %q is not a unit allowlist of the plan", cg.ID, cg.Allowlist)
			}
			continue
		}
		jumps = append(jumps, jump{id: cg.ID, key: k})
	}
	if jumps == nil {
		jumps = []jump{}
	}
	sets = append(sets, Set{Name: kUnitChains, Comment: "a restricted unit's current cgroup id -> its allowlist's chain", Map: true,
		Type: "cgroupsv2 : verdict", jumps: jumps, Kernel: unitChainsMap()})
	var ids []value
	for _, u := range units {
		ids = append(ids, value{v: u.Subject.ID, hex: true, comment: listedAs(u)})
	}
	sets = append(sets, Set{Name: kUnitIDs, Comment: "unit keys, element comment = \"ALLOWLIST UNIT\"", Type: "mark", values: ids,
		Kernel: &nftables.Set{Table: table, Name: kUnitIDs, KeyType: nftables.TypeMark, KeyByteOrder: binaryutil.NativeEndian}})
	for _, ks := range unitKernelSets() {
		sets = append(sets, elementSet(ks, "", placed[ks], broken))
	}
	// udenied, udenylog: keyed by the unit key in network order, which
	// every nft prints right where a rule updates the set with the key as
	// a constant (in host order Debian 12's nft showed its bytes turned around).
	return append(sets, dynSet(kUDenied, "rejected packets per unit key", "mark", binaryutil.BigEndian),
		dynSet(kUDenyLog, "per-unit log rate limit (a meter)", "mark", binaryutil.BigEndian)), err
}

// dynSet is a dynamic set a rule updates (a counter or a meter per subject).
func dynSet(name, comment, typ string, order binaryutil.ByteOrder) Set {
	kt := nftables.TypeUID
	if typ == "mark" {
		kt = nftables.TypeMark
	}
	return Set{Name: name, Comment: comment, Type: typ, Flags: []string{"dynamic"},
		Kernel: &nftables.Set{Table: table, Name: name, KeyType: kt, KeyByteOrder: order, Dynamic: true}}
}

// userChains: one chain judges every protected user, one denies.
func userChains(p Plan, _ []AllowlistPlan) []Chain {
	return []Chain{{Name: chainRestr, Rules: restrictedRules(p.ProxyPort)}, {Name: chainDeny, Rules: denyRules(p.DenyLog)}}
}

// unitChains: each unit allowlist judges and denies in chains of its own
// (its key is a constant of their rules: see unitRules).
func unitChains(p Plan, units []AllowlistPlan) []Chain {
	var chains []Chain
	for _, u := range units {
		chains = append(chains,
			Chain{Name: unitChain(u.Subject.ID), Rules: unitRules(u)},
			Chain{Name: unitDenyChain(u.Subject.ID), Rules: unitDenyRules(u, p.DenyLog)})
	}
	return chains
}

// elementSet is the kernel set ks with its plan elements.
func elementSet(ks kernelSet, comment string, es []keyed, broken string) Set {
	var parts []nftables.SetDatatype
	typ := "inet_proto . ipv4_addr . inet_service"
	if ks.V6 {
		typ = "inet_proto . ipv6_addr . inet_service"
	}
	if ks.Kind == SubjectUnit {
		parts, typ = append(parts, nftables.TypeMark), "mark . "+typ
	} else if !ks.DNS {
		parts, typ = append(parts, nftables.TypeUID), "uid . "+typ
	}
	addr := nftables.TypeIPAddr
	if ks.V6 {
		addr = nftables.TypeIP6Addr
	}
	parts = append(parts, nftables.TypeInetProto, addr, nftables.TypeInetService)
	var flags []string
	if ks.Range {
		flags = append(flags, "interval")
	}
	if ks.Timed() {
		flags = append(flags, "timeout")
	}
	if es == nil {
		es = []keyed{}
	}
	return Set{Name: ks.name(), Comment: comment, Type: typ, Flags: flags, ks: ks, keyed: es, Broken: broken,
		Kernel: &nftables.Set{Table: table, Name: ks.name(), KeyType: nftables.MustConcatSetType(parts...),
			Interval: ks.Range, Concatenation: true, HasTimeout: ks.Timed()}}
}

// outputRules: each kind's match, the last kind's first: a unit's chain
// returns what its allowlist allows to output, where the uid rule still
// applies (a socket of a restricted unit that is also a restricted user's
// must pass both allowlists).
func outputRules(p Plan) []Rule {
	var rules []Rule
	for i := len(kindLayouts) - 1; i >= 0; i-- {
		rules = append(rules, kindLayouts[i].match(p.Of(kindLayouts[i].kind))...)
	}
	return rules
}

// unitMatch: with unit allowlists, socket cgroupv2 level N vmap @unitchains
// for each level (a kernel without cgroupv2 matching, before 5.13, keeps
// working for user allowlists).
func unitMatch(units []AllowlistPlan) []Rule {
	if len(units) == 0 {
		return nil
	}
	var rules []Rule
	for l := 1; l <= UnitLevels; l++ {
		rules = append(rules, rule(Stmt{fmt.Sprintf("socket cgroupv2 level %d vmap @%s", l, kUnitChains), []expr.Any{
			&expr.Socket{Key: expr.SocketKeyCgroupv2, Level: uint32(l), Register: reg1},
			&expr.Lookup{SourceRegister: reg1, SetName: kUnitChains, DestRegister: 0, IsDestRegSet: true},
		}}))
	}
	return rules
}

// userMatch: meta skuid @users jump restricted: one hash lookup whatever
// the number of allowlists; every other user's packets pass untouched.
func userMatch([]AllowlistPlan) []Rule {
	return []Rule{rule(skuidIn(kUsers, false), jumpTo(chainRestr))}
}

// zoneRules: a proxy user's packet to port 53 (UDP, TCP), and the proxy's
// answers (from 127.0.0.1:P or [::1]:P), are tracked in DNSZone (raw
// priority, before conntrack looks the packet up). Both directions of a
// redirected query are then in the zone, and no other process's flow is.
func zoneRules(port uint16) []Rule {
	var rules []Rule
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		rules = append(rules, rule(l4Port(proto, true, 53), skuidIn(kProxyUsers, false), ctZoneSet(DNSZone)).
			because("dns: proxy: their DNS flows in a conntrack zone of their own"))
	}
	for _, src := range []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()} {
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			rules = append(rules, rule(saddrIs(src), l4Port(proto, false, port), ctZoneSet(DNSZone)).because("the proxy's answers"))
		}
	}
	return rules
}

// natRules: every DNS query (UDP and TCP port 53, to any address, either
// family) of a dns: proxy user goes to the proxy on 127.0.0.1:P or [::1]:P
// (dstnat priority, before the filter chain, which then sees the
// redirected destination).
func natRules(port uint16) []Rule {
	var rules []Rule
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		rules = append(rules, rule(l4Port(proto, true, 53), skuidIn(kProxyUsers, false), redirectTo(port)).
			because("dns: proxy: every query, to any address"))
	}
	return rules
}

// inputRules: a DNS answer (UDP or TCP from port 53) that arrives over
// loopback from an address that is not local, and that no NAT explains, is
// dropped. Only a local process can send it — one that may bind port 53
// (CAP_NET_BIND_SERVICE, or any user where net.ipv4.ip_unprivileged_port_start
// is lowered) at a resolver's IPv6 address with IPV6_FREEBIND (IPv4 refuses
// to route such a source) — and it would answer egressd's own queries, or
// the DNS proxy's, whose sockets and their resolvers every user reads in
// /proc/net/udp6: 65,536 forged answers, one per query ID, arrive before
// the resolver's. Genuine answers of a resolver elsewhere come in over its
// interface; those of a local resolver come from a local address.
//
// Then, with dns: proxy, the rules guard both directions of a redirected
// query (a protected user's flow, DNAT) where they are delivered:
//
//   - the query only to a socket with the proxy's mark (ProxySocketMark):
//     whoever else holds the proxy's port — bound while egressd did not,
//     where unprivileged users may bind it — gets nothing (rejected: the
//     query fails at once, as it does with no socket at all);
//   - the proxy's answer, whose source conntrack has turned back into the
//     address the service asked (any address of its choosing), only to a
//     socket: with none (the service closed it first), the kernel would
//     answer with an ICMP "port unreachable" (or a TCP reset) to that
//     address, quoting the answer and so the question: a message that no
//     socket sends, which no rule keyed by uid sees. Dropped instead.
func inputRules(port uint16, proxy bool) []Rule {
	var rules []Rule
	for i, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		r := rule(l4Port(proto, false, 53), iifLoopback, fibLocal(true, false), ctStatus(ipsDstNAT|ipsSrcNAT, false), drop)
		if i == 0 {
			r = r.because("a DNS answer forged on this host (IPV6_FREEBIND)")
		}
		rules = append(rules, r)
	}
	if !proxy {
		return rules
	}
	redirected := func(reply bool) []Stmt {
		return []Stmt{ctStatus(ipsDstNAT, true), ctDirection(reply), ctMarkIn(kOpeners)}
	}
	for i, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		r := rule(append(append([]Stmt{l4Port(proto, true, port)}, redirected(false)...), socketMarkNot(ProxySocketMark), rejectAdmin)...)
		if i == 0 {
			r = r.because("a redirected query: only to the proxy's own sockets")
		}
		rules = append(rules, r)
	}
	// An answer with a socket to take it passes (the socket expression
	// finds none, a TIME_WAIT one included, or the rule stops); any other
	// is dropped.
	return append(rules,
		rule(append(redirected(true), socketFound, accept)...).because("the proxy's answer: to a socket that takes it"),
		rule(append(redirected(true), drop)...).because("to none: no ICMP error or reset, quoting it, to the address the service asked"))
}

// restrictedRules judge every packet of a protected user.
func restrictedRules(proxyPort uint16) []Rule {
	deny := goTo(chainDeny)
	var rules []Rule
	// Record the opener of every new flow: its uid in the conntrack mark
	// (docs/security.md, defence 1, says why the mark and not a label).
	// Only on a flow's very first packet (not yet confirmed): conntrack
	// calls a confirmed flow that has had no answer NEW too, and labelling
	// it would let the user adopt another process's flow; a rejected first
	// packet takes its unconfirmed entry with it.
	rules = append(rules, rule(ctState(expr.CtStateBitNEW), ctStatus(ipsConfirmed, false), ctMarkSetSkuid).
		because("the conntrack mark: the uid that opened the flow"))
	// dns: proxy: every query is redirected to the proxy in the nat chain,
	// so a packet to port 53 here is one that was not: a flow opened
	// before the allowlist switched to the proxy (conntrack keeps its old
	// destination), or one the redirect missed. Before the established
	// rules, which would carry such a flow on.
	rules = append(rules,
		rule(l4Port(unix.IPPROTO_UDP, true, 53), skuidIn(kProxyUsers, false), deny).because("dns: proxy: a query that was not redirected"),
		rule(l4Port(unix.IPPROTO_TCP, true, 53), skuidIn(kProxyUsers, false), deny))
	// Source routing: the destination in the header is only the first hop.
	rules = append(rules,
		rule(nfproto(true), rtHdr, deny).because("IPV6_RTHDR: source routing"),
		rule(nfproto(false), ipOptions, deny).because("IP_OPTIONS: LSRR/SSRR"))
	// MPTCP: a connection's further subflows are opened by kernel sockets
	// that carry no uid, so they would escape the rules. The MPTCP option of
	// a protected user's SYN (and SYN-ACK) gets the private-use subtype 0xf,
	// which peers ignore (RFC 8684 3, Linux mptcp_parse_option): the peer
	// answers as plain TCP and the socket falls back to TCP (RFC 8684 3.7),
	// so the kernel never opens a subflow for it. The kernel lets a rule
	// write an option's data, not its kind or length.
	rules = append(rules, rule(mptcpOff...).because("MPTCP falls back to TCP: no kernel subflows"))
	// Established and related: in the original direction only on flows the
	// same uid opened; in the reply direction only on flows another uid (or
	// a peer outside) opened: the user answers whoever connected to it, but
	// never carries a reply on a flow it opened itself, which only a forged
	// source address makes useful.
	rules = append(rules,
		rule(ctState(established), ctDirection(false), ctStatus(ipsExpected, false), openerIsOwn(false), accept),
		rule(ctState(established), ctDirection(true), openerIsOwn(true), fibLocal(true, true), accept),
		rule(ctState(established), ctDirection(true), ctStatus(ipsExpected, true), fibLocal(true, true), accept).
			because("a helper's flow (FTP data): its ct mark is its master's"),
		// ... and on its own flows when the reply goes to a local address:
		// a service talking to itself over loopback.
		rule(ctState(established), ctDirection(true), fibLocal(false, true), fibLocal(true, true), accept))
	// A source address that is not local: a FREEBIND or TRANSPARENT socket
	// forging a flow. Never a protected user's business. After the
	// established rules, which spares a flow's original direction a route
	// lookup: a flow the user opened passed this rule with its first
	// packet. The reply direction has its own check (fib saddr in each
	// rule above): the reply tuple of a forwarded or DNATed flow starts at
	// an address that is not the host's, which an IPV6_FREEBIND socket can
	// bind and so speak to whoever opened that flow.
	rules = append(rules, rule(fibLocal(true, false), deny).because("IP_FREEBIND, IPV6_FREEBIND, IP_TRANSPARENT"))
	// The proxy's redirect: only a query the nat chain rewrote, to the
	// proxy's port on a local address, on a flow this uid opened (the
	// proxy tells the asker by the flow's conntrack mark: a socket of another user
	// that got the source port of a flow still in conntrack joins that
	// flow, and would be answered as its opener). Sent directly to the
	// port, a packet is judged like any other destination.
	for i, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		r := rule(l4Port(proto, true, proxyPort), skuidIn(kProxyUsers, false), ctStatus(ipsExpected, false), openerIsOwn(false),
			ctStatus(ipsDstNAT, true), fibLocal(false, true), accept)
		if i == 0 {
			r = r.because("redirected to the DNS proxy, on its own flow")
		}
		rules = append(rules, r)
	}
	for _, ks := range append(allKernelSets(), proxyKernelSets()...) {
		var ss []Stmt
		if ks.DNS {
			ss = append(ss, skuidIn(kDNSUsers, false))
		}
		rules = append(rules, rule(append(append(ss, lookupKey(ks)...), accept)...))
	}
	return append(rules, rule(deny))
}

// denyRules: count, log (rate-limited per uid by a meter, a dynamic set with
// a limit per element, so one noisy user cannot silence the others), then
// let an audited uid through or reject.
func denyRules(dl config.DenyLog) []Rule {
	rules := []Rule{rule(updateBySkuid(kDenied, "counter", &expr.Counter{}))}
	// Logged alike, with a prefix that says which: the event's "audit"
	// field comes from what the kernel did, not from the configuration.
	lim, limText := limitOf(dl)
	if l, ok := logStmt(dl, LogPrefix(dl.Prefix)); ok {
		la, _ := logStmt(dl, AuditPrefix(dl.Prefix))
		rules = append(rules,
			rule(skuidIn(kAudit, true), updateBySkuid(kDenyLog, limText, lim), l),
			rule(skuidIn(kAudit, false), updateBySkuid(kDenyLog, limText, lim), la))
	}
	// mode: audit: logged, counted, then let through.
	rules = append(rules, rule(skuidIn(kAudit, false), accept).because("mode: audit"))
	return append(rules, rejectRules()...)
}

// The unit part of the layout (docs/units.md), beside the uid part. Every
// rule is one that nft can print: the unit key K of an allowlist is a
// constant of that allowlist's own chains, never the result of a map lookup
// (nft cannot print a looked-up value inside a concatenation or as a set key:
// nft 1.0.6 aborted on the whole ruleset).
//
//	map unitchains { type cgroupsv2 : verdict }   # a restricted unit's current cgroup id -> jump unit_K
//	set unitids    { type mark }                  # unit keys; element comment = "ALLOWLIST UNIT"
//	set uallow4, uallow4r, uallow6, uallow6r { type mark . inet_proto . ipv*_addr . inet_service }
//	set udenied, udenylog { type mark; flags dynamic }
//	chain output {                                # before the uid rule; only when a unit allowlist exists
//	  socket cgroupv2 level N vmap @unitchains    (N = 1..UnitLevels)
//	  meta skuid @users jump restricted
//	}
//	chain unit_K {                                # one per unit allowlist; K its unit key (hex in the name)
//	  ct state new ct status != confirmed ct label set K << 64  # bits 64-95: which unit opened the flow
//	  (IPv6 routing header, IPv4 options: goto unitdeny_K; MPTCP: as in restricted)
//	  ct state established,related ct direction original ct label & (bits 64-95) == K << 64 return
//	  ct state established,related ct direction reply ct label & (bits 64-95) != K << 64 fib saddr type local return
//	  ct state established,related ct direction reply fib daddr type local fib saddr type local return
//	  fib saddr type != local goto unitdeny_K
//	  K . meta l4proto . ip daddr . th dport @uallow4 return   (and uallow4r, uallow6, uallow6r)
//	  meta l4proto . ip daddr . th dport @dns4 return          (and dns4r, dns6, dns6r; dns: resolvers only)
//	  goto unitdeny_K
//	}
//	chain unitdeny_K { update @udenied { K counter }; update @udenylog { K limit } log prefix "P unit deny: ";
//	                   mode: audit: return; else reject }
//
// A packet the unit's allowlist allows returns to output, where the uid rule
// still applies: a socket of a restricted unit that is also a restricted
// user's must pass both allowlists.
func unitRules(u AllowlistPlan) []Rule {
	k := u.Subject.ID
	deny := goTo(unitDenyChain(k))
	var rules []Rule
	// The opener of every new flow: its unit key in label bits 64-95, on
	// the flow's first packet only (see restrictedRules). A label set only
	// sets bits.
	rules = append(rules, rule(ctState(expr.CtStateBitNEW), ctStatus(ipsConfirmed, false), ctLabelSet(k)).
		because("label bits 64-95: the unit that opened the flow (key "+unitKeyText(k)+")"))
	// Source routing, IPv4 options and MPTCP, as in restrictedRules.
	rules = append(rules,
		rule(nfproto(true), rtHdr, deny).because("IPV6_RTHDR: source routing"),
		rule(nfproto(false), ipOptions, deny).because("IP_OPTIONS: LSRR/SSRR"),
		rule(mptcpOff...).because("MPTCP falls back to TCP"))
	// Established and related: the unit's own flows in the original
	// direction, others' flows in the reply direction (restrictedRules).
	rules = append(rules,
		rule(ctState(established), ctDirection(false), ctLabelIs(k, true), ret),
		// a forged source on a forwarded flow's reply (restrictedRules)
		rule(ctState(established), ctDirection(true), ctLabelIs(k, false), fibLocal(true, true), ret),
		rule(ctState(established), ctDirection(true), fibLocal(false, true), fibLocal(true, true), ret),
		rule(fibLocal(true, false), deny).because("IP_FREEBIND, IPV6_FREEBIND, IP_TRANSPARENT"))
	for _, ks := range unitKernelSets() {
		rules = append(rules, rule(append(unitLookupKey(ks, k), ret)...))
	}
	if u.DNS {
		for _, ks := range allKernelSets() {
			if ks.DNS {
				rules = append(rules, rule(append(lookupKey(ks), ret)...))
			}
		}
	}
	return append(rules, rule(deny))
}

// unitDenyRules: count and log under the unit key, let an audited unit
// through (to the uid rule: return), reject the rest. The logged packet
// carries the unit key as its mark (NFULA_MARK, the kernel log's MARK=). An
// audited packet goes on: its mark is saved before and restored after the
// log statement (nft prints the restore as `meta mark set meta mark`: the
// mark loaded before; nft's language has no save, so that statement loaded
// from the text restores nothing, TestNFTTextLoads); a denied packet is
// rejected next, its mark is left.
func unitDenyRules(u AllowlistPlan, dl config.DenyLog) []Rule {
	k := unitKeyText(u.Subject.ID)
	key := &expr.Immediate{Register: reg32, Data: binaryutil.BigEndian.PutUint32(u.Subject.ID)} // the dynamic sets' order
	rules := []Rule{rule(Stmt{"update @" + kUDenied + " { " + k + " counter }", []expr.Any{key,
		&expr.Dynset{SrcRegKey: reg32, SetName: kUDenied, Operation: unix.NFT_DYNSET_OP_UPDATE, Exprs: []expr.Any{&expr.Counter{}}}}})}
	prefix := LogPrefixOf(SubjectUnit, u.Audit, dl.Prefix)
	if l, ok := logStmt(dl, prefix); ok {
		lim, limText := limitOf(dl)
		meter := []expr.Any{key}
		if u.Audit {
			meter = append(meter, &expr.Meta{Key: expr.MetaKeyMARK, Register: reg32 + 1})
		}
		meter = append(meter, &expr.Dynset{SrcRegKey: reg32, SetName: kUDenyLog, Operation: unix.NFT_DYNSET_OP_UPDATE, Exprs: []expr.Any{lim}})
		r := rule(Stmt{fmt.Sprintf("update @%s { %s %s }", kUDenyLog, k, limText), meter},
			Stmt{"meta mark set " + k, []expr.Any{
				&expr.Immediate{Register: reg32 + 2, Data: binaryutil.NativeEndian.PutUint32(u.Subject.ID)},
				&expr.Meta{Key: expr.MetaKeyMARK, Register: reg32 + 2, SourceRegister: true}}},
			l)
		r.Comment = "the log carries the unit key as the mark; the packet is rejected next"
		if u.Audit {
			r.Stmts = append(r.Stmts, Stmt{"meta mark set meta mark", []expr.Any{&expr.Meta{Key: expr.MetaKeyMARK, Register: reg32 + 1, SourceRegister: true}}})
			r.Comment = "the log carries the unit key as the mark; egressd's rule saves the packet's mark before and restores it after, which nft cannot write: loaded from this text, the packet goes on with the unit key as its mark"
		}
		rules = append(rules, r)
	}
	if u.Audit {
		return append(rules, rule(ret).because("mode: audit: on to the uid rule"))
	}
	return append(rules, rejectRules()...)
}

// byID orders allowlists by their subjects' ids (the kernel sets' order).
func byID(as []AllowlistPlan) []AllowlistPlan {
	out := append([]AllowlistPlan(nil), as...)
	sort.Slice(out, func(i, j int) bool { return out[i].Subject.ID < out[j].Subject.ID })
	return out
}

func unitChainsMap() *nftables.Set {
	return &nftables.Set{Table: table, Name: kUnitChains, KeyType: nftables.TypeCGroupV2, DataType: nftables.TypeVerdict,
		IsMap: true, KeyByteOrder: binaryutil.NativeEndian}
}

// cgroupElement maps a cgroup id to the chain of the unit key k.
func cgroupElement(id uint64, k uint32) nftables.SetElement {
	return nftables.SetElement{Key: binaryutil.NativeEndian.PutUint64(id), VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: unitChain(k)}}
}

// The text of the unit part of the layout (unit_linux.go), for Plan.NFT.

// unitKeyText is a unit key as nft prints a mark.
func unitKeyText(k uint32) string { return fmt.Sprintf("0x%08x", k) }
