//go:build linux

package ruleset

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Table ownership. Any process with CAP_NET_ADMIN can delete an ordinary
// table, and `nft flush ruleset` does: its transaction removes the table in
// well under a millisecond and then holds the nftables commit lock for the
// kernel's RCU grace periods (6-24 ms measured), so no restore, however
// fast, can keep a flusher from opening the host for part of the time.
// The kernel's answer is ownership:
//
//   - NFT_TABLE_F_OWNER (Linux 5.12): only the netlink socket that created
//     the table may change or delete it; other sockets get EPERM, and
//     `nft flush ruleset` skips the table. Alone, it deletes the table when
//     that socket closes: a crash would open the host. egressd never sets
//     it alone.
//   - NFT_TABLE_F_PERSIST (Linux 6.9): the table stays when its owner
//     closes, unowned ("orphaned"), until a socket adopts it by setting
//     OWNER again (or deletes it: an orphan is an ordinary table).
//
// On kernels that accept both, every transaction of a Netlink goes through
// one long-lived socket that owns the table; the table is created with
// OWNER|PERSIST, a full rebuild deletes and re-creates it in one transaction
// (ownership never lapses: the transaction is atomic), and an orphan left by
// a previous daemon (killed, stopped, `run --once`) is taken over by the
// next full apply. Reads use their own sockets: the kernel lets any socket
// read an owned table. On older kernels the table stays unowned, as before,
// and a removed table is restored (controller/drift.go).
const (
	tableFlagOwner   = 0x2 // NFT_TABLE_F_OWNER
	tableFlagPersist = 0x4 // NFT_TABLE_F_PERSIST
	ownedFlags       = tableFlagOwner | tableFlagPersist
)

// UnownedEnv, set to "1" in a process's environment, keeps the table unowned
// on any kernel, as on kernels before 6.9. It exists for tests that play
// another tool changing egressd's table, which an owned table refuses.
const UnownedEnv = "EGRESSD_TEST_UNOWNED_TABLE"

// probeTable is the name of the table the ownership probe tries to create;
// the probe's transaction never commits.
const probeTable = "egressd-probe"

// owner is what a Netlink knows about owning its table.
type owner struct {
	mu      sync.Mutex // serializes write transactions
	decided bool
	owned   bool
	why     string         // why the table is not owned
	conn    *nftables.Conn // the writing socket (AsLasting), once opened: the owner's when owned
	port    uint32         // conn's netlink port id (Netlink.ports)
	// probeFlags replaces the flags the probe asks for (tests: an unknown
	// bit gets the answer of a kernel without PERSIST).
	probeFlags uint32
	unowned    bool // tests: never own the table
}

// Ownership reports whether the table is owned by this process's socket
// (NFT_TABLE_F_OWNER|NFT_TABLE_F_PERSIST), and when not, why. It asks the
// kernel once, with a transaction that never commits; an error leaves the
// question open for the next call.
func (k *Netlink) Ownership() (owned bool, why string, err error) {
	k.own.mu.Lock()
	defer k.own.mu.Unlock()
	if err := k.decide(); err != nil {
		return false, "", err
	}
	return k.own.owned, k.own.why, nil
}

// decide settles, once, whether the table is to be owned. Called with
// own.mu held.
func (k *Netlink) decide() error {
	if k.own.decided {
		return nil
	}
	switch {
	case k.own.unowned:
		k.own.why = "unowned table forced (test)"
	case os.Getenv(UnownedEnv) == "1":
		k.own.why = "unowned table forced by " + UnownedEnv + "=1 (tests only)"
	default:
		ok, err := k.probe()
		if err != nil {
			return err
		}
		if !ok {
			k.own.why = "the kernel does not support owned persistent tables (NFT_TABLE_F_PERSIST, Linux 6.9)"
		}
		k.own.owned = ok
	}
	k.own.decided = true
	return nil
}

// probe asks the kernel whether it accepts OWNER|PERSIST on a new table:
// one transaction creates a table with those flags and then creates it
// again, which fails, so nothing is ever committed. A kernel without
// PERSIST refuses the flags (EOPNOTSUPP since Linux 5.12, EINVAL before);
// one with it refuses only the second creation (EEXIST).
func (k *Netlink) probe() (bool, error) {
	c, err := k.conn()
	if err != nil {
		return false, fmt.Errorf("open netlink: %w", err)
	}
	flags := uint32(ownedFlags)
	if k.own.probeFlags != 0 {
		flags = k.own.probeFlags
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: probeTable, Flags: flags}
	c.CreateTable(t)
	c.CreateTable(t)
	err = c.Flush()
	switch {
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EINVAL):
		return false, nil
	case errors.Is(err, unix.EEXIST):
		return true, nil
	case err == nil:
		// Impossible (the second creation must fail); clean up and do
		// not rely on flags whose behaviour is not understood.
		c.DelTable(t)
		_ = c.Flush()
		return false, nil
	}
	return false, fmt.Errorf("probe for owned tables: %w", err)
}

// writer returns the connection for a write transaction and the flags the
// table is created with. Called with own.mu held. It is one socket for
// every write, opened on first use (in the owned mode the owning socket),
// whose port id the monitor knows as egressd's own (ownPorts): a
// transaction of a fresh socket per write could not be told from another
// process's once that socket had closed.
func (k *Netlink) writer() (*nftables.Conn, uint32, error) {
	if err := k.decide(); err != nil {
		return nil, 0, err
	}
	if k.own.conn == nil {
		var port, gen uint32
		var known bool
		c, err := k.dial(nftables.AsLasting(), nftables.WithSockOptions(func(c *netlink.Conn) error {
			// Unknown, the socket still writes: the monitor then
			// verifies its transactions as another process's.
			p, g, err := portAndGeneration(c)
			port, gen, known = p, g, err == nil
			return nil
		}))
		if err != nil {
			return nil, 0, err
		}
		k.own.conn, k.own.port = c, 0
		if known {
			k.own.port = port
			k.ports.add(port, gen)
		}
	}
	if !k.own.owned {
		return k.own.conn, 0, nil
	}
	return k.own.conn, ownedFlags, nil
}

// closeWriter forgets the writing socket's port, then closes it. Called
// with own.mu held.
func (k *Netlink) closeWriter() error {
	if k.own.port != 0 {
		k.ports.remove(k.own.port)
	}
	err := k.own.conn.CloseLasting()
	k.own.conn, k.own.port = nil, 0
	return err
}

// drop discards the owning socket after a failed transaction: its batch
// may hold messages of a build that failed, and an early error (EPERM,
// ENOBUFS) leaves acknowledgements unread that would be taken for the next
// transaction's. The table stays (PERSIST, orphaned); a new socket adopts
// it at once, so that no other process can change it for longer than
// this takes. Called with own.mu held.
func (k *Netlink) drop() {
	if k.own.conn == nil {
		return
	}
	_ = k.closeWriter()
	_ = k.adopt()
}

// adopt takes over an orphaned table (PERSIST without OWNER): from a
// previous daemon, or after drop. A missing or owned table is left alone.
// Called with own.mu held.
func (k *Netlink) adopt() error {
	flags, ok, err := k.tableFlags()
	if err != nil || !ok || flags&ownedFlags != tableFlagPersist {
		return err
	}
	c, _, err := k.writer()
	if err != nil {
		return err
	}
	c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: TableName, Flags: ownedFlags})
	if err := c.Flush(); err != nil {
		_ = k.closeWriter()
		return fmt.Errorf("adopt table inet %s: %w", TableName, err)
	}
	return nil
}

// tableFlags reads the table's flags; ok is false when it does not exist.
func (k *Netlink) tableFlags() (flags uint32, ok bool, err error) {
	c, err := k.conn()
	if err != nil {
		return 0, false, err
	}
	t, err := c.ListTableOfFamily(TableName, nftables.TableFamilyINet)
	switch {
	case errors.Is(err, unix.ENOENT):
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("read table inet %s: %w", TableName, err)
	}
	return t.Flags, true, nil
}

// Close closes the owning socket, if any. The table stays, orphaned
// (PERSIST): a later Netlink, in this process or another, takes it over.
func (k *Netlink) Close() error {
	k.own.mu.Lock()
	defer k.own.mu.Unlock()
	if k.own.conn == nil {
		return nil
	}
	return k.closeWriter()
}

// dropIf drops the owning socket when c is it (a failed transaction).
// Called with own.mu held.
func (k *Netlink) dropIf(c *nftables.Conn) {
	if c != nil && c == k.own.conn {
		k.drop()
	}
}
