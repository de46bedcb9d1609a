package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/ruleset"
)

// Server holds the proxy's sockets: 127.0.0.1:P and [::1]:P, UDP and TCP,
// where the kernel redirects the queries. Sockets handed over by systemd
// (egressd.socket, socket activation) are used when their addresses match:
// they stay open while the daemon restarts, so queries wait in them
// instead of failing.
type Server struct {
	p   *Proxy
	ctx context.Context
	log *zap.Logger

	mu        sync.Mutex
	activated []*os.File
	port      uint16
	listening bool
	wg        sync.WaitGroup
}

// NewServer serves p's answers once Listen is called; activated are the
// sockets systemd passed (may be empty). ctx ends every serving goroutine.
func NewServer(ctx context.Context, p *Proxy, log *zap.Logger, activated []*os.File) *Server {
	if log == nil {
		log = zap.NewNop()
	}
	return &Server{p: p, ctx: ctx, log: log, activated: activated}
}

// Proxy is the proxy the server serves.
func (s *Server) Proxy() *Proxy { return s.p }

// Listen opens (or adopts) the sockets on port; once listening it is a
// no-op, and a different port is an error (a restart is needed: the
// kernel's redirect and the sockets must agree, and systemd's socket unit
// names the port). IPv6 is skipped where the host has no ::1.
func (s *Server) Listen(port uint16) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listening {
		if port != s.port {
			return fmt.Errorf("dns_proxy_port changed from %d to %d: takes effect at the next restart (until then queries go to %d)", s.port, port, s.port)
		}
		return nil
	}
	var udp []*net.UDPConn
	var tcp []net.Listener
	var addrs []string
	adopted := 0
	closeAll := func() {
		for _, c := range udp {
			c.Close()
		}
		for _, l := range tcp {
			l.Close()
		}
	}
	for _, ip := range []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()} {
		ap := netip.AddrPortFrom(ip, port)
		u, ok, err := s.adoptUDP(ap)
		if err == nil && !ok {
			u, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		}
		if err != nil {
			if ip.Is6() && noIPv6(err) {
				s.log.Warn("the DNS proxy does not listen on ::1 (no IPv6 loopback): protected users' IPv6 DNS queries fail", event.Field(event.DNSProxyFailed), zap.Error(err))
				continue
			}
			closeAll()
			return fmt.Errorf("DNS proxy: listen on udp %s: %w", ap, err)
		}
		if ok {
			adopted++
		}
		udp = append(udp, u)
		l, ok, err := s.adoptTCP(ap)
		if err == nil && !ok {
			l, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
		}
		if err != nil {
			closeAll()
			return fmt.Errorf("DNS proxy: listen on tcp %s: %w", ap, err)
		}
		if ok {
			adopted++
		}
		tcp = append(tcp, l)
		addrs = append(addrs, ap.String())
	}
	// The kernel delivers redirected queries only to sockets with the
	// proxy's mark (ruleset.ProxySocketMark); egressd.socket sets it too.
	var marked []syscall.Conn
	for _, u := range udp {
		marked = append(marked, u)
	}
	for _, l := range tcp {
		if c, ok := l.(syscall.Conn); ok {
			marked = append(marked, c)
		}
	}
	for _, c := range marked {
		if err := setMark(c, ruleset.ProxySocketMark); err != nil {
			s.log.Error("the DNS proxy cannot mark its sockets: the kernel delivers dns: proxy users' queries to none (CAP_NET_ADMIN needed)",
				event.Field(event.DNSProxyFailed), zap.Error(err))
			break
		}
	}
	for _, u := range udp {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.p.ServeUDP(s.ctx, u); err != nil {
				s.log.Error("the DNS proxy stopped answering on a socket", event.Field(event.DNSProxyFailed), zap.Error(err))
			}
		}()
	}
	for _, l := range tcp {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.p.ServeTCP(s.ctx, l); err != nil {
				s.log.Error("the DNS proxy stopped answering on a socket", event.Field(event.DNSProxyFailed), zap.Error(err))
			}
		}()
	}
	s.port, s.listening = port, true
	s.log.Info("DNS proxy listening", event.Field(event.DNSProxyListening), zap.Strings("addrs", addrs), zap.Int("activated", adopted))
	return nil
}

// setMark gives the socket the mark SO_MARK (needs CAP_NET_ADMIN).
func setMark(c syscall.Conn, mark uint32) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
	}); err != nil {
		return err
	}
	return os.NewSyscallError("setsockopt SO_MARK", serr)
}

// Wait returns once every serving goroutine ended (after ctx).
func (s *Server) Wait() { s.wg.Wait() }

func noIPv6(err error) bool {
	var se *os.SyscallError
	return errors.As(err, &se) && (errors.Is(err, errAddrNotAvail) || errors.Is(err, errAFNoSupport))
}

// adoptUDP takes the activated datagram socket bound to ap, if any.
func (s *Server) adoptUDP(ap netip.AddrPort) (*net.UDPConn, bool, error) {
	for i, f := range s.activated {
		if f == nil {
			continue
		}
		pc, err := net.FilePacketConn(f)
		if err != nil {
			continue // not a datagram socket
		}
		u, ok := pc.(*net.UDPConn)
		if !ok || !sameAddr(u.LocalAddr(), ap) {
			pc.Close()
			continue
		}
		f.Close()
		s.activated[i] = nil
		return u, true, nil
	}
	return nil, false, nil
}

// adoptTCP takes the activated listening socket bound to ap, if any.
func (s *Server) adoptTCP(ap netip.AddrPort) (net.Listener, bool, error) {
	for i, f := range s.activated {
		if f == nil {
			continue
		}
		l, err := net.FileListener(f)
		if err != nil {
			continue
		}
		if !sameAddr(l.Addr(), ap) {
			l.Close()
			continue
		}
		f.Close()
		s.activated[i] = nil
		return l, true, nil
	}
	return nil, false, nil
}

func sameAddr(a net.Addr, ap netip.AddrPort) bool {
	got, err := netip.ParseAddrPort(a.String())
	return err == nil && got.Addr().Unmap() == ap.Addr() && got.Port() == ap.Port()
}

// Unused reports activated sockets Listen did not adopt (a socket unit
// whose addresses do not match dns_proxy_port), closing them. Before Listen
// (no allowlist has dns: proxy) none counts as unused.
func (s *Server) Unused() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.listening {
		return nil
	}
	var out []string
	for i, f := range s.activated {
		if f != nil {
			out = append(out, f.Name())
			f.Close()
			s.activated[i] = nil
		}
	}
	return out
}

// SetPolicy implements the controller's DNSProxy (Proxy.SetPolicy).
func (s *Server) SetPolicy(pol *Policy) { s.p.SetPolicy(pol) }

// Refill implements the controller's DNSProxy (Proxy.Refill).
func (s *Server) Refill() error { return s.p.Refill() }
