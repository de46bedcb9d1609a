//go:build linux

package ruleset

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/egressd/egressd/config"
	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// foreign is another process's tool: a netlink socket of its own.
func (e *env) foreign(t *testing.T) *nftables.Conn {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(e.ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *env) flags(t *testing.T) uint32 {
	t.Helper()
	f, ok, err := e.k.tableFlags()
	if err != nil || !ok {
		t.Fatalf("table flags: present %v, %v", ok, err)
	}
	return f
}

// tryForeign runs one change of egressd's table from another socket and
// returns the kernel's answer.
func (e *env) tryForeign(t *testing.T, do func(c *nftables.Conn) error) error {
	t.Helper()
	c := e.foreign(t)
	if err := do(c); err != nil {
		return err
	}
	return c.Flush()
}

// The kernel refuses every change of an owned table from another socket,
// and `nft flush ruleset` leaves it in place: protected users stay
// restricted throughout, and the owner keeps full control.
func TestOwnedTableRefusesOthers(t *testing.T) {
	e := newEnv(t)
	e.serveTCP(t, "192.0.2.10:443")
	e.serveTCP(t, "192.0.2.20:7000")
	owned, why, err := e.k.Ownership()
	if err != nil || !owned {
		t.Fatalf("Ownership() = %v, %q, %v on a kernel with NFT_TABLE_F_PERSIST", owned, why, err)
	}
	p := basePlan()
	if err := e.k.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	if f := e.flags(t); f != ownedFlags {
		t.Fatalf("table flags %#x, want owner|persist %#x", f, ownedFlags)
	}
	tbl := &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}
	attempts := []struct {
		name string
		do   func(c *nftables.Conn) error
	}{
		{"delete table", func(c *nftables.Conn) error { c.DelTable(tbl); return nil }},
		{"flush chain", func(c *nftables.Conn) error {
			c.FlushChain(&nftables.Chain{Name: chainRestr, Table: tbl})
			return nil
		}},
		{"add element", func(c *nftables.Conn) error {
			ks := kernelSet{}
			return c.SetAddElements(ks.nft(), toSetElements(ks, []keyed{{uid: uidA, e: ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.20/32"), 7000, 7000)}}))
		}},
		{"take ownership", func(c *nftables.Conn) error {
			c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: TableName, Flags: ownedFlags})
			return nil
		}},
	}
	for _, a := range attempts {
		if err := e.tryForeign(t, a.do); !errors.Is(err, unix.EPERM) {
			t.Errorf("%s from another socket: %v, want EPERM", a.name, err)
		}
	}
	other := &Netlink{NetNSFd: e.ns.Fd()}
	defer other.Close()
	if err := other.Remove(); !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), "owns the table") {
		t.Errorf("Remove by another Netlink: %v, want EPERM saying another process owns the table", err)
	}
	// nft flush ruleset: the same message nft sends, every family.
	if err := e.tryForeign(t, func(c *nftables.Conn) error { c.FlushRuleset(); return nil }); err != nil {
		t.Fatalf("flush ruleset: %v", err)
	}
	// Reads work from any socket.
	if fs, err := other.Verify(p); err != nil || len(fs) != 0 {
		t.Fatalf("after the foreign attempts: findings %v, %v", fs, err)
	}
	mustRefuse(t, "uidA → 192.0.2.20:7000 after the foreign attempts", e.tcp(uidA, "192.0.2.20:7000"))
	mustAllow(t, "uidA → 192.0.2.10:443", e.tcp(uidA, "192.0.2.10:443"))

	// The owner: a delta, a failed delta (its socket is replaced, the table
	// taken over again), a rebuild; the table stays owned all along.
	p2 := basePlan()
	p2.Sets[SetName4("a")] = append(p2.Sets[SetName4("a")], ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.20/32"), 7000, 7000))
	sortElements(p2.Sets[SetName4("a")])
	if err := e.k.ApplyDelta(p2, Diff(p, p2)); err != nil {
		t.Fatal(err)
	}
	mustAllow(t, "after the owner's delta: uidA → 192.0.2.20:7000", e.tcp(uidA, "192.0.2.20:7000"))
	bad := Delta{SetName4("a"): {Del: []Element{ElementFor(config.TCP, netip.MustParsePrefix("203.0.113.99/32"), 1, 1)}}}
	if err := e.k.ApplyDelta(p2, bad); err == nil {
		t.Fatal("deleting a missing element succeeded")
	}
	if err := e.tryForeign(t, func(c *nftables.Conn) error { c.DelTable(tbl); return nil }); !errors.Is(err, unix.EPERM) {
		t.Errorf("after a failed transaction of the owner: foreign delete %v, want EPERM", err)
	}
	if err := e.k.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	if f := e.flags(t); f != ownedFlags {
		t.Fatalf("after a rebuild: table flags %#x, want %#x", f, ownedFlags)
	}
	mustRefuse(t, "after the rebuild: uidA → 192.0.2.20:7000", e.tcp(uidA, "192.0.2.20:7000"))
	if err := e.k.Remove(); err != nil {
		t.Fatalf("the owner's Remove: %v", err)
	}
	if _, err := other.ReadUsers(); !errors.Is(err, ErrNoTable) {
		t.Fatalf("after the owner's Remove: %v", err)
	}
}

// When the owner's socket closes (the daemon exits or is killed), the table
// stays and keeps enforcing (PERSIST), orphaned; the next daemon takes it
// over with its first full apply, and a stopped daemon's table can be
// removed (egressd remove).
func TestOwnedTableOutlivesOwner(t *testing.T) {
	e := newEnv(t)
	e.serveTCP(t, "192.0.2.20:7000")
	p := basePlan()
	first := &Netlink{NetNSFd: e.ns.Fd()}
	defer first.Close()
	if err := first.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if f := e.flags(t); f != tableFlagPersist {
		t.Fatalf("after the owner closed: flags %#x, want persist (orphaned) %#x", f, tableFlagPersist)
	}
	mustRefuse(t, "orphaned table: uidA → 192.0.2.20:7000", e.tcp(uidA, "192.0.2.20:7000"))
	if fs, err := e.k.Verify(p); err != nil || len(fs) != 0 {
		t.Fatalf("orphaned table: %v %v", fs, err)
	}
	// The next daemon.
	if err := e.k.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	if f := e.flags(t); f != ownedFlags {
		t.Fatalf("taken over: flags %#x, want %#x", f, ownedFlags)
	}
	if err := e.tryForeign(t, func(c *nftables.Conn) error {
		c.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: TableName})
		return nil
	}); !errors.Is(err, unix.EPERM) {
		t.Fatalf("taken-over table deleted by another socket: %v, want EPERM", err)
	}
	// Stopped: egressd remove deletes the orphan.
	e.k.Close()
	rm := &Netlink{NetNSFd: e.ns.Fd()}
	if err := rm.Remove(); err != nil {
		t.Fatalf("removing a stopped daemon's table: %v", err)
	}
	if _, err := rm.ReadUsers(); !errors.Is(err, ErrNoTable) {
		t.Fatalf("after Remove: %v", err)
	}
	if err := rm.Remove(); err != nil {
		t.Fatalf("removing a missing table: %v", err)
	}
	mustAllow(t, "after Remove: uidA → 192.0.2.20:7000", e.tcp(uidA, "192.0.2.20:7000"))
}

// A kernel without NFT_TABLE_F_PERSIST (played by a probe asking for an
// unknown flag, which every kernel refuses alike) gets today's unowned table,
// never OWNER alone, and says why. The forced mode does the same. Each
// replaces whatever table it finds: an owned daemon's orphan, or the unowned
// table of an older egressd that an owning one then takes over.
func TestUnownedFallback(t *testing.T) {
	e := newEnv(t)
	e.serveTCP(t, "192.0.2.20:7000")
	p := basePlan()
	old := &Netlink{NetNSFd: e.ns.Fd()}
	old.own.probeFlags = 1 << 31
	defer old.Close()
	owned, why, err := old.Ownership()
	if err != nil || owned || !strings.Contains(why, "Linux 6.9") {
		t.Fatalf("Ownership() on a kernel without PERSIST = %v, %q, %v", owned, why, err)
	}
	if err := old.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	if f := e.flags(t); f != 0 {
		t.Fatalf("unowned table: flags %#x, want 0", f)
	}
	mustRefuse(t, "unowned table: uidA → 192.0.2.20:7000", e.tcp(uidA, "192.0.2.20:7000"))
	// An owning egressd takes over an older one's table.
	if err := e.k.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	if f := e.flags(t); f != ownedFlags {
		t.Fatalf("after an unowned table: flags %#x, want %#x", f, ownedFlags)
	}
	e.k.Close()
	forced := &Netlink{NetNSFd: e.ns.Fd()}
	forced.own.unowned = true
	defer forced.Close()
	if err := forced.ApplyFull(p); err != nil {
		t.Fatalf("forced unowned over an orphan: %v", err)
	}
	if f := e.flags(t); f != 0 {
		t.Fatalf("forced unowned: flags %#x, want 0", f)
	}
	if owned, why, _ := forced.Ownership(); owned || !strings.Contains(why, "forced") {
		t.Fatalf("forced: Ownership() = %v, %q", owned, why)
	}
	// Unowned: another tool can remove it (what the restore answers).
	if err := e.tryForeign(t, func(c *nftables.Conn) error {
		c.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: TableName})
		return nil
	}); err != nil {
		t.Fatalf("unowned table: foreign delete %v", err)
	}
	if err := forced.Restore(p); err != nil {
		t.Fatal(err)
	}
	mustRefuse(t, "restored: uidA → 192.0.2.20:7000", e.tcp(uidA, "192.0.2.20:7000"))
}
