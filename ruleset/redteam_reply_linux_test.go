//go:build linux

package ruleset

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/config"
)

// udpAs opens, as uid, a UDP socket on the local port port connected to
// dst, in e's namespace.
func (e *env) udpAs(t *testing.T, uid, port int, dst string) *net.UDPConn {
	t.Helper()
	var conn *net.UDPConn
	err := e.ns.Do(func() error {
		if _, err := unix.SetfsuidRetUid(uid); err != nil {
			return err
		}
		defer unix.SetfsuidRetUid(0) //nolint:errcheck
		raddr, err := net.ResolveUDPAddr("udp", dst)
		if err != nil {
			return err
		}
		conn, err = net.DialUDP("udp", &net.UDPAddr{Port: port}, raddr)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// Attack (red team rtc): the same 5-tuple reused by two proxy uids. uid a
// sends a query from port P and closes its socket while the proxy is still
// answering; uid b binds P, connected to the same resolver address, and
// waits. The proxy answers the flow (the address and port the query came
// from), not the uid that asked: b receives the answer to a's query, for a
// name of a's allowlist, whose addresses the kernel holds for a only. b
// cannot connect to them (the filter asks the kernel for b's own
// elements), but it learns them. Control: while a's socket is open, a gets
// the answer.
func TestRedteamRTCKernelProxyReplyToReusedPort(t *testing.T) {
	e := newEnv(t)
	p := Render(Desired{
		Allowlists: []Allowlist{{Name: "a", Subject: UserSubject(uidA), Proxy: true}, {Name: "b", Subject: UserSubject(uidB), Proxy: true}},
		DenyLog:    config.Defaults().DenyLog,
		ProxyPort:  153,
	})
	if err := e.k.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	// A proxy that answers when the test says so.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, ProxySocketMark)
		}); err != nil {
			return err
		}
		return serr
	}}
	var pc net.PacketConn
	if err := e.w.NS.Do(func() error {
		var err error
		pc, err = lc.ListenPacket(context.Background(), "udp", "127.0.0.1:153")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	type query struct {
		from net.Addr
		msg  string
	}
	queries := make(chan query, 1)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			queries <- query{from, string(buf[:n])}
		}
	}()
	read := func(c *net.UDPConn) (string, error) {
		c.SetReadDeadline(time.Now().Add(time.Second)) //nolint:errcheck
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		return string(buf[:n]), err
	}
	// Control: a asks and gets its answer.
	a := e.udpAs(t, uidA, 40057, "192.0.2.53:53")
	if _, err := a.Write([]byte("a's query")); err != nil {
		t.Fatal(err)
	}
	q := <-queries
	if _, err := pc.WriteTo([]byte("answer to a"), q.from); err != nil {
		t.Fatal(err)
	}
	if got, err := read(a); got != "answer to a" {
		t.Fatalf("control: a read %q, %v", got, err)
	}
	// The attack: a asks again and leaves; b takes its port.
	if _, err := a.Write([]byte("a's second query")); err != nil {
		t.Fatal(err)
	}
	q = <-queries
	a.Close()
	b := e.udpAs(t, uidB, 40057, "192.0.2.53:53")
	defer b.Close()
	if _, err := pc.WriteTo([]byte("answer to a"), q.from); err != nil {
		t.Fatal(err)
	}
	got, err := read(b)
	if err == nil {
		t.Logf("HOLE: uid b, on the port a's query came from, received the answer to a's query: %q (docs/security.md, \"The answer cache\")", got)
	}
	if got != "answer to a" {
		t.Errorf("b read %q, %v: the hole this test asserts is closed; turn it into the attack's control", got, err)
	}
}
