//go:build linux

package ruleset

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/phase"
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
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
	// own: the table's ownership and the socket that writes (owner_linux.go).
	own owner
	// ports: the writing sockets' port ids, by which the monitor knows
	// egressd's own transactions (monitor_linux.go).
	ports ownPorts
	// mon: what the monitor saw (monitor_linux.go, CaughtUp).
	mon monitorState
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

// nft is the kernel set's netlink declaration (the layout's, rules.go).
func (s kernelSet) nft() *nftables.Set { return elementSet(s, "", nil, "").Kernel }

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
	endRead := phase.Start("kernel_read")
	defer func() { endRead() }()
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
	endRead()
	endRead = func() {}
	c.AddTable(&nftables.Table{Family: table.Family, Name: table.Name, Flags: have})
	c.DelTable(table)
	c.AddTable(&nftables.Table{Family: table.Family, Name: table.Name, Flags: flags})
	if err := build(c, p, carry); err != nil {
		k.dropIf(c)
		return fmt.Errorf("build full ruleset: %w", err) // c is dropped unflushed
	}
	endFlush := phase.Start("kernel")
	err = c.Flush()
	endFlush()
	if err != nil {
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

// build adds the plan's table to c: the chains first (a verdict map's
// elements and rules jump to them), then the sets with their elements, then
// the rules. carry are the DNS proxy's elements to keep across a rebuild
// (those of uids with dns: proxy in p).
func build(c *nftables.Conn, p Plan, carry []ProxyElement) error {
	endLayout := phase.Start("layout")
	t, err := layout(p, carry)
	endLayout()
	if err != nil {
		return err
	}
	endEncode := phase.Start("encode")
	err = encodeTable(c, t, time.Now())
	endEncode()
	if err != nil {
		return err
	}
	return buildHelper(c, p)
}

// encodeTable adds the table's objects to c (the netlink encoder).
func encodeTable(c *nftables.Conn, t Table, now time.Time) error {
	chains := make([]*nftables.Chain, len(t.Chains))
	for i, ch := range t.Chains {
		chains[i] = c.AddChain(ch.kernel())
	}
	for _, s := range t.Sets {
		if err := c.AddSet(s.Kernel, nil); err != nil {
			return fmt.Errorf("add set %s: %w", s.Name, err)
		}
		es := s.Elements(now)
		for i := 0; i < len(es); i += chunk {
			if err := c.SetAddElements(s.Kernel, es[i:min(i+chunk, len(es))]); err != nil {
				return fmt.Errorf("add %d elements to %s: %w", len(es), s.Name, err)
			}
		}
	}
	for i, ch := range t.Chains {
		for _, r := range ch.Rules {
			c.AddRule(&nftables.Rule{Table: table, Chain: chains[i], Exprs: r.Exprs()})
		}
	}
	return nil
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
	return toSetElementsAt(ks, es, time.Now())
}

// toSetElementsAt encodes elements with the timeouts they have left at now.
func toSetElementsAt(ks kernelSet, es []keyed, now time.Time) []nftables.SetElement {
	out := make([]nftables.SetElement, len(es))
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
	add, del, err := deltaElements(p, d, renews)
	if err != nil {
		return err
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

// deltaElements places a delta's elements in kernel sets: what to delete
// (with whether each had a lifetime, for guard) and what to add (with its
// lifetime). A renewal is an addition where adding renews a timeout
// (renews), a deletion and an addition elsewhere.
func deltaElements(p Plan, d Delta, renews bool) (add, del map[kernelSet][]keyed, err error) {
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
	if add, err = placeElements(adds, addUntil, subjects(p)); err != nil {
		return nil, nil, fmt.Errorf("build delta: %w", err)
	}
	del, err = placeElements(dels, delEnding, subjects(p))
	if err != nil {
		return nil, nil, fmt.Errorf("build delta: %w", err)
	}
	return add, del, nil
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
			case ks.Kind == SubjectUnit && units[uid] != "":
				name = SetID{Allowlist: units[uid], V6: ks.V6, Kind: SubjectUnit}.Name()
			case ks.Kind == SubjectUnit:
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
			if r.Val != nil && string(r.Val) != string(r.Key) {
				out[^uint32(0)] = true // uidmarks: u : u; another value is not egressd's
				continue
			}
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
