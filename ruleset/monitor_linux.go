//go:build linux

package ruleset

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/net/bpf"
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
	c, err := dialMonitor(k.NetNSFd)
	if err != nil {
		return nil, err
	}
	ch := make(chan struct{}, 1)
	notify := func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	self := &ownThreads{pid: uint32(os.Getpid()), seen: map[uint32]time.Time{}}
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
				if pid, ok := genPID(m.Data[4:]); !ok || !self.ours(pid, time.Now()) {
					notify()
				}
			}
		}
	}()
	return ch, nil
}

// dialMonitor joins NFNLGRP_NFTABLES in the namespace netns (0: ours),
// with a socket filter that lets only NEWGEN messages in. The group also
// carries a message for every object and set element a transaction
// changes: the DNS proxy's own answers, thousands a second under a flood
// of new names. Unfiltered, they woke this goroutine once each and, past
// the socket's buffer, overflowed it (ENOBUFS): a full verification of
// every set each time, competing with the answers for the CPU (issue 24,
// docs/performance.md). NEWGEN is sent in an skb of its own
// (nf_tables_gen_notify), so the filter, which reads the skb's first
// message, sees every one.
func dialMonitor(netns int) (*netlink.Conn, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netns})
	if err != nil {
		return nil, err
	}
	if err := c.SetBPF(newGenFilter()); err != nil {
		c.Close()
		return nil, fmt.Errorf("nftables monitor: socket filter: %w", err)
	}
	if err := c.JoinGroup(nfnlGroupNFTables); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetReadBuffer(1 << 20)
	return c, nil
}

// newGenFilter is a classic BPF program that accepts a netlink skb whose
// first message is NFT_MSG_NEWGEN of nf_tables and drops any other. The
// message type is in host byte order (BPF loads big-endian): compared byte
// by byte.
func newGenFilter() []bpf.RawInstruction {
	var typ [2]byte
	binary.NativeEndian.PutUint16(typ[:], unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWGEN)
	prog, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 4, Size: 1}, // nlmsghdr.nlmsg_type, first byte
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(typ[0]), SkipTrue: 3},
		bpf.LoadAbsolute{Off: 5, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(typ[1]), SkipTrue: 1},
		bpf.RetConstant{Val: 0xffffffff}, // all of it
		bpf.RetConstant{Val: 0},          // dropped before the socket's buffer
	})
	if err != nil {
		panic(err) // a constant program
	}
	return prog
}

// ownThreads tells egressd's transactions from other processes': a
// NEWGEN's NFTA_GEN_PROC_PID is the committing task's pid, which is its
// thread id, so a transaction of any of egressd's threads but the first
// (the DNS proxy's writes, group commits on whichever thread runs them) did
// not match the process id and was taken for another process's: each cost
// a full verification (issue 24). A thread id is ours while
// /proc/self/task lists it; one found there is trusted for a second without
// looking again (a thread id reused by another process within a second
// would take the kernel's pid space wrapping around in that second).
// Used by the monitor's one goroutine.
type ownThreads struct {
	pid  uint32
	seen map[uint32]time.Time
}

const ownThreadTrust = time.Second

func (o *ownThreads) ours(pid uint32, now time.Time) bool {
	if pid == o.pid {
		return true
	}
	if t, ok := o.seen[pid]; ok && now.Sub(t) < ownThreadTrust {
		return true
	}
	if _, err := os.Stat("/proc/self/task/" + strconv.FormatUint(uint64(pid), 10)); err != nil {
		delete(o.seen, pid)
		return false
	}
	if len(o.seen) >= 4096 {
		clear(o.seen)
	}
	o.seen[pid] = now
	return true
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
