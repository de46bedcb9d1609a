//go:build linux

package ruleset

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/mdlayher/netlink"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// nfnlGroupNFTables is NFNLGRP_NFTABLES: every committed nf_tables
// transaction is announced there, ending with a NEWGEN message that names the
// committing process.
const (
	nfnlGroupNFTables = 7
	nftaGenID         = 1 // NFTA_GEN_ID
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
	// The generation now: every later one is announced to c (joined
	// already), and read in order below (CaughtUp).
	if gen, err := readGeneration(k.NetNSFd); err == nil {
		k.mon.seen.Store(gen)
		k.mon.running.Store(true)
	}
	ch := make(chan struct{}, 1)
	notify := func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	go func() {
		<-ctx.Done()
		c.Close()
	}()
	go func() {
		defer close(ch)
		defer k.mon.running.Store(false)
		buf := make([]byte, monitorBuf)
		for {
			msgs, err := receive(c, buf)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				if errors.Is(err, unix.ENOBUFS) || errors.Is(err, errTruncated) {
					notify() // we missed notifications: verify
					continue
				}
				return
			}
			for _, m := range msgs {
				if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWGEN) || len(m.Data) < 4 {
					continue
				}
				if gen, ok := genID(m.Data[4:]); ok {
					k.mon.seen.Store(gen)
				}
				if !k.ownNewGen(m) {
					notify()
				}
			}
		}
	}()
	return ch, nil
}

// monitorBuf is the monitor's read buffer: a datagram holds one NEWGEN (a
// few dozen bytes, nf_tables_gen_notify).
const monitorBuf = 8 << 10

var errTruncated = errors.New("nftables monitor: a notification larger than the buffer")

// receive reads one datagram's messages with one system call.
// netlink.Conn's Receive peeks first to size its buffer: two calls per
// NEWGEN, most of the monitor's 5 % of the daemon's CPU under a flood of
// new names (issue 24). A datagram larger than buf is errTruncated: its
// messages are lost, as with ENOBUFS.
func receive(c *netlink.Conn, buf []byte) ([]netlink.Message, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var n int
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_TRUNC|unix.MSG_DONTWAIT)
		return rerr != unix.EAGAIN && rerr != unix.EINTR
	}); err != nil {
		return nil, err
	}
	if rerr != nil {
		return nil, rerr
	}
	if n > len(buf) {
		return nil, errTruncated
	}
	raw, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return nil, err
	}
	msgs := make([]netlink.Message, len(raw))
	for i, m := range raw {
		msgs[i] = netlink.Message{
			Header: netlink.Header{Length: m.Header.Len, Type: netlink.HeaderType(m.Header.Type), Flags: netlink.HeaderFlags(m.Header.Flags),
				Sequence: m.Header.Seq, PID: m.Header.Pid},
			Data: m.Data,
		}
	}
	return msgs, nil
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

// ownPorts tells egressd's transactions from other processes', exactly:
// a NEWGEN's nlmsg_pid is the netlink port id of the socket that committed
// the transaction (nf_tables_gen_notify), and the port ids of egressd's
// writing sockets are known. A port id is unique among the bound sockets
// of a network namespace, but another process may have had it before
// egressd's socket was bound, and have committed through it then: so each
// port is kept with the generation (NFTA_GEN_ID) read through it just
// after it was bound, and only a NEWGEN of a later generation is ours. A
// port is forgotten before its socket closes. Any other NEWGEN (another
// process's, a transaction of a socket already closed, one without a
// generation) is verified.
//
// The first round (issue 24) compared NFTA_GEN_PROC_PID, the committing
// thread's id, with the threads /proc/self/task lists. Inside a pid
// namespace (nspawn, containers) the kernel names the thread by its id in
// the initial pid namespace while /proc lists the namespace's ids: every
// own transaction looked foreign (a full verification each), and another
// process's whose global pid equalled one of egressd's local thread ids
// would have looked like egressd's own.
type ownPorts struct {
	mu sync.Mutex
	m  map[uint32]uint32 // port id → the generation when it was bound
}

// add records port, bound before the generation gen was read.
func (o *ownPorts) add(port, gen uint32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil {
		o.m = map[uint32]uint32{}
	}
	o.m[port] = gen
}

// remove forgets port; called before its socket closes.
func (o *ownPorts) remove(port uint32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.m, port)
}

// ours says whether a NEWGEN from port, of generation gen, is a
// transaction of one of egressd's sockets.
func (o *ownPorts) ours(port, gen uint32) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	bound, ok := o.m[port]
	return ok && port != 0 && int32(gen-bound) > 0 // generations wrap around
}

// ownNewGen says whether m, a NEWGEN, announces a transaction of k's own
// writing socket.
func (k *Netlink) ownNewGen(m netlink.Message) bool {
	if len(m.Data) < 4 {
		return false
	}
	gen, ok := genID(m.Data[4:])
	return ok && k.ports.ours(m.Header.PID, gen)
}

// monitorState is what the monitor (Watch) saw, for CaughtUp.
type monitorState struct {
	running atomic.Bool   // Watch's reader runs
	seen    atomic.Uint32 // the generation of the last NEWGEN it read
}

// CaughtUp reports whether the monitor (Watch) has read the announcement
// of every nf_tables transaction committed in the namespace up to now: the
// generation the kernel is at (NFT_MSG_GETGEN) is the last one the monitor
// read. Each transaction it read was egressd's own (its writing sockets'
// ports) or was reported on Watch's channel; so when it is caught up and
// nothing was reported since the table was last verified, no other
// process has changed any nftables object since. False when the monitor
// does not run, is behind, or lost notifications (their generations were
// never read).
func (k *Netlink) CaughtUp() (bool, error) {
	if !k.mon.running.Load() {
		return false, nil
	}
	seen := k.mon.seen.Load()
	gen, err := readGeneration(k.NetNSFd)
	if err != nil {
		return false, err
	}
	if gen != seen || !k.mon.running.Load() {
		return false, nil
	}
	// The kernel deletes a table whose owning socket closes without a
	// transaction: no generation, no NEWGEN (red team rtv). So the table
	// must be there, and owned by egressd's socket or by none: a copy
	// another process owns goes when that process exits.
	flags, ok, err := k.tableFlags()
	if err != nil || !ok {
		return false, err
	}
	if flags&tableFlagOwner != 0 {
		k.own.mu.Lock()
		owned := k.own.owned
		k.own.mu.Unlock()
		if !owned {
			return false, nil
		}
	}
	return true, nil
}

// readGeneration reads the generation of nf_tables in the namespace netns
// (0: ours) on a socket of its own.
func readGeneration(netns int) (uint32, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netns})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return getGen(c)
}

// getGen asks the kernel for the nf_tables generation through c.
func getGen(c *netlink.Conn) (uint32, error) {
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN), Flags: netlink.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	})
	if err != nil {
		return 0, fmt.Errorf("read the nf_tables generation: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) >= 4 {
			if g, ok := genID(m.Data[4:]); ok {
				return g, nil
			}
		}
	}
	return 0, errors.New("read the nf_tables generation: no NFTA_GEN_ID in the reply")
}

// genID reads NFTA_GEN_ID from a NEWGEN message's attributes.
func genID(b []byte) (uint32, bool) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return 0, false
	}
	ad.ByteOrder = binary.BigEndian
	for ad.Next() {
		if ad.Type() == nftaGenID {
			return ad.Uint32(), true
		}
	}
	return 0, false
}

// portAndGeneration returns c's netlink port id and the generation of
// nf_tables in its namespace, read through c (NFT_MSG_GETGEN) after it was
// bound.
func portAndGeneration(c *netlink.Conn) (port, gen uint32, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		var sa unix.Sockaddr
		if sa, serr = unix.Getsockname(int(fd)); serr == nil {
			nl, ok := sa.(*unix.SockaddrNetlink)
			if !ok || nl.Pid == 0 {
				serr = fmt.Errorf("not a bound netlink socket: %T", sa)
				return
			}
			port = nl.Pid
		}
	}); err != nil {
		return 0, 0, err
	}
	if serr != nil {
		return 0, 0, serr
	}
	gen, err = getGen(c)
	if err != nil {
		return 0, 0, err
	}
	return port, gen, nil
}
