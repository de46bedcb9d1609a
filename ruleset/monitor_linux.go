//go:build linux

package ruleset

import (
	"context"
	"encoding/binary"
	"errors"
	"os"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nfnlGroupNFTables is NFNLGRP_NFTABLES: every committed nf_tables
// transaction is announced there, ending with a NEWGEN message that names the
// committing process.
const (
	nfnlGroupNFTables = 7
	nftaGenProcPID    = 2 // NFTA_GEN_PROC_PID
)

// Watch reports, on the returned channel, every nf_tables transaction that
// another process commits in the namespace (any table: a `nft flush ruleset`
// or a firewalld reload is as relevant as a change to ours). Lost
// notifications are reported too. The channel closes when ctx ends or the
// socket fails.
func (k *Netlink) Watch(ctx context.Context) (<-chan struct{}, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: k.NetNSFd})
	if err != nil {
		return nil, err
	}
	if err := c.JoinGroup(nfnlGroupNFTables); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetReadBuffer(1 << 20)
	ch := make(chan struct{}, 1)
	notify := func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	self := uint32(os.Getpid())
	go func() {
		<-ctx.Done()
		c.Close()
	}()
	go func() {
		defer close(ch)
		for {
			msgs, err := c.Receive()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				if errors.Is(err, unix.ENOBUFS) {
					notify() // we missed notifications: verify
					continue
				}
				return
			}
			for _, m := range msgs {
				if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWGEN) || len(m.Data) < 4 {
					continue
				}
				if pid, ok := genPID(m.Data[4:]); !ok || pid != self {
					notify()
				}
			}
		}
	}()
	return ch, nil
}

func genPID(b []byte) (uint32, bool) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return 0, false
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		if ad.Type() == nftaGenProcPID {
			return ad.Uint32(), true
		}
	}
	return 0, false
}
