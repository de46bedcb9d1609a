//go:build linux

package ruleset

import (
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/config"
)

// The monitor's socket lets in only NEWGEN messages: a flood of the DNS
// proxy's own element writes (each announced on the group) neither wakes it
// nor overflows its buffer (ENOBUFS, which costs a full verification: the
// flood's p99 of 4–20 ms, issue 24). Failed before the filter: the socket,
// left unread during 40,000 element writes, overflowed. Our own
// transactions are known as ours whichever thread committed them (failed
// before: the kernel names the thread, and only the main thread's matched
// the pid). Control: another process's transaction (nft) is still seen.
func TestMonitorSeesOnlyNewGen(t *testing.T) {
	e := newEnv(t)
	p := Render(Desired{
		Allowlists: []Allowlist{{Name: "a", Subject: UserSubject(uidA), Proxy: true}},
		Resolvers:  []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53")},
		DenyLog:    config.Defaults().DenyLog,
		ProxyPort:  153,
	})
	if err := e.k.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	c, err := dialMonitor(e.ns.Fd())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// 40,000 elements in 400 transactions, the socket unread meanwhile.
	for i := 0; i < 400; i++ {
		var es []ProxyElement
		for j := 0; j < 100; j++ {
			n := i*100 + j
			a := netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)})
			es = append(es, ProxyElement{UID: uidA, Timeout: time.Minute, Name: "a.example.com",
				Element: ElementFor(config.TCP, netip.PrefixFrom(a, 32), 443, 443)})
		}
		if err := e.k.AddProxy(es); err != nil {
			t.Fatal(err)
		}
	}
	if _, out, err := e.w.Run("nft", "add", "table", "inet", "other"); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	self := &ownThreads{pid: uint32(os.Getpid()), seen: map[uint32]time.Time{}}
	ours, other := 0, 0
	for other == 0 {
		if err := c.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
			t.Fatal(err)
		}
		msgs, err := c.Receive()
		if errors.Is(err, unix.ENOBUFS) {
			t.Fatal("the monitor's socket overflowed (ENOBUFS) under the proxy's own element writes")
		}
		if err != nil {
			t.Fatalf("after %d NEWGEN of ours: %v (another process's transaction not seen)", ours, err)
		}
		for _, m := range msgs {
			if m.Header.Type != netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWGEN) {
				t.Fatalf("a message of type %#x passed the filter", m.Header.Type)
			}
			if pid, ok := genPID(m.Data[4:]); ok && self.ours(pid, time.Now()) {
				ours++
			} else {
				other++
			}
		}
	}
	if ours == 0 {
		t.Error("none of our own transactions' NEWGEN was seen")
	}
}

// A thread id is ours only while this process has it: one that is not
// (another process's, or a thread gone longer than the trust) is not.
func TestOwnThreads(t *testing.T) {
	o := &ownThreads{pid: uint32(os.Getpid()), seen: map[uint32]time.Time{}}
	now := time.Now()
	if !o.ours(uint32(os.Getpid()), now) {
		t.Error("the process id is not ours")
	}
	tid := uint32(unix.Gettid())
	if !o.ours(tid, now) {
		t.Errorf("thread %d is not ours", tid)
	}
	if o.ours(1, now) {
		t.Error("pid 1 is ours")
	}
	// A remembered id that is not ours (as if its thread had exited and
	// another process had it) is trusted no longer than ownThreadTrust.
	o.seen[1] = now
	if !o.ours(1, now.Add(ownThreadTrust/2)) {
		t.Error("within the trust: looked up again")
	}
	if o.ours(1, now.Add(ownThreadTrust)) {
		t.Error("pid 1 taken for ours after the trust ran out")
	}
}
