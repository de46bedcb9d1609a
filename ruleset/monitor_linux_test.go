//go:build linux

package ruleset

import (
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/systest"
)

// The monitor's socket lets in only NEWGEN messages: a flood of the DNS
// proxy's own element writes (each announced on the group) neither wakes it
// nor overflows its buffer (ENOBUFS, which costs a full verification: the
// flood's p99 of 4–20 ms, issue 24). Failed before the filter: the socket,
// left unread during 40,000 element writes, overflowed. Every one of our
// own transactions is known as ours, whichever goroutine committed them;
// another process's transaction (nft) is not (the control).
func TestMonitorSeesOnlyNewGen(t *testing.T) {
	monitorKnowsItsOwn(t)
}

// The same inside a pid namespace with its own /proc, as under nspawn or
// in a container: the kernel names the committing thread by its id in the
// initial pid namespace, /proc by the namespace's. Failed with the first
// round's rule (thread ids from /proc/self/task): none of our own
// transactions was known as ours there (0 of 402), each would have cost a
// full verification. Port ids are per network namespace, not per pid
// namespace.
func TestMonitorKnowsItsOwnInAPidNamespace(t *testing.T) {
	systest.Require(t)
	if os.Getenv(inPidNSEnv) == "1" {
		// The child: pid 1 of a new pid namespace, in a mount namespace
		// of its own where /proc is the new namespace's.
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("proc", "/proc", "proc", 0, ""); err != nil {
			t.Fatal(err)
		}
		if os.Getpid() != 1 {
			t.Fatalf("pid %d, not 1: no pid namespace", os.Getpid())
		}
		monitorKnowsItsOwn(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestMonitorKnowsItsOwnInAPidNamespace$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), inPidNSEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS") {
		t.Fatalf("in a pid namespace: %v\n%s", err, out)
	}
}

const inPidNSEnv = "EGRESSD_TEST_IN_PIDNS"

func monitorKnowsItsOwn(t *testing.T) {
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
	// 40,000 elements in 400 transactions from 4 goroutines, the socket
	// unread meanwhile.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g * 100; i < (g+1)*100; i++ {
				var es []ProxyElement
				for j := 0; j < 100; j++ {
					n := i*100 + j
					a := netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)})
					es = append(es, ProxyElement{UID: uidA, Timeout: time.Minute, Name: "a.example.com",
						Element: ElementFor(config.TCP, netip.PrefixFrom(a, 32), 443, 443)})
				}
				if err := e.k.AddProxy(es); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if _, out, err := e.w.Run("nft", "add", "table", "inet", "other"); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	ours, other := 0, 0
	buf := make([]byte, monitorBuf)
	for seenNFT := false; !seenNFT; {
		if err := c.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
			t.Fatal(err)
		}
		msgs, err := receive(c, buf) // as Watch reads
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
			switch {
			case genProc(m) == "nft":
				seenNFT = true
				if e.k.ownNewGen(m) {
					t.Error("nft's transaction taken for ours")
				}
			case e.k.ownNewGen(m):
				ours++
			default:
				other++
			}
		}
	}
	if ours < 400 || other != 0 {
		t.Errorf("of our own transactions (400 and the probe's), %d known as ours, %d taken for another process's", ours, other)
	}
}

// genProc is a NEWGEN's NFTA_GEN_PROC_NAME.
func genProc(m netlink.Message) string {
	ad, err := netlink.NewAttributeDecoder(m.Data[4:])
	if err != nil {
		return ""
	}
	for ad.Next() {
		if ad.Type() == unix.NFTA_GEN_PROC_NAME {
			return ad.String()
		}
	}
	return ""
}

// A port is ours only for the generations after it was bound (another
// process may have committed through the same port id before), and no
// longer once forgotten (its socket closes next).
func TestOwnPorts(t *testing.T) {
	var o ownPorts
	if o.ours(7, 1) {
		t.Error("an unknown port is ours")
	}
	o.add(7, 100)
	for gen, want := range map[uint32]bool{99: false, 100: false, 101: true, 5000: true} {
		if got := o.ours(7, gen); got != want {
			t.Errorf("port 7 bound at generation 100, NEWGEN of generation %d: ours %v, want %v", gen, got, want)
		}
	}
	o.add(9, ^uint32(0)-1) // the generation wraps around
	if !o.ours(9, 3) || o.ours(9, ^uint32(0)-2) {
		t.Error("across the generation's wrap-around")
	}
	if o.ours(8, 101) || o.ours(0, 101) {
		t.Error("another port is ours")
	}
	o.remove(7)
	if o.ours(7, 101) {
		t.Error("a forgotten port is ours")
	}
}
