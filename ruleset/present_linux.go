//go:build linux

package ruleset

import (
	"errors"
	"fmt"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// TablePresent reports whether egressd's table exists. It is one netlink
// request for the table by name, cheap enough to run on every foreign
// nftables transaction, so that a `nft flush ruleset` is answered at once
// instead of after the settle delay of a full verification.
func (k *Netlink) TablePresent() (bool, error) {
	var opts []nftables.ConnOption
	if k.NetNSFd != 0 {
		opts = append(opts, nftables.WithNetNSFd(k.NetNSFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return false, fmt.Errorf("open netlink: %w", err)
	}
	_, err = c.ListTableOfFamily(TableName, nftables.TableFamilyINet)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ENOENT):
		return false, nil
	}
	return false, fmt.Errorf("look for table inet %s: %w", TableName, err)
}

// TableDormant reports whether egressd's table exists with the dormant flag
// (`nft add table inet egressd { flags dormant; }`): its chains are off
// their hooks and enforce nothing, while every object reads back as
// planned. One netlink request, as TablePresent.
func (k *Netlink) TableDormant() (bool, error) {
	var opts []nftables.ConnOption
	if k.NetNSFd != 0 {
		opts = append(opts, nftables.WithNetNSFd(k.NetNSFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return false, fmt.Errorf("open netlink: %w", err)
	}
	t, err := c.ListTableOfFamily(TableName, nftables.TableFamilyINet)
	switch {
	case err == nil:
		return t.Flags&tableFlagDormant != 0, nil
	case errors.Is(err, unix.ENOENT):
		return false, nil
	}
	return false, fmt.Errorf("look for table inet %s: %w", TableName, err)
}
