//go:build linux

package ruleset

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"syscall"

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

var (
	keyType4 = nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeIPAddr, nftables.TypeInetService)
	keyType6 = nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeIP6Addr, nftables.TypeInetService)
)

// Netlink is the Kernel that speaks nf_tables over netlink.
type Netlink struct {
	// NetNSFd, when non-zero, is the network namespace to act in (tests).
	NetNSFd int
}

var table = &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}

// conn opens a fresh connection per transaction. A connection whose batch
// failed to build is dropped, never flushed (google/nftables v0.3.0 would
// apply the part that did build).
func (k *Netlink) conn() (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.WithSockOptions(bigBuffers)}
	if k.NetNSFd != 0 {
		opts = append(opts, nftables.WithNetNSFd(k.NetNSFd))
	}
	return nftables.New(opts...)
}

// bigBuffers lets one batch carry 100,000 elements, as nft itself does:
// netlink refuses a message larger than the socket's send buffer.
func bigBuffers(c *netlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 64<<20)
		if serr == nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
		}
	})
	if err == nil && serr != nil && !errors.Is(serr, syscall.EPERM) {
		err = serr
	}
	return err
}

// Each logical set of a plan is two kernel sets: a hash set for exact
// elements (one address, one port: DNS answers, literal addresses) and a
// concatenated interval set (pipapo) for CIDRs and port ranges. Inserting
// into a pipapo set costs time proportional to its size, so 10,000 DNS
// answers in one interval set take a second of kernel time; in a hash set
// they take milliseconds. The elements of a plan's set never overlap
// (Normalize), so the split is a partition and lookups try both.
func set(name string, v6 bool) *nftables.Set {
	kt := keyType4
	if v6 {
		kt = keyType6
	}
	return &nftables.Set{Table: table, Name: name, KeyType: kt, Interval: true, Concatenation: true}
}

// ExactPrefix names the hash set that holds a logical set's exact elements.
const ExactPrefix = "exact_"

func exactSet(name string, v6 bool) *nftables.Set {
	kt := keyType4
	if v6 {
		kt = keyType6
	}
	return &nftables.Set{Table: table, Name: ExactPrefix + name, KeyType: kt}
}

func isExact(e Element) bool { return e.AddrFrom == e.AddrTo && e.PortFrom == e.PortTo }

// split partitions elements into exact ones and ranges.
func split(es []Element) (exact, ranges []Element) {
	for _, e := range es {
		if isExact(e) {
			exact = append(exact, e)
		} else {
			ranges = append(ranges, e)
		}
	}
	return exact, ranges
}

func setIs6(name string) bool {
	switch name {
	case DNSSet6:
		return true
	case DNSSet4:
		return false
	}
	return strings.HasPrefix(strings.TrimPrefix(name, ExactPrefix), "allow6")
}

// ApplyFull implements Kernel.
func (k *Netlink) ApplyFull(p Plan) error {
	c, err := k.conn()
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	// Add (a no-op if it exists), delete, add: one transaction replaces the
	// table whether or not it existed.
	c.AddTable(table)
	c.DelTable(table)
	c.AddTable(table)
	if err := build(c, p); err != nil {
		return fmt.Errorf("build full ruleset: %w", err) // c is dropped unflushed
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("apply full ruleset (%d elements): %w", p.Elements(), err)
	}
	return nil
}

func build(c *nftables.Conn, p Plan) error {
	out := c.AddChain(outputChain())
	sets := map[string]*nftables.Set{}
	for name, elems := range p.Sets {
		exact, ranges := split(elems)
		for _, part := range []struct {
			s  *nftables.Set
			es []Element
		}{{exactSet(name, setIs6(name)), exact}, {set(name, setIs6(name)), ranges}} {
			if err := c.AddSet(part.s, nil); err != nil {
				return fmt.Errorf("add set %s: %w", part.s.Name, err)
			}
			sets[part.s.Name] = part.s
			if err := addElements(c, part.s, part.es); err != nil {
				return err
			}
		}
	}
	users := usersMap()
	if err := c.AddSet(users, nil); err != nil {
		return fmt.Errorf("add users map: %w", err)
	}
	var userElems []nftables.SetElement
	for _, ch := range p.Chains {
		chain := c.AddChain(&nftables.Chain{Name: ChainName(ch.Allowlist), Table: table})
		for _, r := range allowlistRules(chain, ch, sets, p.DenyLog) {
			c.AddRule(r)
		}
		userElems = append(userElems, nftables.SetElement{
			Key:         binaryutil.NativeEndian.PutUint32(ch.UID),
			VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: chain.Name},
		})
	}
	for i := 0; i < len(userElems); i += chunk {
		if err := c.SetAddElements(users, userElems[i:min(i+chunk, len(userElems))]); err != nil {
			return fmt.Errorf("add users: %w", err)
		}
	}
	for _, r := range outputRules(out, users) {
		c.AddRule(r)
	}
	return nil
}

func usersMap() *nftables.Set {
	return &nftables.Set{Table: table, Name: UsersMap, KeyType: nftables.TypeUID, DataType: nftables.TypeVerdict, IsMap: true, KeyByteOrder: binaryutil.NativeEndian}
}

func outputChain() *nftables.Chain {
	return &nftables.Chain{
		Name: "output", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter,
	}
}

// outputRules are the base chain's rules, in order.
func outputRules(out *nftables.Chain, users *nftables.Set) []*nftables.Rule {
	return []*nftables.Rule{
		// established,related first: replies to allowed connections, and the
		// packets of connections that were allowed when they started.
		{Table: table, Chain: out, Exprs: []expr.Any{
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
				Xor:  []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
			&expr.Verdict{Kind: expr.VerdictAccept},
		}},
		// meta skuid vmap @users: one lookup whatever the number of allowlists.
		{Table: table, Chain: out, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
			&expr.Lookup{SourceRegister: 1, SetName: users.Name, SetID: users.ID, DestRegister: 0, IsDestRegSet: true},
		}},
	}
}

// lookupExprs loads meta l4proto . ip[6] daddr . th dport into registers and
// looks the concatenation up in s.
func lookupExprs(s *nftables.Set, v6 bool) []expr.Any {
	nfproto, daddrOff, daddrLen, portReg := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4), uint32(10)
	if v6 {
		nfproto, daddrOff, daddrLen, portReg = unix.NFPROTO_IPV6, 24, 16, 13
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: daddrOff, Len: daddrLen},
		&expr.Payload{DestRegister: portReg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
	}
}

func allowlistRules(chain *nftables.Chain, ch ChainPlan, sets map[string]*nftables.Set, dl config.DenyLog) []*nftables.Rule {
	rule := func(es ...expr.Any) *nftables.Rule { return &nftables.Rule{Table: table, Chain: chain, Exprs: es} }
	accept := &expr.Verdict{Kind: expr.VerdictAccept}
	var rules []*nftables.Rule
	lookups := func(logical string, v6 bool) {
		rules = append(rules,
			rule(append(lookupExprs(sets[ExactPrefix+logical], v6), accept)...),
			rule(append(lookupExprs(sets[logical], v6), accept)...))
	}
	lookups(SetName4(ch.Allowlist), false)
	lookups(SetName6(ch.Allowlist), true)
	if ch.DNS {
		lookups(DNSSet4, false)
		lookups(DNSSet6, true)
	}
	if l := logExprs(dl, ch.Allowlist); l != nil {
		rules = append(rules, rule(l...))
	}
	// reject with tcp reset for TCP, icmpx admin-prohibited otherwise, so a
	// denied connect fails at once; the counters count every denied packet.
	rules = append(rules,
		rule(&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Counter{},
			&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}),
		rule(&expr.Counter{},
			&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED}))
	return rules
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

// logExprs is the rate-limited log statement placed right before the reject.
func logExprs(dl config.DenyLog, allowlist string) []expr.Any {
	lim := &expr.Limit{Type: expr.LimitTypePkts, Rate: dl.Rate.Count, Unit: limitUnit(dl.Rate.Unit), Burst: uint32(min(dl.Rate.Count, 1000))}
	prefix := []byte(LogPrefix(dl.Prefix, allowlist))
	switch dl.Mode {
	case config.LogNFLOG:
		return []expr.Any{lim, &expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX, Group: dl.Group, Data: prefix}}
	case config.LogKernel:
		return []expr.Any{lim, &expr.Log{Key: 1<<unix.NFTA_LOG_LEVEL | 1<<unix.NFTA_LOG_PREFIX, Level: expr.LogLevelWarning, Data: prefix}}
	}
	return nil
}

func encode(e Element, end bool) []byte {
	a, p := e.AddrFrom, e.PortFrom
	if end {
		a, p = e.AddrTo, e.PortTo
	}
	b := make([]byte, 0, 24)
	b = append(b, byte(e.Proto), 0, 0, 0)
	b = append(b, a.AsSlice()...)
	return append(b, byte(p>>8), byte(p), 0, 0)
}

func decode(key, keyEnd []byte) (Element, error) {
	if len(key) != len(keyEnd) || (len(key) != 12 && len(key) != 24) {
		return Element{}, fmt.Errorf("unexpected key length %d/%d", len(key), len(keyEnd))
	}
	n := len(key) - 8
	from, _ := netip.AddrFromSlice(key[4 : 4+n])
	to, _ := netip.AddrFromSlice(keyEnd[4 : 4+n])
	return Element{
		Proto: config.Proto(key[0]), AddrFrom: from, AddrTo: to,
		PortFrom: uint16(key[4+n])<<8 | uint16(key[5+n]),
		PortTo:   uint16(keyEnd[4+n])<<8 | uint16(keyEnd[5+n]),
	}, nil
}

func toSetElements(es []Element) []nftables.SetElement {
	out := make([]nftables.SetElement, len(es))
	for i, e := range es {
		out[i] = nftables.SetElement{Key: encode(e, false)}
		if !isExact(e) {
			out[i].KeyEnd = encode(e, true)
		}
	}
	return out
}

func addElements(c *nftables.Conn, s *nftables.Set, es []Element) error {
	for i := 0; i < len(es); i += chunk {
		if err := c.SetAddElements(s, toSetElements(es[i:min(i+chunk, len(es))])); err != nil {
			return fmt.Errorf("add %d elements to %s: %w", len(es), s.Name, err)
		}
	}
	return nil
}

// ApplyDelta implements Kernel: deletions first, so that an element replaced
// by an overlapping one never collides, then additions; one transaction.
func (k *Netlink) ApplyDelta(d Delta) error {
	if len(d) == 0 {
		return nil
	}
	c, err := k.conn()
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	for name, sd := range d {
		exact, ranges := split(sd.Del)
		for _, part := range []struct {
			s  *nftables.Set
			es []Element
		}{{exactSet(name, setIs6(name)), exact}, {set(name, setIs6(name)), ranges}} {
			for i := 0; i < len(part.es); i += chunk {
				if err := c.SetDeleteElements(part.s, toSetElements(part.es[i:min(i+chunk, len(part.es))])); err != nil {
					return fmt.Errorf("build delta: delete from %s: %w", part.s.Name, err)
				}
			}
		}
	}
	for name, sd := range d {
		exact, ranges := split(sd.Add)
		if err := addElements(c, exactSet(name, setIs6(name)), exact); err != nil {
			return fmt.Errorf("build delta: %w", err)
		}
		if err := addElements(c, set(name, setIs6(name)), ranges); err != nil {
			return fmt.Errorf("build delta: %w", err)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("apply delta (%d elements): %w", d.Elements(), err)
	}
	return nil
}

// Remove implements Kernel.
func (k *Netlink) Remove() error {
	c, err := k.conn()
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	c.AddTable(table) // makes the delete succeed whether or not the table exists
	c.DelTable(table)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("delete table inet %s: %w", TableName, err)
	}
	return nil
}

// existing opens a connection and finds the table, or returns ErrNoTable.
func (k *Netlink) existing() (*nftables.Conn, *nftables.Table, error) {
	c, err := k.conn()
	if err != nil {
		return nil, nil, err
	}
	t, err := c.ListTableOfFamily(TableName, nftables.TableFamilyINet)
	if err != nil || t == nil {
		return nil, nil, ErrNoTable
	}
	return c, t, nil
}

// ReadSets reads back every set of the table with its elements, through
// netlink. A missing table gives ErrNoTable.
func (k *Netlink) ReadSets() (map[string][]Element, error) {
	c, t, err := k.existing()
	if err != nil {
		return nil, err
	}
	sets, err := c.GetSets(t)
	if err != nil {
		return nil, fmt.Errorf("list sets: %w", err)
	}
	out := map[string][]Element{}
	for _, s := range sets {
		if s.IsMap {
			continue
		}
		raw, err := c.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("list elements of %s: %w", s.Name, err)
		}
		logical := strings.TrimPrefix(s.Name, ExactPrefix)
		es := out[logical]
		for _, r := range raw {
			end := r.KeyEnd
			if len(end) == 0 {
				end = r.Key // hash set: exact elements
			}
			e, err := decode(r.Key, end)
			if err != nil {
				return nil, fmt.Errorf("set %s: %w", s.Name, err)
			}
			es = append(es, e)
		}
		out[logical] = es
	}
	for _, es := range out {
		sortElements(es)
	}
	return out, nil
}

// ReadUsers reads back the uid → chain map.
func (k *Netlink) ReadUsers() (map[uint32]string, error) {
	c, t, err := k.existing()
	if err != nil {
		return nil, err
	}
	s, err := c.GetSetByName(t, UsersMap)
	if err != nil {
		return nil, fmt.Errorf("users map: %w", err)
	}
	raw, err := c.GetSetElements(s)
	if err != nil {
		return nil, err
	}
	out := map[uint32]string{}
	for _, r := range raw {
		if len(r.Key) == 4 {
			out[binaryutil.NativeEndian.Uint32(r.Key)] = verdictChain(r.Val)
		}
	}
	return out, nil
}

// verdictChain decodes the jump target from a verdict map element's data
// (google/nftables v0.3.0 leaves it as raw NFTA_VERDICT_* attributes).
func verdictChain(b []byte) string {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return ""
	}
	for ad.Next() {
		if ad.Type() == unix.NFTA_VERDICT_CHAIN {
			return ad.String()
		}
	}
	return ""
}

// ErrNoTable says the table inet egressd does not exist.
var ErrNoTable = errors.New("table inet " + TableName + " does not exist")

// ReadDenyCounters returns, per allowlist, the packets its reject rules have
// counted since the table was last rebuilt.
func (k *Netlink) ReadDenyCounters() (map[string]uint64, error) {
	c, t, err := k.existing()
	if err != nil {
		return nil, err
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	out := map[string]uint64{}
	for _, ch := range chains {
		if ch.Table.Name != TableName || !strings.HasPrefix(ch.Name, "allow_") {
			continue
		}
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return nil, fmt.Errorf("list rules of %s: %w", ch.Name, err)
		}
		var n uint64
		for _, r := range rules {
			for _, e := range r.Exprs {
				if ctr, ok := e.(*expr.Counter); ok {
					n += ctr.Packets
				}
			}
		}
		out[strings.TrimPrefix(ch.Name, "allow_")] = n
	}
	return out, nil
}
