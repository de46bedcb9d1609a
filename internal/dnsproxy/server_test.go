package dnsproxy

import (
	"context"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Sockets systemd passes (egressd.socket) are adopted when their address is
// the proxy's, and served; the others are reported as unused.
func TestServerAdoptsActivatedSockets(t *testing.T) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(pc.LocalAddr().(*net.UDPAddr).Port)
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(port)})
	if err != nil {
		t.Fatal(err)
	}
	other, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var files []*os.File
	for _, c := range []interface{ File() (*os.File, error) }{pc, ln, other} {
		f, err := c.File()
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	pc.Close()
	ln.Close()
	other.Close()

	p := New(Options{Identify: ident{}, Timeout: 200 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	s := NewServer(ctx, p, nil, files)
	defer func() { cancel(); s.Wait() }()
	if err := s.Listen(port); err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(port + 1); err == nil {
		t.Error("a changed port must say a restart is needed")
	}
	if unused := s.Unused(); len(unused) != 1 {
		t.Errorf("unused sockets %v, want the one on another port", unused)
	}
	// The adopted sockets answer (REFUSED: nobody is identified here).
	for _, network := range []string{"udp", "tcp"} {
		q := new(dns.Msg)
		q.SetQuestion("example.com.", dns.TypeA)
		r, _, err := (&dns.Client{Net: network, Timeout: 2 * time.Second}).Exchange(q, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port).String())
		if err != nil || r.Rcode != dns.RcodeRefused {
			t.Errorf("%s on the adopted socket: %v %v", network, r, err)
		}
	}
}
