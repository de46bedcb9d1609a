//go:build linux

package conntrack

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Conn asks the kernel's conntrack table about single flows. It holds a
// fixed pool of NETLINK_NETFILTER sockets, all opened by Open in the network
// namespace of the calling thread (so a test opens it inside netns.NS.Do),
// and is safe for concurrent use: each lookup takes one socket for its
// request and answer. Reading conntrack needs CAP_NET_ADMIN in the
// namespace's user namespace (nfnetlink asks it of every message).
type Conn struct {
	pool chan *netlink.Conn
	all  []*netlink.Conn
}

// Open opens a Conn with one socket per CPU the Go runtime may use (at
// least two): a lookup is two system calls on its socket, so more sockets
// than running threads buy nothing.
func Open() (*Conn, error) { return open(max(2, runtime.GOMAXPROCS(0))) }

func open(n int) (*Conn, error) {
	c := &Conn{pool: make(chan *netlink.Conn, n)}
	for range n {
		s, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("open ctnetlink socket: %w", err)
		}
		c.all = append(c.all, s)
		c.pool <- s
	}
	return c, nil
}

// Close closes the sockets. Lookups in flight fail; no lookup may start
// after Close.
func (c *Conn) Close() error {
	var errs []error
	for _, s := range c.all {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}

// LookupReply returns the flow whose reply tuple is proto src -> dst, in
// conntrack zone 0. For a query that nat output redirected to a proxy on
// 127.0.0.1:P from clientAddr:clientPort, that is
// LookupReply(unix.IPPROTO_UDP, 127.0.0.1:P, clientAddr:clientPort): src is
// the proxy's own address, dst what recvfrom (or getpeername) reports.
// IPv4-mapped IPv6 addresses are taken as IPv4. ErrNotFound when the kernel
// has no such entry.
func (c *Conn) LookupReply(proto uint8, src, dst netip.AddrPort) (Flow, error) {
	req, err := getRequest(Tuple{Proto: proto, Src: src, Dst: dst})
	if err != nil {
		return Flow{}, err
	}
	s := <-c.pool
	msgs, err := s.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(nfnlSubsysCTNetlink<<8 | ctMsgGet),
			Flags: netlink.Request | netlink.Acknowledge,
		},
		Data: req,
	})
	c.pool <- s
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return Flow{}, ErrNotFound
		}
		return Flow{}, fmt.Errorf("conntrack get %d %s -> %s (reply): %w", proto, src, dst, err)
	}
	for _, m := range msgs {
		if m.Header.Type == netlink.HeaderType(nfnlSubsysCTNetlink<<8|ctMsgNew) {
			return parseFlow(m.Data)
		}
	}
	return Flow{}, fmt.Errorf("conntrack get %d %s -> %s (reply): no entry in the answer", proto, src, dst)
}
