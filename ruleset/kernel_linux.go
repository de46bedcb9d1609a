//go:build linux

package ruleset

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// chunk is how many elements go in one netlink message: a message's element
// list is one nested attribute, whose length field has 16 bits.
const chunk = 512

// Netlink is the Kernel that speaks nf_tables over netlink.
type Netlink struct {
	// NetNSFd, when non-zero, is the network namespace to act in (tests).
	NetNSFd int
	// rcvBuf, when non-zero, replaces the receive buffer size (tests: an
	// acknowledgement overrun, ENOBUFS, after the kernel committed).
	rcvBuf int
	// own: the table's ownership and the socket that owns it (owner_linux.go).
	own owner
	// addRenews: whether adding an element that is there renews its
	// timeout (Linux 6.10 and later), probed at the first AddProxy
	// (proxy_linux.go); 0 not probed, 1 yes, 2 no. Guarded by own.mu.
	addRenews int
}

var table = &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}

// conn opens a fresh connection: for reads, and per transaction when the
// table is not owned. A connection whose batch failed to build is dropped,
// never flushed (google/nftables v0.3.0 would apply the part that did build).
func (k *Netlink) conn() (*nftables.Conn, error) {
	return k.dial()
}

// dial opens a connection with big buffers in the Netlink's namespace; with
// nftables.AsLasting it is one socket for every transaction (the owner's).
func (k *Netlink) dial(extra ...nftables.ConnOption) (*nftables.Conn, error) {
	rcv := 16 << 20
	if k.rcvBuf != 0 {
		rcv = k.rcvBuf
	}
	opts := []nftables.ConnOption{nftables.WithSockOptions(func(c *netlink.Conn) error { return bigBuffers(c, rcv) })}
	if k.NetNSFd != 0 {
		opts = append(opts, nftables.WithNetNSFd(k.NetNSFd))
	}
	return nftables.New(append(opts, extra...)...)
}

// bigBuffers lets one batch carry 100,000 elements, as nft itself does:
// netlink refuses a message larger than the socket's send buffer.
func bigBuffers(c *netlink.Conn, rcv int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 64<<20)
		if serr == nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcv)
		}
	})
	if err == nil && serr != nil && !errors.Is(serr, syscall.EPERM) {
		err = serr
	}
	return err
}

// The kernel layout. Its cost per packet and per apply does not grow with the
// number of allowlists: every allowlist's elements live in shared sets keyed
// by uid, and one chain judges every protected user.
//
//	table inet egressd {
//	  set users    { type uid }                                   # protected uids; element comment = allowlist
//	  set owners   { type mark . uid }                            # (u . u) for every protected uid
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
//	  chain dnszone { type filter hook output priority raw;       # only while an allowlist has dns: proxy
//	    udp dport 53 meta skuid @proxyusers ct zone set 53 (and tcp)      # their DNS flows: a conntrack zone of their own
//	    ip saddr 127.0.0.1 udp sport P ct zone set 53 (and tcp, ::1)      # the proxy's answers to them }
//	  chain dnsproxy { type nat hook output priority dstnat;       # only while an allowlist has dns: proxy
//	    udp dport 53 meta skuid @proxyusers redirect to :P; tcp dport 53 meta skuid @proxyusers redirect to :P }
//	  chain input { type filter hook input priority filter;
//	    udp sport 53 meta iiftype loopback fib saddr type != local ct status & (snat|dnat) == 0 drop (and tcp)  # forged on this host
//	    udp dport P ct status dnat ct direction original ct mark @users socket mark != ProxySocketMark reject (and tcp)  # dns: proxy only
//	    ct status dnat ct direction reply ct mark @users socket transparent accept; ... drop }                          # dns: proxy only
//	  chain output { type filter hook output priority filter; meta skuid @users jump restricted }
//	  chain restricted {
//	    ct state new ct status != confirmed ct mark set meta skuid   # the conntrack mark: which uid opened the flow
//	    udp dport 53 meta skuid @proxyusers goto deny (and tcp)   # dns: proxy: a query that was not redirected
//	    meta nfproto ipv6 exthdr rt exists goto deny              # IPV6_RTHDR (segment routing, type 0/2)
//	    meta nfproto ipv4 ip ihl != 5 goto deny                   # IP_OPTIONS (LSRR/SSRR source routing)
//	    tcp flags syn tcp option mptcp: overwritten with NOPs     # MPTCP falls back to TCP: no kernel subflows
//	    ct state established,related ct direction original ct status != expected ct mark . meta skuid @owners accept
//	    ct state established,related ct direction reply ct mark . meta skuid != @owners fib saddr type local accept
//	    ct state established,related ct direction reply ct status expected fib saddr type local accept  # a helper's flow: its mark is its master's
//	    ct state established,related ct direction reply fib daddr type local fib saddr type local accept
//	    fib saddr type != local goto deny                         # IP_FREEBIND, IPV6_FREEBIND, IP_TRANSPARENT
//	    udp dport P meta skuid @proxyusers ct status != expected ct mark . meta skuid @owners ct status dnat fib daddr type local accept (and tcp)
//	    meta skuid . meta l4proto . ip daddr . th dport @allow4 accept   (and allow4r, allow6, allow6r)
//	    meta skuid . meta l4proto . ip daddr . th dport @proxy4 accept   (and proxy4r, proxy6, proxy6r)
//	    meta skuid @dnsusers meta l4proto . ip daddr . th dport @dns4 accept   (and dns4r, dns6, dns6r)
//	    goto deny
//	  }
//	  chain deny { update @denied { meta skuid counter }; update @denylog { meta skuid limit rate R } log;
//	               meta skuid @audit accept (mode: audit, logged with the prefix "P audit: ");
//	               tcp: reject with tcp reset; reject with icmpx admin-prohibited }
//	}
//
// Established and related packets are accepted only on flows that the same
// uid opened (original direction) or that another uid or a peer outside
// opened (the reply direction: an inbound connection, or a local client's
// connection to a protected server). A protected user's packet on a flow that
// another process opened, or in the reply direction of a flow it opened
// itself (a forged-source "flow" from a FREEBIND socket), is judged like a
// new one: by its destination.
func (s kernelSet) nft() *nftables.Set {
	var parts []nftables.SetDatatype
	if s.Unit {
		parts = append(parts, nftables.TypeMark)
	} else if !s.DNS {
		parts = append(parts, nftables.TypeUID)
	}
	addr := nftables.TypeIPAddr
	if s.V6 {
		addr = nftables.TypeIP6Addr
	}
	parts = append(parts, nftables.TypeInetProto, addr, nftables.TypeInetService)
	return &nftables.Set{Table: table, Name: s.name(), KeyType: nftables.MustConcatSetType(parts...),
		Interval: s.Range, Concatenation: true, HasTimeout: s.Timed()}
}

func uidSet(name string) *nftables.Set {
	return &nftables.Set{Table: table, Name: name, KeyType: nftables.TypeUID, KeyByteOrder: binaryutil.NativeEndian}
}

func ownersSet() *nftables.Set {
	return &nftables.Set{Table: table, Name: kOwners, KeyType: nftables.MustConcatSetType(nftables.TypeMark, nftables.TypeUID), Concatenation: true}
}

// dynamic sets, filled from the packet path with one element per uid.
func deniedSet() *nftables.Set {
	return &nftables.Set{Table: table, Name: kDenied, KeyType: nftables.TypeUID, KeyByteOrder: binaryutil.NativeEndian, Dynamic: true}
}

func denyLogSet() *nftables.Set {
	return &nftables.Set{Table: table, Name: kDenyLog, KeyType: nftables.TypeUID, KeyByteOrder: binaryutil.NativeEndian, Dynamic: true}
}

// ApplyFull implements Kernel.
func (k *Netlink) ApplyFull(p Plan) error {
	k.own.mu.Lock()
	defer k.own.mu.Unlock()
	err := k.applyFull(p)
	if errors.Is(err, unix.EOPNOTSUPP) {
		// The table's flags changed between reading and writing them
		// (another process replaced it): once more, with fresh ones.
		err = k.applyFull(p)
	}
	if err != nil {
		return k.unknownOutcome(p, err)
	}
	return nil
}

// applyFull replaces the table in one transaction: add (a no-op if it
// exists), delete, add, whether or not it existed. The first add names the
// table with the flags it has: the kernel refuses a change of ownership
// flags on an existing table (EOPNOTSUPP), but lets its owner, or anyone
// for an unowned or orphaned one, delete it and create it anew with other
// flags in the same transaction. Called with own.mu held.
func (k *Netlink) applyFull(p Plan) error {
	c, flags, err := k.writer()
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	have, ok, err := k.tableFlags()
	if err != nil {
		return err
	}
	if !ok {
		have = flags
	}
	var carry []ProxyElement
	if ok {
		// The proxy's answers outlive a rebuild: a service holds them for
		// their TTL. Read through the writer, before the transaction.
		rc, err := k.conn()
		if err != nil {
			return fmt.Errorf("open netlink: %w", err)
		}
		if carry, err = readProxy(rc); err != nil {
			return fmt.Errorf("read the DNS proxy's elements to keep them: %w", err)
		}
	}
	c.AddTable(&nftables.Table{Family: table.Family, Name: table.Name, Flags: have})
	c.DelTable(table)
	c.AddTable(&nftables.Table{Family: table.Family, Name: table.Name, Flags: flags})
	if err := build(c, p, carry); err != nil {
		k.dropIf(c)
		return fmt.Errorf("build full ruleset: %w", err) // c is dropped unflushed
	}
	if err := c.Flush(); err != nil {
		k.dropIf(c)
		return fmt.Errorf("apply full ruleset (%d elements): %w", p.Elements(), err)
	}
	return nil
}

// unknownOutcome handles a flush error after which the kernel may or may
// not have committed: ENOBUFS on the acknowledgements says nothing about the
// transaction. The kernel is read back and compared with the plan; only a
// match is reported as applied.
func (k *Netlink) unknownOutcome(p Plan, err error) error {
	if !errors.Is(err, unix.ENOBUFS) {
		return err
	}
	fs, verr := k.Verify(p)
	if verr == nil && len(fs) == 0 {
		return nil
	}
	if verr != nil {
		return fmt.Errorf("%w; the outcome could not be verified: %v", err, verr)
	}
	return fmt.Errorf("%w; verified: the kernel does not hold the plan (%s)", err, fs[0])
}

// build adds the plan's table contents to c. carry are the DNS proxy's
// elements to keep across a rebuild (those of uids with dns: proxy in p).
func build(c *nftables.Conn, p Plan, carry []ProxyElement) error {
	uidOf := uids(p)
	placed, err := placeElements(p.Sets, p.Until, uidOf)
	if err != nil {
		return err
	}
	for _, ks := range everyKernelSet() {
		s := ks.nft()
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("add set %s: %w", s.Name, err)
		}
		if err := addElements(c, s, ks, placed[ks]); err != nil {
			return err
		}
	}
	proxyUID := map[uint32]bool{}
	for _, ch := range p.Chains {
		if ch.Proxy {
			proxyUID[ch.UID] = true
		}
	}
	kept := map[kernelSet][]ProxyElement{}
	for _, pe := range carry {
		if proxyUID[pe.UID] && pe.Timeout > 0 {
			kept[proxySetOf(pe.Element)] = append(kept[proxySetOf(pe.Element)], pe)
		}
	}
	for _, ks := range proxyKernelSets() {
		s := ks.nft()
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("add set %s: %w", s.Name, err)
		}
		es := kept[ks]
		for i := 0; i < len(es); i += chunk {
			if err := c.SetAddElements(s, proxySetElements(ks, es[i:min(i+chunk, len(es))])); err != nil {
				return fmt.Errorf("add %d elements to %s: %w", len(es), s.Name, err)
			}
		}
	}
	var users, owners, dnsUsers, proxyUsers, audit []nftables.SetElement
	for _, ch := range p.Chains {
		u := binaryutil.NativeEndian.PutUint32(ch.UID)
		users = append(users, nftables.SetElement{Key: u, Comment: ch.Allowlist})
		owners = append(owners, nftables.SetElement{Key: append(append([]byte{}, u...), u...)})
		if ch.DNS {
			dnsUsers = append(dnsUsers, nftables.SetElement{Key: u})
		}
		if ch.Proxy {
			proxyUsers = append(proxyUsers, nftables.SetElement{Key: u})
		}
		if ch.Audit {
			audit = append(audit, nftables.SetElement{Key: u})
		}
	}
	for _, part := range []struct {
		s  *nftables.Set
		es []nftables.SetElement
	}{{uidSet(kUsers), users}, {ownersSet(), owners}, {uidSet(kDNSUsers), dnsUsers}, {uidSet(kProxyUsers), proxyUsers}, {uidSet(kAudit), audit}, {deniedSet(), nil}, {denyLogSet(), nil}} {
		if err := c.AddSet(part.s, nil); err != nil {
			return fmt.Errorf("add set %s: %w", part.s.Name, err)
		}
		for i := 0; i < len(part.es); i += chunk {
			if err := c.SetAddElements(part.s, part.es[i:min(i+chunk, len(part.es))]); err != nil {
				return fmt.Errorf("add %d elements to %s: %w", len(part.es), part.s.Name, err)
			}
		}
	}
	if err := buildUnits(c, p); err != nil { // before the output chain, which jumps to its chains
		return err
	}
	out := c.AddChain(outputChain())
	restr := c.AddChain(&nftables.Chain{Name: chainRestr, Table: table})
	deny := c.AddChain(&nftables.Chain{Name: chainDeny, Table: table})
	if p.HasProxy() {
		zone := c.AddChain(zoneChain())
		for _, r := range zoneRules(zone, p.ProxyPort) {
			c.AddRule(r)
		}
		nat := c.AddChain(natChain())
		for _, r := range natRules(nat, p.ProxyPort) {
			c.AddRule(r)
		}
	}
	in := c.AddChain(inputChain())
	for _, r := range inputRules(in, p.ProxyPort, p.HasProxy()) {
		c.AddRule(r)
	}
	for _, r := range append(unitOutputRules(out, p), outputRules(out)...) {
		c.AddRule(r)
	}
	for _, r := range restrictedRules(restr, p.ProxyPort) {
		c.AddRule(r)
	}
	for _, r := range denyRules(deny, p.DenyLog) {
		c.AddRule(r)
	}
	return nil
}

func outputChain() *nftables.Chain {
	return &nftables.Chain{
		Name: chainOut, Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter,
	}
}

// outputRules: meta skuid @users jump restricted — one hash lookup whatever
// the number of allowlists; every other user's packets pass untouched.
func outputRules(out *nftables.Chain) []*nftables.Rule {
	return []*nftables.Rule{{Table: table, Chain: out, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: kUsers},
		&expr.Verdict{Kind: expr.VerdictJump, Chain: chainRestr},
	}}}
}

// natChain is the DNS proxy's redirect: dstnat priority, before the filter
// chain, which then sees the redirected destination.
func natChain() *nftables.Chain {
	return &nftables.Chain{
		Name: chainNAT, Table: table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest,
	}
}

// zoneChain puts dns: proxy users' DNS flows in their own conntrack zone:
// raw priority, before conntrack looks the packet up.
func zoneChain() *nftables.Chain {
	return &nftables.Chain{
		Name: chainZone, Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRaw,
	}
}

// zoneRules: a proxy user's packet to port 53 (UDP, TCP), and the proxy's
// answers (from 127.0.0.1:P or [::1]:P), are tracked in DNSZone. Both
// directions of a redirected query are then in the zone, and no other
// process's flow is.
func zoneRules(ch *nftables.Chain, port uint16) []*nftables.Rule {
	zone := []expr.Any{
		&expr.Immediate{Register: reg1, Data: binaryutil.NativeEndian.PutUint16(DNSZone)},
		&expr.Ct{Key: expr.CtKeyZONE, Register: reg1, SourceRegister: true},
	}
	var rules []*nftables.Rule
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		es := append(l4DportIs(proto, 53), inUIDSet(kProxyUsers)...)
		rules = append(rules, &nftables.Rule{Table: table, Chain: ch, Exprs: append(es, zone...)})
	}
	for _, src := range []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()} {
		nfproto, off := byte(unix.NFPROTO_IPV4), uint32(12)
		if src.Is6() {
			nfproto, off = unix.NFPROTO_IPV6, 8
		}
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			es := []expr.Any{
				&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{nfproto}},
				&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(src.BitLen() / 8)},
				&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: src.AsSlice()},
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{proto}},
				&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
				&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{byte(port >> 8), byte(port)}},
			}
			rules = append(rules, &nftables.Rule{Table: table, Chain: ch, Exprs: append(es, zone...)})
		}
	}
	return rules
}

// inputChain guards what reaches local sockets (input hook): DNS answers
// forged on the host, and what the DNS proxy's redirect delivers.
func inputChain() *nftables.Chain {
	return &nftables.Chain{
		Name: chainIn, Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter,
	}
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
func inputRules(ch *nftables.Chain, port uint16, proxy bool) []*nftables.Rule {
	var rules []*nftables.Rule
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		es := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{proto}},
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{0, 53}},
			&expr.Meta{Key: expr.MetaKeyIIFTYPE, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint16(unix.ARPHRD_LOOPBACK)},
		}
		rules = append(rules, &nftables.Rule{Table: table, Chain: ch, Exprs: append(append(es, sourceNotLocal()...),
			&expr.Ct{Register: reg1, Key: expr.CtKeySTATUS},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT | ipsSrcNAT), Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{0, 0, 0, 0}},
			&expr.Verdict{Kind: expr.VerdictDrop},
		)})
	}
	if !proxy {
		return rules
	}
	redirected := func(dir byte) []expr.Any {
		return []expr.Any{
			&expr.Ct{Register: reg1, Key: expr.CtKeySTATUS},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: []byte{0, 0, 0, 0}},
			&expr.Ct{Register: reg1, Key: expr.CtKeyDIRECTION},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{dir}},
			&expr.Ct{Register: reg1, Key: expr.CtKeyMARK},
			&expr.Lookup{SourceRegister: reg1, SetName: kUsers},
		}
	}
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		es := append(l4DportIs(proto, port), redirected(0)...)
		es = append(es,
			&expr.Socket{Key: expr.SocketKeyMark, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(ProxySocketMark)},
			&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED})
		rules = append(rules, &nftables.Rule{Table: table, Chain: ch, Exprs: es})
	}
	// An answer with a socket to take it passes (the socket expression
	// finds none, a TIME_WAIT one included, or the rule stops); any other
	// is dropped.
	rules = append(rules,
		&nftables.Rule{Table: table, Chain: ch, Exprs: append(redirected(1),
			&expr.Socket{Key: expr.SocketKeyTransparent, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpLte, Register: reg1, Data: []byte{1}},
			&expr.Verdict{Kind: expr.VerdictAccept})},
		&nftables.Rule{Table: table, Chain: ch, Exprs: append(redirected(1),
			&expr.Verdict{Kind: expr.VerdictDrop})})
	return rules
}

// l4DportIs matches the transport protocol and its destination port.
func l4DportIs(proto byte, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{proto}},
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{byte(port >> 8), byte(port)}},
	}
}

func inUIDSet(name string) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeySKUID, Register: reg1}, &expr.Lookup{SourceRegister: reg1, SetName: name}}
}

// natRules: every DNS query (UDP and TCP port 53, to any address, either
// family) of a dns: proxy user goes to the proxy on 127.0.0.1:P or [::1]:P.
func natRules(ch *nftables.Chain, port uint16) []*nftables.Rule {
	var rules []*nftables.Rule
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		es := append(l4DportIs(proto, 53), inUIDSet(kProxyUsers)...)
		es = append(es, &expr.Immediate{Register: reg1, Data: []byte{byte(port >> 8), byte(port)}},
			&expr.Redir{RegisterProtoMin: reg1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED})
		rules = append(rules, &nftables.Rule{Table: table, Chain: ch, Exprs: es})
	}
	return rules
}

// Registers: NFT_REG_1 (1) is the 16 bytes of NFT_REG32_00..03 (8..11).
const (
	reg1   = 1
	reg32  = 8 // NFT_REG32_00
	rtnLoc = 2 // RTN_LOCAL
	ipv6RT = 43
	tcpMP  = 30 // TCP option kind: MPTCP

	ipsExpected  = 1 << 0 // IPS_EXPECTED: opened from a helper's expectation; its ct mark is its master's
	ipsConfirmed = 1 << 3 // IPS_CONFIRMED: the conntrack entry is in the table
	ipsSrcNAT    = 1 << 4 // IPS_SRC_NAT
	ipsDstNAT    = 1 << 5 // IPS_DST_NAT: the destination was rewritten (the proxy's redirect)
)

func ctStateIs(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: []byte{0, 0, 0, 0}},
	}
}

// openerIsOwn is `ct status & expected == 0 ct mark . meta skuid @owners`
// (`ct mark . meta skuid != @owners` with invert): the flow's opener,
// recorded in its conntrack mark, is (is not) the socket's uid. Whole 32-bit
// registers from NFT_REG32_00, so that nft prints the lookup (a sub-range
// of the ct label, the earlier encoding, is beyond nft's syntax: Debian 12's
// nft printed the rule without its lookup). A flow the kernel opened from a
// helper's expectation (FTP data) inherits its master's mark: its opener is
// not the mark's uid, so it is never "own" (restrictedRules accepts it in
// the reply direction on its own rule).
func openerIsOwn(invert bool) []expr.Any {
	var es []expr.Any
	if !invert {
		es = ctStatusIs(ipsExpected, false)
	}
	return append(es,
		&expr.Ct{Register: reg32, Key: expr.CtKeyMARK},
		&expr.Meta{Key: expr.MetaKeySKUID, Register: reg32 + 1},
		&expr.Lookup{SourceRegister: reg32, SetName: kOwners, Invert: invert},
	)
}

// ctStatusIs: ct status & bits != 0 (== 0 when !set).
func ctStatusIs(bits uint32, set bool) []expr.Any {
	op := expr.CmpOpEq
	if set {
		op = expr.CmpOpNeq
	}
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: op, Register: reg1, Data: []byte{0, 0, 0, 0}},
	}
}

func restrictedRules(ch *nftables.Chain, proxyPort uint16) []*nftables.Rule {
	rule := func(es ...expr.Any) *nftables.Rule { return &nftables.Rule{Table: table, Chain: ch, Exprs: es} }
	deny := &expr.Verdict{Kind: expr.VerdictGoto, Chain: chainDeny}
	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	nfproto := func(p byte) []expr.Any {
		return []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1}, &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{p}}}
	}
	var rules []*nftables.Rule
	// Record the opener of every new flow: its uid in the conntrack mark
	// (docs/security.md, defence 1, says why the mark and not a label).
	// Only on a flow's very first packet (not yet confirmed): conntrack
	// calls a confirmed flow that has had no answer NEW too, and labelling
	// it would let the user adopt another process's flow; a rejected first
	// packet takes its unconfirmed entry with it.
	rules = append(rules, rule(append(ctStateIs(expr.CtStateBitNEW),
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsConfirmed), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{0, 0, 0, 0}},
		&expr.Meta{Key: expr.MetaKeySKUID, Register: reg1},
		&expr.Ct{Key: expr.CtKeyMARK, Register: reg1, SourceRegister: true})...))
	// dns: proxy: every query is redirected to the proxy in the nat chain,
	// so a packet to port 53 here is one that was not: a flow opened
	// before the allowlist switched to the proxy (conntrack keeps its old
	// destination), or one the redirect missed. Before the established
	// rules, which would carry such a flow on.
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		rules = append(rules, rule(append(append(l4DportIs(proto, 53), inUIDSet(kProxyUsers)...), deny)...))
	}
	// Source routing: the destination in the header is only the first hop.
	rules = append(rules, rule(append(nfproto(unix.NFPROTO_IPV6),
		&expr.Exthdr{Op: expr.ExthdrOpIpv6, Type: ipv6RT, Offset: 0, Len: 1, Flags: unix.NFT_EXTHDR_F_PRESENT, DestRegister: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{1}},
		deny)...))
	rules = append(rules, rule(append(nfproto(unix.NFPROTO_IPV4),
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 0, Len: 1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 1, Mask: []byte{0x0f}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: []byte{5}},
		deny)...))
	// MPTCP: a connection's further subflows are opened by kernel sockets
	// that carry no uid, so they would escape the rules. The MPTCP option of
	// a protected user's SYN (and SYN-ACK) gets the private-use subtype 0xf,
	// which peers ignore (RFC 8684 3, Linux mptcp_parse_option): the peer
	// answers as plain TCP and the socket falls back to TCP (RFC 8684 3.7),
	// so the kernel never opens a subflow for it. The kernel lets a rule
	// write an option's data, not its kind or length.
	mp := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 1, Mask: []byte{0x02}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: []byte{0}},
		&expr.Exthdr{Op: expr.ExthdrOpTcpopt, Type: tcpMP, Offset: 0, Len: 1, Flags: unix.NFT_EXTHDR_F_PRESENT, DestRegister: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{1}},
		&expr.Immediate{Register: reg1, Data: []byte{0xf0, 0x00}},
		&expr.Exthdr{Op: expr.ExthdrOpTcpopt, Type: tcpMP, Offset: 2, Len: 2, SourceRegister: reg1},
	}
	rules = append(rules, rule(mp...))
	// Established and related: in the original direction only on flows the
	// same uid opened; in the reply direction only on flows another uid (or
	// a peer outside) opened: the user answers whoever connected to it, but
	// never carries a reply on a flow it opened itself, which only a forged
	// source address makes useful.
	rules = append(rules, rule(append(append(ctStateIs(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED),
		&expr.Ct{Register: reg1, Key: expr.CtKeyDIRECTION},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{0}}),
		append(openerIsOwn(false), accept)...)...))
	rules = append(rules, rule(append(append(ctStateIs(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED),
		&expr.Ct{Register: reg1, Key: expr.CtKeyDIRECTION},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{1}}),
		append(append(openerIsOwn(true), sourceLocal()...), accept)...)...))
	rules = append(rules, rule(append(append(ctStateIs(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED),
		&expr.Ct{Register: reg1, Key: expr.CtKeyDIRECTION},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{1}}),
		append(append(ctStatusIs(ipsExpected, true), sourceLocal()...), accept)...)...))
	// ... and on its own flows when the reply goes to a local address: a
	// service talking to itself over loopback.
	rules = append(rules, rule(append(append(replyToLocal(), sourceLocal()...), accept)...))
	// A source address that is not local: a FREEBIND or TRANSPARENT socket
	// forging a flow. Never a protected user's business. After the
	// established rules, which spares a flow's original direction a route
	// lookup: a flow the user opened passed this rule with its first
	// packet. The reply direction has its own check (sourceLocal in each
	// rule above): the reply tuple of a forwarded or DNATed flow starts at
	// an address that is not the host's, which an IPV6_FREEBIND socket can
	// bind and so speak to whoever opened that flow.
	rules = append(rules, rule(append(sourceNotLocal(), deny)...))
	// The proxy's redirect: only a query the nat chain rewrote, to the
	// proxy's port on a local address, on a flow this uid opened (the
	// proxy tells the asker by the flow's conntrack mark: a socket of another user
	// that got the source port of a flow still in conntrack joins that
	// flow, and would be answered as its opener). Sent directly to the
	// port, a packet is judged like any other destination.
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		es := append(l4DportIs(proto, proxyPort), inUIDSet(kProxyUsers)...)
		es = append(es, openerIsOwn(false)...)
		es = append(es, &expr.Ct{Register: reg1, Key: expr.CtKeySTATUS},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: []byte{0, 0, 0, 0}},
			&expr.Fib{Register: reg1, ResultADDRTYPE: true, FlagDADDR: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(rtnLoc)},
			accept)
		rules = append(rules, rule(es...))
	}
	for _, ks := range append(allKernelSets(), proxyKernelSets()...) {
		var es []expr.Any
		if ks.DNS {
			es = append(es, &expr.Meta{Key: expr.MetaKeySKUID, Register: reg1},
				&expr.Lookup{SourceRegister: reg1, SetName: kDNSUsers})
		}
		es = append(es, lookupExprs(ks)...)
		rules = append(rules, rule(append(es, accept)...))
	}
	rules = append(rules, rule(deny))
	return rules
}

// replyToLocal matches an established or related packet in the reply
// direction going to a local address.
func replyToLocal() []expr.Any {
	return append(ctStateIs(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED),
		&expr.Ct{Register: reg1, Key: expr.CtKeyDIRECTION},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{1}},
		&expr.Fib{Register: reg1, ResultADDRTYPE: true, FlagDADDR: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(rtnLoc)})
}

// sourceLocal matches a packet whose source address is the host's.
func sourceLocal() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: reg1, ResultADDRTYPE: true, FlagSADDR: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(rtnLoc)},
	}
}

// sourceNotLocal matches a packet whose source address is not the host's.
func sourceNotLocal() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: reg1, ResultADDRTYPE: true, FlagSADDR: true},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(rtnLoc)},
	}
}

// lookupExprs loads [meta skuid .] meta l4proto . ip[6] daddr . th dport into
// registers and looks the concatenation up in the kernel set.
func lookupExprs(ks kernelSet) []expr.Any {
	nfproto, daddrOff, daddrLen := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4)
	if ks.V6 {
		nfproto, daddrOff, daddrLen = unix.NFPROTO_IPV6, 24, 16
	}
	r := uint32(reg32)
	var es []expr.Any
	es = append(es, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{nfproto}})
	start := r
	if !ks.DNS {
		es = append(es, &expr.Meta{Key: expr.MetaKeySKUID, Register: r})
		es = append(es, keyToNetworkOrder(ks, r)...)
		r++
	}
	es = append(es, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: r},
		&expr.Payload{DestRegister: r + 1, Base: expr.PayloadBaseNetworkHeader, Offset: daddrOff, Len: daddrLen},
		&expr.Payload{DestRegister: r + 1 + daddrLen/4, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: start, SetName: ks.name()})
	return es
}

// denyRules: count, log (rate-limited per uid), reject — TCP reset for TCP,
// ICMP administratively prohibited otherwise, so a denied connect fails at once.
func denyRules(ch *nftables.Chain, dl config.DenyLog) []*nftables.Rule {
	rule := func(es ...expr.Any) *nftables.Rule { return &nftables.Rule{Table: table, Chain: ch, Exprs: es} }
	inAudit := func(invert bool) []expr.Any {
		return []expr.Any{&expr.Meta{Key: expr.MetaKeySKUID, Register: reg1},
			&expr.Lookup{SourceRegister: reg1, SetName: kAudit, Invert: invert}}
	}
	rules := []*nftables.Rule{rule(
		&expr.Meta{Key: expr.MetaKeySKUID, Register: reg1},
		&expr.Dynset{SrcRegKey: reg1, SetName: kDenied, Operation: unix.NFT_DYNSET_OP_UPDATE, Exprs: []expr.Any{&expr.Counter{}}},
	)}
	// Logged alike, with a prefix that says which: the event's "audit"
	// field comes from what the kernel did, not from the configuration.
	if l := logExprs(dl, false); l != nil {
		rules = append(rules, rule(append(inAudit(true), l...)...), rule(append(inAudit(false), logExprs(dl, true)...)...))
	}
	// mode: audit: logged, counted, then let through.
	rules = append(rules, rule(append(inAudit(false), &expr.Verdict{Kind: expr.VerdictAccept})...))
	for _, r := range rejectExprs() {
		rules = append(rules, rule(r...))
	}
	return rules
}

// rejectExprs are the two rejecting rules that end a deny chain: a TCP
// reset for TCP, ICMP administratively prohibited otherwise, so that a
// denied connect fails at once.
func rejectExprs() [][]expr.Any {
	return [][]expr.Any{
		{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}},
		{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED}},
	}
}

func limitUnit(u string) expr.LimitTime {
	switch u {
	case "minute":
		return expr.LimitTimeMinute
	case "hour":
		return expr.LimitTimeHour
	case "day":
		return expr.LimitTimeDay
	}
	return expr.LimitTimeSecond
}

// logExprs is the deny log statement, limited per uid by a meter (a dynamic
// set with a limit per element), so one noisy user cannot silence the others.
func logExprs(dl config.DenyLog, audit bool) []expr.Any {
	lim := &expr.Limit{Type: expr.LimitTypePkts, Rate: dl.Rate.Count, Unit: limitUnit(dl.Rate.Unit), Burst: uint32(min(dl.Rate.Count, 1000))}
	meter := []expr.Any{
		&expr.Meta{Key: expr.MetaKeySKUID, Register: reg1},
		&expr.Dynset{SrcRegKey: reg1, SetName: kDenyLog, Operation: unix.NFT_DYNSET_OP_UPDATE, Exprs: []expr.Any{lim}},
	}
	prefix := []byte(LogPrefix(dl.Prefix))
	if audit {
		prefix = []byte(AuditPrefix(dl.Prefix))
	}
	switch dl.Mode {
	case config.LogNFLOG:
		return append(meter, &expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX, Group: dl.Group, Data: prefix})
	case config.LogKernel:
		return append(meter, &expr.Log{Key: 1<<unix.NFTA_LOG_LEVEL | 1<<unix.NFTA_LOG_PREFIX | 1<<unix.NFTA_LOG_FLAGS,
			Level: expr.LogLevelWarning, Flags: expr.LogFlagsUID, Data: prefix})
	}
	return nil
}

// keyOrder is the byte order of the uid (or unit key) in a set's elements:
// nft stores every field of a concatenated interval key in network order
// (the rule turns `meta skuid` around with a byteorder expression, see
// lookupExprs) and prints those sets' elements so; in host order there,
// Debian 12's nft printed uid 4001 as 2702114816.
func keyOrder(ks kernelSet) binaryutil.ByteOrder {
	if ks.Range {
		return binaryutil.BigEndian
	}
	return binaryutil.NativeEndian
}

// keyToNetworkOrder turns the 4-byte uid or unit key in register r into
// network order where the set ks keeps it so (keyOrder).
func keyToNetworkOrder(ks kernelSet, r uint32) []expr.Any {
	if !ks.Range {
		return nil
	}
	return []expr.Any{&expr.Byteorder{SourceRegister: r, DestRegister: r, Op: expr.ByteorderHton, Len: 4, Size: 4}}
}

// encode writes one end of an element's key: [uid .] proto . addr . port,
// each field padded to 4 bytes as nftables concatenations are.
func encode(ks kernelSet, uid uint32, e Element, end bool) []byte {
	a, p := e.AddrFrom, e.PortFrom
	if end {
		a, p = e.AddrTo, e.PortTo
	}
	b := make([]byte, 0, 28)
	if !ks.DNS {
		b = append(b, keyOrder(ks).PutUint32(uid)...)
	}
	b = append(b, byte(e.Proto), 0, 0, 0)
	b = append(b, a.AsSlice()...)
	return append(b, byte(p>>8), byte(p), 0, 0)
}

func decode(ks kernelSet, key, keyEnd []byte) (uint32, Element, error) {
	var uid uint32
	if !ks.DNS {
		if len(key) < 4 || len(keyEnd) < 4 {
			return 0, Element{}, fmt.Errorf("key too short")
		}
		uid = keyOrder(ks).Uint32(key[:4])
		if uid != keyOrder(ks).Uint32(keyEnd[:4]) {
			return 0, Element{}, fmt.Errorf("range over several uids")
		}
		key, keyEnd = key[4:], keyEnd[4:]
	}
	if len(key) != len(keyEnd) || (len(key) != 12 && len(key) != 24) {
		return 0, Element{}, fmt.Errorf("unexpected key length %d/%d", len(key), len(keyEnd))
	}
	n := len(key) - 8
	from, _ := netip.AddrFromSlice(key[4 : 4+n])
	to, _ := netip.AddrFromSlice(keyEnd[4 : 4+n])
	return uid, Element{
		Proto: config.Proto(key[0]), AddrFrom: from, AddrTo: to,
		PortFrom: uint16(key[4+n])<<8 | uint16(key[5+n]),
		PortTo:   uint16(keyEnd[4+n])<<8 | uint16(keyEnd[5+n]),
	}, nil
}

func toSetElements(ks kernelSet, es []keyed) []nftables.SetElement {
	out := make([]nftables.SetElement, len(es))
	now := time.Now()
	for i, k := range es {
		out[i] = nftables.SetElement{Key: encode(ks, k.uid, k.e, false), Timeout: kernelTimeout(k.until, now)}
		if ks.Range {
			out[i].KeyEnd = encode(ks, k.uid, k.e, true)
		}
	}
	return out
}

func addElements(c *nftables.Conn, s *nftables.Set, ks kernelSet, es []keyed) error {
	for i := 0; i < len(es); i += chunk {
		if err := c.SetAddElements(s, toSetElements(ks, es[i:min(i+chunk, len(es))])); err != nil {
			return fmt.Errorf("add %d elements to %s: %w", len(es), s.Name, err)
		}
	}
	return nil
}

// kernelTimeout is the timeout of an element that ends at until (zero:
// none): a whole number of milliseconds, at least one (0 would mean no
// timeout, forever).
func kernelTimeout(until, now time.Time) time.Duration {
	if until.IsZero() {
		return 0
	}
	return max(until.Sub(now).Round(time.Millisecond), time.Millisecond)
}

// guard adds the elements to delete that had a lifetime with a timeout of
// one millisecond first (a no-op where they are there), so that deleting
// one whose timeout the kernel already ran out does not fail the whole
// transaction with ENOENT. Other deletions must find their element: a
// missing one is drift, and fails the delta.
func guard(es []keyed) []keyed {
	var out []keyed
	for _, k := range es {
		if !k.until.IsZero() {
			out = append(out, keyed{uid: k.uid, e: k.e, until: time.Now().Add(time.Millisecond)})
		}
	}
	return out
}

// hadLifetime marks, among elements to delete, one that had a lifetime (its
// value does not matter: guard gives it a millisecond).
var hadLifetime = time.Unix(1, 0)

// untimed strips the lifetimes of elements to delete (a deletion carries
// no timeout).
func untimed(es []keyed) []keyed {
	out := make([]keyed, len(es))
	for i, k := range es {
		out[i] = keyed{uid: k.uid, e: k.e}
	}
	return out
}

// ApplyDelta implements Kernel: deletions first, so that an element replaced
// by an overlapping one never collides, then additions and renewals; one
// transaction. p is the plan the delta leads to (it maps allowlists to uids).
// A renewal is an addition where adding renews a timeout (Linux 6.10 and
// later, probed once); elsewhere it is a deletion and an addition.
func (k *Netlink) ApplyDelta(p Plan, d Delta) error {
	if len(d) == 0 {
		return nil
	}
	uidOf := uids(p)
	k.own.mu.Lock()
	defer k.own.mu.Unlock()
	renews := true
	for _, sd := range d {
		if len(sd.Renew) > 0 {
			ok, err := k.addRenewsLocked()
			if err != nil {
				return err
			}
			renews = ok
			break
		}
	}
	adds, dels := map[string][]Element{}, map[string][]Element{}
	addUntil, delEnding := map[string][]time.Time{}, map[string][]time.Time{}
	for name, sd := range d {
		adds[name], dels[name] = sd.Add, sd.Del
		addUntil[name] = sd.AddUntil
		if sd.DelEnding != nil {
			// placeElements carries lifetimes; a deletion needs only
			// whether there was one (guard): hadLifetime.
			delEnding[name] = make([]time.Time, len(sd.Del))
			for i, e := range sd.DelEnding {
				if e {
					delEnding[name][i] = hadLifetime
				}
			}
		}
		if len(sd.Renew) > 0 {
			adds[name] = append(append([]Element(nil), sd.Add...), sd.Renew...)
			u := sd.AddUntil
			if u == nil {
				u = make([]time.Time, len(sd.Add))
			}
			addUntil[name] = append(append([]time.Time(nil), u...), sd.RenewUntil...)
			if !renews {
				dels[name] = append(append([]Element(nil), sd.Del...), sd.Renew...)
				e := delEnding[name]
				if e == nil {
					e = make([]time.Time, len(sd.Del))
				}
				for range sd.Renew {
					e = append(e, hadLifetime)
				}
				delEnding[name] = e
			}
		}
	}
	add, err := placeElements(adds, addUntil, uidOf)
	if err != nil {
		return fmt.Errorf("build delta: %w", err)
	}
	del, err := placeElements(dels, delEnding, uidOf)
	if err != nil {
		return fmt.Errorf("build delta: %w", err)
	}
	c, _, err := k.writer()
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	for _, ks := range everyKernelSet() {
		es := del[ks]
		for i := 0; i < len(es); i += chunk {
			part := es[i:min(i+chunk, len(es))]
			if g := guard(part); len(g) > 0 {
				if err := c.SetAddElements(ks.nft(), toSetElements(ks, g)); err != nil {
					k.dropIf(c)
					return fmt.Errorf("build delta: delete from %s: %w", ks.name(), err)
				}
			}
			if err := c.SetDeleteElements(ks.nft(), toSetElements(ks, untimed(part))); err != nil {
				k.dropIf(c)
				return fmt.Errorf("build delta: delete from %s: %w", ks.name(), err)
			}
		}
	}
	for _, ks := range everyKernelSet() {
		if err := addElements(c, ks.nft(), ks, add[ks]); err != nil {
			k.dropIf(c)
			return fmt.Errorf("build delta: %w", err)
		}
	}
	if err := c.Flush(); err != nil {
		k.dropIf(c)
		return k.unknownOutcome(p, fmt.Errorf("apply delta (%d elements): %w", d.Elements(), err))
	}
	return nil
}

// Remove implements Kernel. It deletes the table through the owning socket
// when this Netlink owns it, through a fresh one otherwise: that works on
// an unowned or orphaned table (a stopped daemon's), and fails with EPERM
// on a table that another running process owns.
func (k *Netlink) Remove() error {
	k.own.mu.Lock()
	defer k.own.mu.Unlock()
	c := k.own.conn
	if c == nil {
		var err error
		if c, err = k.conn(); err != nil {
			return fmt.Errorf("open netlink: %w", err)
		}
	}
	c.AddTable(helperTable) // the NFTSet= table (nftset_linux.go), if any, goes too
	c.DelTable(helperTable)
	c.DelTable(table)
	err := c.Flush()
	if err != nil {
		k.dropIf(c)
	}
	switch {
	case err == nil, errors.Is(err, unix.ENOENT):
		return nil
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("delete table inet %s: %w (another running process owns the table, or CAP_NET_ADMIN is missing)", TableName, err)
	}
	return fmt.Errorf("delete table inet %s: %w", TableName, err)
}

// existing opens a connection and finds the table, or returns ErrNoTable.
func (k *Netlink) existing() (*nftables.Conn, *nftables.Table, error) {
	c, err := k.conn()
	if err != nil {
		return nil, nil, err
	}
	t, err := c.ListTableOfFamily(TableName, nftables.TableFamilyINet)
	if err != nil || t == nil {
		if err != nil && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)) {
			return nil, nil, fmt.Errorf("read table inet %s: %w (needs CAP_NET_ADMIN)", TableName, err)
		}
		return nil, nil, ErrNoTable
	}
	return c, t, nil
}

// ReadSets reads back every allowlist's and the resolvers' elements through
// netlink, under their logical names (SetName4, SetName6, DNSSet4, DNSSet6).
// Elements keyed by a uid that the users set does not name are returned
// under "uid:N", so that a comparison with a plan reports them. A missing
// table gives ErrNoTable.
func (k *Netlink) ReadSets() (map[string][]Element, error) {
	out, _, err := k.readSets()
	return out, err
}

// ReadLifetimes implements LifetimeReader.
func (k *Netlink) ReadLifetimes() (map[string]map[Element]time.Duration, error) {
	_, left, err := k.readSets()
	return left, err
}

// readSets reads every plan element the kernel holds, by logical set, and
// the time left of those that carry a timeout.
func (k *Netlink) readSets() (map[string][]Element, map[string]map[Element]time.Duration, error) {
	c, t, users, err := k.existingUsers()
	if err != nil {
		return nil, nil, err
	}
	units := readUnitNames(c, t)
	out := map[string][]Element{}
	left := map[string]map[Element]time.Duration{}
	for _, ks := range everyKernelSet() {
		s, err := c.GetSetByName(t, ks.name())
		if err != nil {
			continue // reported by Verify as a missing kernel set
		}
		raw, err := c.GetSetElements(s)
		if err != nil {
			return nil, nil, fmt.Errorf("list elements of %s: %w", s.Name, err)
		}
		for _, r := range raw {
			if r.IntervalEnd {
				continue
			}
			end := r.KeyEnd
			if len(end) == 0 {
				end = r.Key // hash set: exact elements
			}
			uid, e, err := decode(ks, r.Key, end)
			if err != nil {
				return nil, nil, fmt.Errorf("set %s: %w", s.Name, err)
			}
			var name string
			switch {
			case ks.Unit && units[uid] != "":
				name = SetID{Allowlist: units[uid], V6: ks.V6, Unit: true}.Name()
			case ks.Unit:
				name = fmt.Sprintf("unit:%d", uid)
			case ks.DNS:
				name = SetID{V6: ks.V6}.Name()
			case users[uid] != "":
				name = SetID{Allowlist: users[uid], V6: ks.V6}.Name()
			default:
				name = fmt.Sprintf("uid:%d", uid)
			}
			out[name] = append(out[name], e)
			if r.Timeout > 0 {
				if left[name] == nil {
					left[name] = map[Element]time.Duration{}
				}
				left[name][e] = r.Expires
			}
		}
	}
	for _, es := range out {
		sortElements(es)
	}
	return out, left, nil
}

// existingUsers is existing, with the users set read.
func (k *Netlink) existingUsers() (*nftables.Conn, *nftables.Table, map[uint32]string, error) {
	c, t, err := k.existing()
	if err != nil {
		return nil, nil, nil, err
	}
	users, err := readUsers(c, t)
	if err != nil {
		return nil, nil, nil, err
	}
	return c, t, users, nil
}

// setElements reads the elements of one set of the table.
func setElements(c *nftables.Conn, t *nftables.Table, name string) ([]nftables.SetElement, error) {
	s, err := c.GetSetByName(t, name)
	if err != nil {
		return nil, fmt.Errorf("set %s: %w", name, err)
	}
	raw, err := c.GetSetElements(s)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", name, err)
	}
	return raw, nil
}

func readUsers(c *nftables.Conn, t *nftables.Table) (map[uint32]string, error) {
	raw, err := setElements(c, t, kUsers)
	if err != nil {
		return nil, err
	}
	out := map[uint32]string{}
	for _, r := range raw {
		if len(r.Key) == 4 {
			out[binaryutil.NativeEndian.Uint32(r.Key)] = r.Comment
		}
	}
	return out, nil
}

// ReadUsers reads back the protected uids and the allowlist that restricts
// each (uid → allowlist name).
func (k *Netlink) ReadUsers() (map[uint32]string, error) {
	c, t, err := k.existing()
	if err != nil {
		return nil, err
	}
	return readUsers(c, t)
}

// ReadAudited returns the uids whose allowlists are in audit mode in the
// kernel: their would-be denies are logged, then accepted.
func (k *Netlink) ReadAudited() (map[uint32]bool, error) {
	c, t, err := k.existing()
	if err != nil {
		return nil, err
	}
	return readUIDSet(c, t, kAudit)
}

func readUIDSet(c *nftables.Conn, t *nftables.Table, name string) (map[uint32]bool, error) {
	raw, err := setElements(c, t, name)
	if err != nil {
		return nil, err
	}
	out := map[uint32]bool{}
	for _, r := range raw {
		switch len(r.Key) {
		case 4:
			out[binaryutil.NativeEndian.Uint32(r.Key)] = true
		case 8: // owners: (u . u); a pair of two different uids is not egressd's
			a, b := binaryutil.NativeEndian.Uint32(r.Key[:4]), binaryutil.NativeEndian.Uint32(r.Key[4:])
			if a == b {
				out[a] = true
			} else {
				out[^uint32(0)] = true
			}
		}
	}
	return out, nil
}

// ErrNoTable says the table inet egressd does not exist.
var ErrNoTable = errors.New("table inet " + TableName + " does not exist")

// ReadDenyCounters returns, per allowlist, the packets the deny chain has
// counted for its uid since the table was last rebuilt.
func (k *Netlink) ReadDenyCounters() (map[string]uint64, error) {
	c, t, users, err := k.existingUsers()
	if err != nil {
		return nil, err
	}
	raw, err := setElements(c, t, kDenied)
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for name := range invert(users) {
		out[name] = 0
	}
	for _, r := range raw {
		if len(r.Key) != 4 || r.Counter == nil {
			continue
		}
		if name := users[binaryutil.NativeEndian.Uint32(r.Key)]; name != "" {
			out[name] += r.Counter.Packets
		}
	}
	addUnitCounters(c, t, out)
	return out, nil
}

func invert(m map[uint32]string) map[string]uint32 {
	out := make(map[string]uint32, len(m))
	for k, v := range m {
		out[v] = k
	}
	return out
}
