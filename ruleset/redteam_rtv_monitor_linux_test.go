//go:build linux

package ruleset

import (
	"context"
	"encoding/binary"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Red team of the periodic verification that skips its read-back while
// the monitor vouches that nothing else changed nftables (CaughtUp, issue
// 24). Each attack changes egressd's kernel state (or plays another
// process's transaction) and asks what the daemon's loop would learn of
// it: a report on Watch's channel (a full verification within
// verifyDelay), or CaughtUp false (a full read-back at the next period).
// Neither, while egressd's table differs from what it applied, is a
// fail-open that the skip keeps for up to fullVerifyEvery (10 min) instead
// of at most VerifyEvery (60 s) before.

// rtvWatch starts the monitor on e's kernel until the test ends.
func rtvWatch(t *testing.T, e *env) <-chan struct{} {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := e.k.Watch(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		for range ch {
		}
	})
	return ch
}

// rtvCaughtUp waits until the monitor has read every transaction so far.
func rtvCaughtUp(t *testing.T, k *Netlink, what string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		caught, err := k.CaughtUp()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if caught {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the monitor never caught up", what)
		}
	}
}

// rtvReported says whether the monitor reported a transaction within d.
func rtvReported(ch <-chan struct{}, d time.Duration) bool {
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

// rtvDrain empties the channel of reports already made.
func rtvDrain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

// The hole. On a kernel without NFT_TABLE_F_PERSIST (before 6.9: Debian
// 12's 6.1; egressd's table is unowned there) another process replaces
// egressd's table, in one transaction, with an identical copy that it owns
// (NFT_TABLE_F_OWNER alone). Its NEWGEN is reported, and the verification
// that follows finds nothing to repair (the copy is identical), so the
// loop goes back to trusting the monitor. Then the process closes its
// socket (exits): the kernel deletes the table it owned (nft_rcv_nl_event)
// without a transaction, so without a new generation or a NEWGEN. The
// monitor reports nothing and CaughtUp still vouches: the periodic
// verification skips its read-back, and the protected users are
// unrestricted until egressd's next write fails or the 10-minute backstop,
// where the 60 s read-back found the missing table before.
//
// The control: while the owning copy exists, it is enforced and verified
// as egressd's.
func TestRedteamRTVOwnerExitRemovesTableWithoutNewGen(t *testing.T) {
	e := newEnv(t)
	e.k.own.unowned = true // as on kernels before 6.9
	ch := rtvWatch(t, e)
	p := basePlan()
	if err := e.k.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	rtvCaughtUp(t, e.k, "after egressd's apply")
	rtvDrain(ch)

	// The other process: one long-lived socket, one transaction.
	tool, err := nftables.New(nftables.WithNetNSFd(e.k.NetNSFd), nftables.AsLasting())
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			tool.CloseLasting()
		}
	}()
	tool.AddTable(&nftables.Table{Family: table.Family, Name: table.Name})
	tool.DelTable(table)
	tool.AddTable(&nftables.Table{Family: table.Family, Name: table.Name, Flags: tableFlagOwner})
	if err := build(tool, p, nil); err != nil {
		t.Fatal(err)
	}
	if err := tool.Flush(); err != nil {
		t.Fatalf("replace the table with an owned copy: %v", err)
	}
	if !rtvReported(ch, 5*time.Second) {
		t.Fatal("control: the other process's transaction was not reported")
	}
	// The verification that report causes: nothing to repair.
	if fs, err := e.k.Verify(p); err != nil || len(fs) != 0 {
		t.Fatalf("control: the owned copy is not identical (findings %v, err %v); the attack needs it to be", fs, err)
	}
	// The monitor has read that NEWGEN (it reports after reading it).
	// Whether CaughtUp vouches for a table another socket owns is left
	// open: a fix may refuse to.
	rtvDrain(ch)

	// The process exits.
	if err := tool.CloseLasting(); err != nil {
		t.Fatal(err)
	}
	closed = true
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		present, err := e.k.TablePresent()
		if err != nil {
			t.Fatal(err)
		}
		if !present {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("control: the kernel kept a table whose owner closed (not an attack on this kernel)")
		}
	}
	if fs, err := e.k.Verify(p); err != nil || !disarmedKinds(fs) {
		t.Fatalf("control: a full verification does not find the missing table: %v, %v", fs, err)
	}
	// What the loop learns of it.
	reported := rtvReported(ch, time.Second)
	caught, err := e.k.CaughtUp()
	if err != nil {
		t.Fatal(err)
	}
	if !reported && caught {
		t.Fatal("HOLE: egressd's table is gone (its foreign owner exited), yet the monitor reported nothing " +
			"and CaughtUp vouches that nothing changed: the periodic verification skips its read-back " +
			"for up to fullVerifyEvery (10 min); before, the 60 s read-back restored the table")
	}
}

// disarmedKinds says whether findings include the missing table.
func disarmedKinds(fs []Finding) bool {
	for _, f := range fs {
		if f.Kind == "table_missing" {
			return true
		}
	}
	return false
}

// rtvNewTableBatch is one nf_tables transaction that adds table inet NAME.
func rtvNewTableBatch(name string) []netlink.Message {
	batch := func(typ uint16) netlink.Message {
		return netlink.Message{
			Header: netlink.Header{Type: netlink.HeaderType(typ), Flags: netlink.Request},
			Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES},
		}
	}
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_TABLE_NAME, name)
	attrs, err := ae.Encode()
	if err != nil {
		panic(err)
	}
	return []netlink.Message{
		batch(unix.NFNL_MSG_BATCH_BEGIN),
		{
			Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWTABLE),
				Flags: netlink.Request | netlink.Acknowledge | netlink.Create},
			Data: append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
		},
		batch(unix.NFNL_MSG_BATCH_END),
	}
}

// rtvCommitFromPort commits a transaction on a socket bound to port.
func rtvCommitFromPort(t *testing.T, netns int, port uint32, name string) {
	t.Helper()
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netns, PID: port})
	if err != nil {
		t.Fatalf("bind port %d: %v", port, err)
	}
	defer c.Close()
	if _, err := c.SendMessages(rtvNewTableBatch(name)); err != nil {
		t.Fatal(err)
	}
	msgs, err := c.Receive()
	if err != nil {
		t.Fatalf("commit from port %d: %v", port, err)
	}
	for _, m := range msgs {
		if m.Header.Type == netlink.Error && len(m.Data) >= 4 && binary.NativeEndian.Uint32(m.Data[:4]) != 0 {
			t.Fatalf("commit from port %d: error %d", port, int32(binary.NativeEndian.Uint32(m.Data[:4])))
		}
	}
}

// Held. egressd's writing socket closes (a failed transaction drops it, or
// Close), and another process binds a socket to the port id it had and
// commits through it: the monitor must not take that NEWGEN for egressd's.
// Then egressd writes again (its new socket may get the same port id
// back): its own transactions stay unreported, and a transaction of the
// other process's port, committed before egressd's new socket was bound,
// is not counted as egressd's.
func TestRedteamRTVForeignTransactionOnEgressdsOldPort(t *testing.T) {
	e := newEnv(t)
	ch := rtvWatch(t, e)
	p := basePlan()
	if err := e.k.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	old := e.k.own.port
	if old == 0 {
		t.Fatal("egressd's writing socket has no known port")
	}
	rtvCaughtUp(t, e.k, "after egressd's apply")
	if rtvReported(ch, 200*time.Millisecond) {
		t.Fatal("control: egressd's own transaction was reported")
	}
	if err := e.k.Close(); err != nil { // the writing socket closes
		t.Fatal(err)
	}
	rtvCommitFromPort(t, e.k.NetNSFd, old, "other")
	if !rtvReported(ch, 5*time.Second) {
		t.Fatalf("a transaction on egressd's old port %d was taken for egressd's", old)
	}
	rtvCaughtUp(t, e.k, "after the other process's transaction")
	// egressd writes again, on a new socket.
	if err := e.k.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	rtvCaughtUp(t, e.k, "after egressd's second apply")
	if rtvReported(ch, 200*time.Millisecond) {
		t.Fatal("control: egressd's transaction on its new socket was reported")
	}
	t.Logf("old port %d, new port %d", old, e.k.own.port)
}

// Held. Notifications lost without the monitor knowing would let CaughtUp
// vouch for a transaction it never read: the generation it read last
// (egressd's own, after the lost one) is the kernel's. Here the monitor's
// reader is stalled (the ports lock it takes for every NEWGEN is held)
// while egressd commits a burst of its own transactions, enough to
// overflow the monitor's receive buffer, then another process commits one:
// its NEWGEN is dropped. The overflow must be reported (ENOBUFS), and the
// report must reach the channel; the control: the burst did overflow the
// socket (its drops counter in /proc/net/netlink), and egressd's next own
// transaction catches the monitor up again.
func TestRedteamRTVLostNotificationsAreReported(t *testing.T) {
	e := newEnv(t)
	ch := rtvWatch(t, e)
	p := basePlan()
	if err := e.k.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	rtvCaughtUp(t, e.k, "after egressd's apply")
	rtvDrain(ch)
	own := e.k.own.conn
	scratch := &nftables.Table{Family: nftables.TableFamilyINet, Name: "rtv-scratch"}
	ownTransaction := func() {
		t.Helper()
		own.AddTable(scratch)
		own.DelTable(scratch)
		if err := own.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	e.k.ports.mu.Lock() // the monitor's reader stops at the next NEWGEN
	locked := true
	defer func() {
		if locked {
			e.k.ports.mu.Unlock()
		}
	}()
	for i := 0; i < 6000; i++ {
		ownTransaction()
	}
	rtvCommitFromPort(t, e.k.NetNSFd, 0, "other")
	var out []byte
	if err := e.ns.Do(func() (err error) {
		out, err = os.ReadFile("/proc/thread-self/net/netlink")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	e.k.ports.mu.Unlock()
	locked = false
	if !rtvDropped(string(out)) {
		t.Fatalf("control: the monitor's socket dropped nothing; the burst did not overflow it:\n%s", out)
	}
	reported := rtvReported(ch, 5*time.Second)
	// egressd's next transactions: once the monitor has drained its
	// queue (until then they are dropped too), it is caught up again.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		ownTransaction()
		caught, err := e.k.CaughtUp()
		if err != nil {
			t.Fatal(err)
		}
		if caught {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("control: the monitor never caught up after the overflow")
		}
	}
	if !reported {
		t.Fatal("HOLE: another process's transaction was lost with the monitor's overflow, not reported, " +
			"and CaughtUp vouches again after egressd's next transaction")
	}
}

// rtvDropped says whether a NETLINK_NETFILTER socket joined to
// NFNLGRP_NFTABLES dropped messages (/proc/net/netlink: sk Eth Pid Groups
// Rmem Wmem Dump Locks Drops Inode).
func rtvDropped(table string) bool {
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[1] != "12" {
			continue
		}
		groups, err := strconv.ParseUint(f[3], 16, 32)
		if err != nil || groups&(1<<(nfnlGroupNFTables-1)) == 0 {
			continue
		}
		if drops, err := strconv.Atoi(f[8]); err == nil && drops > 0 {
			return true
		}
	}
	return false
}
