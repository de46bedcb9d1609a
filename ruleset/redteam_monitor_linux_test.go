//go:build linux

package ruleset

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/netns"
)

// Red team of the monitor's own-transaction rule (issue 24, second round):
// a NEWGEN is egressd's when its netlink port id is that of egressd's
// writing socket, for generations after the socket was bound. The
// attacker is root in the namespace (another process, its own netlink
// socket), or a process in another network namespace.

// rawCommit binds a netlink socket in ns with the port id port (0: the
// kernel's pick) and commits through it a transaction that adds the table
// inet name, as nft would. It returns the port id bound.
func rawCommit(ns *netns.NS, port uint32, name string) (uint32, error) {
	var fd int
	if err := ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		return err
	}); err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: port}); err != nil {
		return 0, fmt.Errorf("bind port id %d: %w", port, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return 0, err
	}
	bound := sa.(*unix.SockaddrNetlink).Pid
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_TABLE_NAME, name)
	attrs, err := ae.Encode()
	if err != nil {
		return 0, err
	}
	msg := func(typ, flags uint16, seq uint32, family uint8, resID uint16, attrs []byte) []byte {
		b := make([]byte, unix.NLMSG_HDRLEN+4, unix.NLMSG_HDRLEN+4+len(attrs))
		binary.NativeEndian.PutUint32(b[0:], uint32(unix.NLMSG_HDRLEN+4+len(attrs)))
		binary.NativeEndian.PutUint16(b[4:], typ)
		binary.NativeEndian.PutUint16(b[6:], flags)
		binary.NativeEndian.PutUint32(b[8:], seq)
		b[16], b[17] = family, unix.NFNETLINK_V0
		binary.BigEndian.PutUint16(b[18:], resID)
		return append(b, attrs...)
	}
	var batch []byte
	batch = append(batch, msg(unix.NFNL_MSG_BATCH_BEGIN, unix.NLM_F_REQUEST, 1, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES, nil)...)
	batch = append(batch, msg(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWTABLE, unix.NLM_F_REQUEST|unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK, 2, unix.NFPROTO_INET, 0, attrs)...)
	batch = append(batch, msg(unix.NFNL_MSG_BATCH_END, unix.NLM_F_REQUEST, 3, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES, nil)...)
	if err := unix.Sendto(fd, batch, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, err
	}
	buf := make([]byte, 8192)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return 0, err
	}
	ms, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return 0, err
	}
	for _, m := range ms {
		if m.Header.Type == unix.NLMSG_ERROR && len(m.Data) >= 4 {
			if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
				return 0, fmt.Errorf("add table inet %s: %w", name, syscall.Errno(-e))
			}
			return bound, nil
		}
	}
	return 0, fmt.Errorf("add table inet %s: no acknowledgement", name)
}

// nextNewGen reads the next NEWGEN from the monitor's socket c.
func nextNewGen(t *testing.T, c *netlink.Conn) (m netlink.Message) {
	t.Helper()
	buf := make([]byte, monitorBuf)
	for {
		if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		msgs, err := receive(c, buf)
		if err != nil {
			t.Fatalf("the monitor's socket: %v", err)
		}
		for _, m := range msgs {
			if m.Header.Type == netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWGEN) {
				return m
			}
		}
	}
}

func monitorEnv(t *testing.T) (*env, uint32) {
	t.Helper()
	e := newEnv(t)
	p := Render(Desired{
		Allowlists: []Allowlist{{Name: "a", Subject: UserSubject(uidA), Proxy: true}},
		DenyLog:    config.Defaults().DenyLog,
		ProxyPort:  153,
	})
	if err := e.k.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	e.k.own.mu.Lock()
	port := e.k.own.port
	e.k.own.mu.Unlock()
	if port == 0 {
		t.Fatal("egressd's writing socket has no known port id")
	}
	return e, port
}

func addOne(t *testing.T, k *Netlink, last byte) {
	t.Helper()
	a := netip.AddrFrom4([4]byte{192, 0, 2, last})
	if err := k.AddProxy([]ProxyElement{{UID: uidA, Timeout: time.Minute, Name: "a.example.com",
		Element: ElementFor(config.TCP, netip.PrefixFrom(a, 32), 443, 443)}}); err != nil {
		t.Fatal(err)
	}
}

// Attack: root's own netlink socket takes egressd's port id. While
// egressd's writing socket is open it cannot (EADDRINUSE: port ids are
// unique in a namespace). Once egressd closed it (a failed transaction
// drops it; a stop), another process binds that port id and commits: its
// NEWGEN carries egressd's old port id and must be verified, not taken
// for egressd's. Control: egressd's next transaction, through its new
// socket, is its own.
func TestRedteamRTCMonitorPortReuse(t *testing.T) {
	e, port := monitorEnv(t)
	c, err := dialMonitor(e.ns.Fd())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := rawCommit(e.ns, port, "rtc0"); err == nil {
		t.Fatalf("another socket bound egressd's live port id %d", port)
	}
	addOne(t, e.k, 10)
	if m := nextNewGen(t, c); !e.k.ownNewGen(m) {
		t.Fatalf("egressd's own transaction (port %d) taken for another's (control)", m.Header.PID)
	}
	if err := e.k.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := rawCommit(e.ns, port, "rtc1")
	if err != nil || got != port {
		t.Fatalf("root's socket on egressd's old port id %d: bound %d, %v", port, got, err)
	}
	raw := nextNewGen(t, c)
	if raw.Header.PID != port {
		t.Fatalf("the next NEWGEN is from port %d, want root's %d", raw.Header.PID, port)
	}
	if e.k.ownNewGen(raw) {
		t.Error("root's transaction through egressd's old port id was taken for egressd's (never verified)")
	}
	// egressd writes again: a new socket, whose port id the kernel may
	// pick to be the same (autobind tries the process's id first). A
	// monitor that reads root's NEWGEN only now must still verify it.
	addOne(t, e.k, 11)
	e.k.own.mu.Lock()
	reopened := e.k.own.port
	e.k.own.mu.Unlock()
	t.Logf("egressd's port id %d, root's transaction on it, egressd's new socket's %d", port, reopened)
	if e.k.ownNewGen(raw) {
		t.Error("root's transaction through egressd's old port id, read after egressd's new socket was bound on it, was taken for egressd's")
	}
	// The control: egressd's transactions through its new socket are
	// known. Those through a previous socket of the same port id (a
	// failed first write drops it, the table is adopted again), read
	// after the new one was bound, are verified as another process's:
	// fail-safe, one verification more each.
	for i := 0; ; i++ {
		m := nextNewGen(t, c)
		if e.k.ownNewGen(m) {
			break
		}
		g, _ := genID(m.Data[4:])
		t.Logf("NOTE: egressd's NEWGEN from port %d, generation %d, verified as another's", m.Header.PID, g)
		if m.Header.PID != reopened || i == 4 {
			t.Fatalf("egressd's transactions after its socket was reopened (port %d) taken for another's", reopened)
		}
	}
}

// Attack: a process in another network namespace binds egressd's port id
// there (port ids are per namespace) and commits. Its NEWGEN is announced
// in its own namespace only: the first NEWGEN egressd's monitor sees after
// it is the next transaction of its own namespace (a control commit of
// root's, from another port id), verified.
func TestRedteamRTCMonitorPortInAnotherNetns(t *testing.T) {
	e, port := monitorEnv(t)
	other, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	c, err := dialMonitor(e.ns.Fd())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := rawCommit(other, port, "rtc"); err != nil || got != port {
		t.Fatalf("another namespace's socket on egressd's port id %d: bound %d, %v", port, got, err)
	}
	ctl, err := rawCommit(e.ns, 0, "rtc")
	if err != nil || ctl == port {
		t.Fatalf("root's control commit: port %d, %v", ctl, err)
	}
	m := nextNewGen(t, c)
	if m.Header.PID != ctl {
		t.Fatalf("the first NEWGEN egressd's monitor saw is from port %d, want the control's %d (another namespace's transaction reached it)", m.Header.PID, ctl)
	}
	if e.k.ownNewGen(m) {
		t.Error("root's control transaction taken for egressd's")
	}
}

// Attack: root commits through sockets of its own while egressd's DNS
// proxy floods the kernel with answers (four writers at once). Every one
// of root's 50 transactions is verified (its NEWGEN is not egressd's), and
// every one of egressd's 400 is known as its own.
func TestRedteamRTCMonitorForeignDuringFlood(t *testing.T) {
	e, _ := monitorEnv(t)
	c, err := dialMonitor(e.ns.Fd())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g * 100; i < (g+1)*100; i++ {
				a := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
				if err := e.k.AddProxy([]ProxyElement{{UID: uidA, Timeout: time.Minute, Name: "a.example.com",
					Element: ElementFor(config.TCP, netip.PrefixFrom(a, 32), 443, 443)}}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	roots := map[uint32]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 50; i++ {
			port, err := rawCommit(e.ns, 0, fmt.Sprintf("root%d", i))
			if err != nil {
				errs <- err
				return
			}
			roots[port] = true
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// egressd's 400, its probe's (whether adding renews), root's 50: read
	// until all of root's and egressd's 400 were seen (nextNewGen fails
	// when none comes).
	var foreign, ours, otherwise int
	for foreign < 50 || ours < 400 {
		m := nextNewGen(t, c)
		switch own := e.k.ownNewGen(m); {
		case roots[m.Header.PID] && own:
			t.Errorf("root's transaction (port %d) taken for egressd's", m.Header.PID)
		case roots[m.Header.PID]:
			foreign++
		case own:
			ours++
		default:
			otherwise++
		}
	}
	if otherwise != 0 {
		t.Errorf("%d of egressd's transactions taken for another's", otherwise)
	}
}
