//go:build linux

// Package netns creates throwaway network namespaces for the system and
// integration tests and for the demo: a namespace exists only while its
// handle is open, so a crashed test leaves nothing behind.
package netns

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"time"

	vnl "github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NS is a network namespace held open by a file descriptor.
type NS struct {
	h vns.NsHandle
}

// New creates a fresh namespace with loopback up.
func New() (*NS, error) {
	runtime.LockOSThread()
	orig, err := vns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer orig.Close()
	h, err := vns.New() // unshare(CLONE_NEWNET): this thread is now inside
	if err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("create network namespace: %w", err)
	}
	if err := vns.Set(orig); err != nil {
		// The thread is stuck in the new namespace: leave it locked so the
		// runtime discards it when this goroutine ends.
		h.Close()
		return nil, fmt.Errorf("return to the original namespace: %w", err)
	}
	runtime.UnlockOSThread()
	ns := &NS{h: h}
	nh := ns.handle()
	defer nh.Close()
	link, err := nh.LinkByName("lo")
	if err == nil {
		err = nh.LinkSetUp(link)
	}
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("bring up lo: %w", err)
	}
	return ns, nil
}

func (n *NS) handle() *vnl.Handle {
	h, err := vnl.NewHandleAt(n.h)
	if err != nil {
		panic(err) // only fails if the namespace fd is invalid
	}
	return h
}

// Fd is the namespace's file descriptor (for nftables.WithNetNSFd).
func (n *NS) Fd() int { return int(n.h) }

// Close releases the namespace; the kernel deletes it once nothing is inside.
func (n *NS) Close() error { return n.h.Close() }

// AddAddrs adds addresses (for example documentation addresses that tests
// listen on) to the namespace's loopback interface: traffic to them stays
// inside the namespace and passes the output hook like any other.
func (n *NS) AddAddrs(addrs ...netip.Addr) error {
	h := n.handle()
	defer h.Close()
	l, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	for _, a := range addrs {
		p := netip.PrefixFrom(a, a.BitLen())
		if err := h.AddrAdd(l, &vnl.Addr{IPNet: netipNet{p}.IPNetValue(), Flags: unix.IFA_F_NODAD}); err != nil {
			return fmt.Errorf("add %s to lo: %w", a, err)
		}
	}
	return waitLocal(h, addrs)
}

// waitLocal waits until each address has its local route. An IPv6
// address's route is added by the kernel's address work queue after
// AddrAdd returns, even without duplicate address detection: on a busy
// machine a connect right after AddAddrs could find "network is
// unreachable".
func waitLocal(h *vnl.Handle, addrs []netip.Addr) error {
	deadline := time.Now().Add(10 * time.Second)
	for _, a := range addrs {
		for {
			rs, err := h.RouteGet(a.AsSlice())
			if err == nil && len(rs) > 0 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("address %s has no local route after 10 s: %v", a, err)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	return nil
}

// Do runs f on an OS thread that is inside the namespace. Sockets created and
// processes started in f belong to the namespace.
func (n *NS) Do(f func() error) error {
	runtime.LockOSThread()
	orig, err := vns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := vns.Set(n.h); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter namespace: %w", err)
	}
	ferr := f()
	if err := vns.Set(orig); err != nil {
		// Never unlock a thread left in the wrong namespace.
		return fmt.Errorf("leave namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// Start starts cmd inside the namespace: the child is forked from a thread
// that is inside it.
func (n *NS) Start(cmd *exec.Cmd) error {
	return n.Do(cmd.Start)
}

// Sysctl writes a sysctl (e.g. "net/ipv4/ping_group_range") inside the namespace.
func (n *NS) Sysctl(name, value string) error {
	return n.Do(func() error {
		return os.WriteFile("/proc/sys/"+name, []byte(value), 0o644)
	})
}

// DialAs connects from inside the namespace with a socket owned by uid: the
// socket takes the creating thread's fsuid, which is changed on this thread
// only and restored before the thread is released.
func (n *NS) DialAs(uid int, network, addr string, timeout time.Duration) (net.Conn, error) {
	var conn net.Conn
	err := n.Do(func() error {
		if _, err := unix.SetfsuidRetUid(uid); err != nil {
			return err
		}
		defer unix.SetfsuidRetUid(0) //nolint:errcheck
		var err error
		conn, err = net.DialTimeout(network, addr, timeout)
		return err
	})
	return conn, err
}

// Listen opens a listener inside the namespace.
func (n *NS) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := n.Do(func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// ListenPacket opens a packet socket inside the namespace.
func (n *NS) ListenPacket(network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := n.Do(func() error {
		var err error
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// ServeTCP accepts and closes connections on addr inside the namespace until
// the returned listener is closed: a service that a connect can reach.
func (n *NS) ServeTCP(addr string) (net.Listener, error) {
	ln, err := n.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln, nil
}

// ServeUDPEcho echoes datagrams on addr inside the namespace until the
// returned socket is closed.
func (n *NS) ServeUDPEcho(addr string) (net.PacketConn, error) {
	pc, err := n.ListenPacket("udp", addr)
	if err != nil {
		return nil, err
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:k], from) //nolint:errcheck
		}
	}()
	return pc, nil
}
