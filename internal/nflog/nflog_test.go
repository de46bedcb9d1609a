//go:build linux

package nflog

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/netns"
	"github.com/egressd/egressd/internal/systest"
	"github.com/egressd/egressd/ruleset"
)

func TestParsePayload(t *testing.T) {
	v4 := []byte{0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 192, 0, 2, 1, 198, 51, 100, 20, 0xc3, 0x50, 0x11, 0x5c}
	var p Packet
	if err := parsePayload(v4, &p); err != nil {
		t.Fatal(err)
	}
	if p.Proto != 6 || p.Src.String() != "192.0.2.1" || p.Dst.String() != "198.51.100.20" || p.SPort != 50000 || p.DPort != 4444 {
		t.Fatalf("v4: %+v", p)
	}
	v6 := make([]byte, 48)
	v6[0], v6[6] = 0x60, 17
	copy(v6[8:], netip.MustParseAddr("2001:db8::1").AsSlice())
	copy(v6[24:], netip.MustParseAddr("2001:db8::20").AsSlice())
	v6[42], v6[43] = 0, 53
	p = Packet{}
	if err := parsePayload(v6, &p); err != nil {
		t.Fatal(err)
	}
	if p.Proto != 17 || p.Dst.String() != "2001:db8::20" || p.DPort != 53 {
		t.Fatalf("v6: %+v", p)
	}
	for _, bad := range [][]byte{nil, {0x45, 0}, {0x60}, {0x25, 0, 0}} {
		if err := parsePayload(bad, &Packet{}); err == nil {
			t.Errorf("parsePayload(%x) accepted garbage", bad)
		}
	}
}

// A denied connect in a namespace arrives as one NFLOG packet carrying the
// allowlist's prefix, the socket's uid and the destination.
func TestListenReceivesDeny(t *testing.T) {
	systest.Require(t)
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := ns.AddAddrs(netip.MustParseAddr("198.51.100.20")); err != nil {
		t.Fatal(err)
	}
	dl := config.Defaults().DenyLog
	dl.Group = 7
	k := &ruleset.Netlink{NetNSFd: ns.Fd()}
	defer k.Close() // its owning socket would keep the namespace alive
	if err := k.ApplyFull(ruleset.Render(ruleset.Desired{DenyLog: dl, Allowlists: []ruleset.Allowlist{{Name: "billing", Subject: ruleset.UserSubject(4242)}}})); err != nil {
		t.Fatal(err)
	}
	l, err := Listen(7, ns.Fd())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := Listen(7, ns.Fd()); !errors.Is(err, ErrGroupBusy) {
		t.Fatalf("second listener on the same group: %v, want ErrGroupBusy", err)
	}

	if c, err := ns.DialAs(4242, "tcp", "198.51.100.20:4444", time.Second); err == nil {
		c.Close()
		t.Fatal("denied connect succeeded")
	}
	got := make(chan []Packet, 1)
	go func() {
		ps, _ := l.Read()
		got <- ps
	}()
	select {
	case ps := <-got:
		if len(ps) != 1 {
			t.Fatalf("got %d packets, want 1: %+v", len(ps), ps)
		}
		p := ps[0]
		if p.Prefix != ruleset.LogPrefix("egressd") || !p.HasUID || p.UID != 4242 || p.Proto != 6 ||
			p.Dst.String() != "198.51.100.20" || p.DPort != 4444 || !p.Src.IsValid() || p.SPort == 0 {
			t.Fatalf("packet = %+v", p)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no NFLOG packet within 2s")
	}
}

// The kernel is trusted, but a decoder must never panic on what it reads.
func FuzzDecode(f *testing.F) {
	f.Add([]byte{8, 0, 10, 0, 'a', 'b', 0, 0, 8, 0, 11, 0, 0, 0, 3, 233})
	f.Fuzz(func(t *testing.T, b []byte) {
		decode(b) //nolint:errcheck
		var p Packet
		parsePayload(b, &p) //nolint:errcheck
	})
}

// Close interrupts a Read blocked in another goroutine and frees the group
// at once: a reload that moves the deny log reader stops the old one and
// may bind the same group again (before, Close's unbind waited for the
// blocked Read forever, and a stopping daemon hung).
func TestCloseInterruptsReadAndFreesGroup(t *testing.T) {
	systest.Require(t)
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	l, err := Listen(9, ns.Fd())
	if err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	go func() {
		_, err := l.Read()
		read <- err
	}()
	time.Sleep(50 * time.Millisecond) // let Read block (if it has not, Close still must end it)
	closed := make(chan struct{})
	go func() {
		l.Close() //nolint:errcheck
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked behind a Read")
	}
	select {
	case err := <-read:
		if err == nil {
			t.Fatal("Read returned no error after Close")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read still blocked after Close")
	}
	again, err := Listen(9, ns.Fd())
	if err != nil {
		t.Fatalf("the group is not free after Close: %v", err)
	}
	again.Close() //nolint:errcheck
}
