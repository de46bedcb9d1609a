//go:build linux

package ruleset

import (
	"fmt"

	"github.com/google/nftables"
)

// Restore creates the table from the plan, in one transaction, when it does
// not exist (another process removed it: `nft flush ruleset`). It is
// ApplyFull without the delete: a transaction that deletes anything, even an
// empty table, takes effect only after the kernel waits for RCU grace
// periods (8-16 ms on a HZ=250 kernel, measured), and until the restore takes
// effect protected users are unrestricted. Creating takes effect in well
// under a millisecond. If the table exists after all, the kernel refuses the
// whole transaction (NLM_F_EXCL) and nothing changes: the caller then
// applies in full.
//
// An owned table is never removed by another process; it is restored like
// an unowned one after all, owned again (the orphan of a previous daemon
// deleted before this one took it over).
func (k *Netlink) Restore(p Plan) error {
	k.own.mu.Lock()
	defer k.own.mu.Unlock()
	c, flags, err := k.writer()
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	c.CreateTable(&nftables.Table{Family: table.Family, Name: table.Name, Flags: flags})
	if err := build(c, p, nil); err != nil {
		k.dropIf(c)
		return fmt.Errorf("build ruleset to restore: %w", err) // c is dropped unflushed
	}
	if err := c.Flush(); err != nil {
		k.dropIf(c)
		return fmt.Errorf("restore the removed table (%d elements): %w", p.Elements(), err)
	}
	return nil
}
