//go:build linux

package integration

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func init() { childModes["udp-icmperr"] = childUDPICMPErr }

// childUDPICMPErr: "NETWORK ADDR ask|quiet PORT" binds a UDP socket to
// port PORT (IP_LOCAL_PORT_RANGE), connects it to ADDR, sends "ask" there
// with ask, then reads it for 2 s: refused at once (okRefused) for the
// first ICMP error the kernel reports as the read's errno (a connected UDP
// socket needs no IP_RECVERR for that: __udp4_lib_err, sk_err), timedOut
// when none comes (datagrams that arrive are read and ignored).
func childUDPICMPErr(arg string) int {
	var network, addr, mode string
	var port int
	fmt.Sscan(arg, &network, &addr, &mode, &port) //nolint:errcheck
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_LOCAL_PORT_RANGE, port|port<<16)
		}); err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial(network, addr)
	if err != nil {
		return classify(err)
	}
	defer c.Close()
	if c.LocalAddr().(*net.UDPAddr).Port != port {
		return otherError // not the port the errors quote: the test would prove nothing
	}
	if mode == "ask" {
		if _, err := c.Write([]byte("ask")); err != nil {
			return classify(err)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	c.SetReadDeadline(deadline) //nolint:errcheck
	for {
		_, err := c.Read(make([]byte, 64))
		if err != nil || time.Now().After(deadline) {
			return classify(err)
		}
	}
}

// icmpQuote is an ICMP (ICMPv6) error as a peer sends it: about a UDP
// datagram from (the service's address) to, payload "door", with the
// error's type and code; the peer sends it from to's address.
type icmpQuote struct {
	from, to  netip.AddrPort
	typ, code byte
}

// message is the ICMP message: header (checksum summed for IPv4; the kernel
// sums ICMPv6), the quoted IP header and UDP header, the payload.
func (q icmpQuote) message() []byte {
	payload := []byte("door")
	udp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], q.from.Port())
	binary.BigEndian.PutUint16(udp[2:], q.to.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload)
	var ip []byte
	if q.from.Addr().Is4() {
		ip = make([]byte, 20)
		ip[0], ip[8], ip[9] = 0x45, 64, unix.IPPROTO_UDP
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
		f, t := q.from.Addr().As4(), q.to.Addr().As4()
		copy(ip[12:], f[:])
		copy(ip[16:], t[:])
		binary.BigEndian.PutUint16(ip[10:], inetSum(ip))
	} else {
		ip = make([]byte, 40)
		ip[0], ip[6], ip[7] = 0x60, unix.IPPROTO_UDP, 64
		binary.BigEndian.PutUint16(ip[4:], uint16(len(udp)))
		f, t := q.from.Addr().As16(), q.to.Addr().As16()
		copy(ip[8:], f[:])
		copy(ip[24:], t[:])
	}
	msg := append(append([]byte{q.typ, q.code, 0, 0, 0, 0, 0, 0}, ip...), udp...)
	if q.from.Addr().Is4() {
		binary.BigEndian.PutUint16(msg[2:], inetSum(msg))
	}
	return msg
}

func inetSum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// send sends the error once, as root in the namespace, from to's address to
// from's.
func (q icmpQuote) send(w *world) error {
	return w.ns.Do(func() error {
		fam, proto := unix.AF_INET, unix.IPPROTO_ICMP
		if q.from.Addr().Is6() {
			fam, proto = unix.AF_INET6, unix.IPPROTO_ICMPV6
		}
		fd, err := unix.Socket(fam, unix.SOCK_RAW, proto)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if fam == unix.AF_INET {
			if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: q.to.Addr().As4()}); err != nil {
				return err
			}
			return unix.Sendto(fd, q.message(), 0, &unix.SockaddrInet4{Addr: q.from.Addr().As4()})
		}
		if err := unix.Bind(fd, &unix.SockaddrInet6{Addr: q.to.Addr().As16()}); err != nil {
			return err
		}
		return unix.Sendto(fd, q.message(), 0, &unix.SockaddrInet6{Addr: q.from.Addr().As16()})
	})
}

// sendFrom sends "door", as root in the namespace, from q.to to q.from: the
// peer opens the flow the error then quotes.
func (q icmpQuote) sendFrom(w *world) error {
	return w.ns.Do(func() error {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(q.to))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.WriteToUDPAddrPort([]byte("door"), q.from)
		return err
	})
}

// localFor is the source address the namespace's kernel picks toward dst.
func (w *world) localFor(dst netip.AddrPort) netip.Addr {
	w.t.Helper()
	var a netip.Addr
	w.must(w.ns.Do(func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		a = c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
		return nil
	}))
	return a
}

// icmpErr runs childUDPICMPErr as uid in the cgroup cg while the peer
// (first, with peerOpens, opening the flow) sends the error every 100 ms.
func (w *world) icmpErr(cg string, uid int, arg string, q icmpQuote, peerOpens bool) int {
	w.t.Helper()
	stop, sent := make(chan struct{}), make(chan error, 1)
	go func() {
		var err error
		defer func() { sent <- err }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if peerOpens {
				if err = q.sendFrom(w); err != nil {
					return
				}
			}
			if err = q.send(w); err != nil {
				return
			}
		}
	}()
	cmd := exec.Command(clientBin)
	cmd.Env = []string{"EGRESSD_TEST_CLIENT=udp-icmperr", "EGRESSD_TEST_ADDR=" + arg}
	done := inCgroup(w.t, cmd, cg)
	code, err := w.tw.RunAs(uid, cmd)
	done()
	close(stop)
	if serr := <-sent; serr != nil && !errors.Is(serr, net.ErrClosed) {
		w.t.Fatalf("the peer's ICMP error: %v", serr)
	}
	w.must(err)
	return code
}

// Issue 28: a service restricted by listen: must not read what a peer
// chooses except on its listed ports; an ICMP error quoting one of its
// datagram flows reaches the socket without the ingress program, as an
// errno (the code: a few bits per error), the error queue (IP_RECVERR: the
// quoted bytes) or the path MTU. The daemon's inbound chain drops, while
// some allowlist has listen:, the ICMP errors about a non-TCP flow that
// the restricted uid opened (its conntrack mark), about one a peer opened,
// and those conntrack relates to no flow (a forged quote). Here the errno
// channel: a connected UDP socket reads a port unreachable as ECONNREFUSED.
// The control: an unrestricted user's own flow still gets its errors.
func TestListenInboundICMPErrors(t *testing.T) {
	w := newWorld(t)
	r := newListenRig(t)
	w.standardConfig()
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nallow: [\"203.0.113.5:5353/udp\"]\nlisten: [udp:5353]\n", uidA))
	w.start(r.args()...)
	// Each case on a port of its own: a socket on the tuple of a flow still
	// in conntrack joins that flow, with its opener's mark.
	resolver := netip.MustParseAddrPort("203.0.113.5:5353")
	local := w.localFor(resolver)
	peer4 := netip.MustParseAddrPort("127.0.0.2:4444")
	peer6 := netip.MustParseAddrPort("[::1]:4444")
	unreach := func(from netip.Addr, port uint16, to netip.AddrPort) icmpQuote {
		if from.Is6() {
			return icmpQuote{netip.AddrPortFrom(from, port), to, 1, 4}
		}
		return icmpQuote{netip.AddrPortFrom(from, port), to, 3, 3}
	}
	lo4, lo6 := netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()
	for i, c := range []struct {
		name      string
		uid       int
		network   string
		to        netip.AddrPort
		from      netip.Addr
		ask       string
		peerOpens bool
		want      int
	}{
		{"control: an unrestricted user's flow gets its port unreachable", uidNone, "udp4", resolver, local, "ask", false, okRefused},
		{"attack: errors quoting the restricted client's own flow to its resolver", uidA, "udp4", resolver, local, "ask", false, timedOut},
		{"attack: errors quoting a flow the peer opened to the client's port", uidA, "udp4", peer4, lo4, "quiet", true, timedOut},
		{"attack: errors quoting no flow (forged)", uidA, "udp4", peer4, lo4, "quiet", false, timedOut},
		{"attack: ICMPv6 errors quoting no flow (forged)", uidA, "udp6", peer6, lo6, "quiet", false, timedOut},
		{"attack: ICMPv6 errors quoting a flow the peer opened", uidA, "udp6", peer6, lo6, "quiet", true, timedOut},
	} {
		port := uint16(peerPort - 1 - i)
		arg := fmt.Sprintf("%s %s %s %d", c.network, c.to, c.ask, port)
		if got := w.icmpErr(r.cg, c.uid, arg, unreach(c.from, port, c.to), c.peerOpens); got != c.want {
			t.Errorf("%s (uid %d %s): %s, want %s", c.name, c.uid, arg, resultName[got], resultName[c.want])
		}
	}
}

// The same for a unit allowlist with listen: (any uid in the unit): the
// errors about a datagram flow the unit's process opened are dropped by the
// unit's key in the flow's conntrack label; the unit's neighbour (same uid,
// unrestricted) still gets its port unreachable.
func TestUnitListenICMPErrors(t *testing.T) {
	w := newWorld(t)
	cg := newUnitCgroups(t)
	r := newListenRigAt(t, cg.dir(""))
	unit := fmt.Sprintf("egressdtest%d-shop.service", os.Getpid())
	w.standardConfig()
	w.write("allow.d/shop.yaml", "unit: "+unit+"\nallow: [\"203.0.113.5:5353/udp\"]\ndns: none\nlisten: [udp:5353]\n")
	shop := cg.make(unit)
	neighbour := cg.make(fmt.Sprintf("egressdtest%d-neighbour.service", os.Getpid()))
	w.start(r.args()...)
	if code, out := w.gateListen(shop, unit, r.pins, 10*time.Second); code != 0 {
		t.Fatalf("gate in the running unit: exit %d:\n%s", code, out)
	}
	resolver := netip.MustParseAddrPort("203.0.113.5:5353")
	local := w.localFor(resolver)
	for i, c := range []struct {
		name string
		cg   string
		want int
	}{
		{"control: the unit's neighbour gets its port unreachable", neighbour, okRefused},
		{"attack: errors quoting the unit's own flow to its resolver", shop, timedOut},
	} {
		port := uint16(peerPort - 10 - i)
		arg := fmt.Sprintf("udp4 %s ask %d", resolver, port)
		q := icmpQuote{netip.AddrPortFrom(local, port), resolver, 3, 3}
		if got := w.icmpErr(c.cg, uidNone, arg, q, false); got != c.want {
			t.Errorf("%s (%s): %s, want %s", c.name, arg, resultName[got], resultName[c.want])
		}
	}
}
