//go:build linux

// Package testworld is the one network-namespace world that egressd runs in
// away from the host: a throwaway namespace with documentation addresses on
// its loopback, a real DNS server (internal/dnstest) with records and TTLs
// that change at run time, TCP and UDP services, a configuration directory
// under a trusted temporary directory, the egressd daemon started inside with
// its JSON event log captured, and clients that connect as a given user.
// The integration tests, the ruleset system tests, tools/bench and
// `egressd demo` all build their worlds here.
//
// The egressd binary links this package (and internal/dnstest and
// internal/netns under it) deliberately: `egressd demo` is a feature of the
// binary (the README's quick start) and needs exactly this world. So the
// package holds no test-only dependency: it does not import "testing" (a
// test passes itself as a TB), and it never touches the host's network: all
// traffic stays inside the namespace, which the kernel deletes with the last
// handle, so a crashed caller leaves nothing behind.
package testworld

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/dnstest"
	"github.com/egressd/egressd/internal/netns"
)

// Record is what the world's DNS server answers for one name.
type Record = dnstest.Record

// TB is the part of testing.TB that NewT needs; *testing.T and *testing.B
// satisfy it.
type TB interface {
	Helper()
	Fatal(args ...any)
	Cleanup(func())
}

// World is one network namespace and what runs in it. Close releases all
// of it, in the reverse order of creation.
type World struct {
	NS  *netns.NS
	DNS *dnstest.Server // nil until StartDNS
	// Dir is the configuration directory: under /run, root-owned and 0755
	// (egressd refuses configuration that any user but root could change,
	// up to /, so not under the world-writable /tmp), readable by the
	// unprivileged daemons of some tests.
	Dir string

	mu      sync.Mutex
	closers []func()
	log     eventLog
}

// New creates a namespace with addrs on its loopback interface and an empty
// configuration directory.
func New(addrs ...string) (w *World, err error) {
	w = &World{}
	defer func() {
		if err != nil {
			w.Close()
		}
	}()
	if w.NS, err = netns.New(); err != nil {
		return nil, err
	}
	w.onClose(func() { w.NS.Close() })
	var as []netip.Addr
	for _, a := range addrs {
		p, err := netip.ParseAddr(a)
		if err != nil {
			return nil, err
		}
		as = append(as, p)
	}
	if err := w.NS.AddAddrs(as...); err != nil {
		return nil, err
	}
	if w.Dir, err = config.TrustedTempDir("egressd-world-"); err != nil {
		return nil, err
	}
	w.onClose(func() { os.RemoveAll(w.Dir) })
	if err := os.Chmod(w.Dir, 0o755); err != nil {
		return nil, err
	}
	return w, nil
}

// NewT is New for a test: it fails tb on error and closes the world in tb's
// cleanup.
func NewT(tb TB, addrs ...string) *World {
	tb.Helper()
	w, err := New(addrs...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(w.Close)
	return w
}

func (w *World) onClose(f func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closers = append(w.closers, f)
}

// Close stops the daemons, services and DNS server and deletes the
// namespace and the configuration directory. It may be called again.
func (w *World) Close() {
	w.mu.Lock()
	cs := w.closers
	w.closers = nil
	w.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}

// StartDNS starts the world's DNS server on addr (UDP and TCP) inside the
// namespace.
func (w *World) StartDNS(addr string) (*dnstest.Server, error) {
	s, err := dnstest.ListenIn(w.NS.Do, addr)
	if err != nil {
		return nil, fmt.Errorf("start DNS server: %w", err)
	}
	w.DNS = s
	w.onClose(s.Close)
	return s, nil
}

// ServeTCP runs services that accept and close connections on addrs inside
// the namespace, until Close.
func (w *World) ServeTCP(addrs ...string) error {
	return w.serve(addrs, func(a string) (io.Closer, error) { return w.NS.ServeTCP(a) })
}

// ServeUDP runs UDP echo services on addrs inside the namespace, until Close.
func (w *World) ServeUDP(addrs ...string) error {
	return w.serve(addrs, func(a string) (io.Closer, error) { return w.NS.ServeUDPEcho(a) })
}

func (w *World) serve(addrs []string, start func(addr string) (io.Closer, error)) error {
	for _, a := range addrs {
		c, err := start(a)
		if err != nil {
			return err
		}
		w.onClose(func() { c.Close() })
	}
	return nil
}

// Write puts a file under the configuration directory, atomically (write
// then rename, as careful editors and configuration management do).
func (w *World) Write(name, body string) error {
	p := filepath.Join(w.Dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(p), "."+filepath.Base(p)+".tmp")
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// Config is the path of the main configuration file, egressd.yaml.
func (w *World) Config() string { return filepath.Join(w.Dir, "egressd.yaml") }

// RunDir is the daemon's runtime directory (state file) in this world.
func (w *World) RunDir() string { return filepath.Join(w.Dir, "run") }

// RunArgs are the arguments of `egressd run` on this world's configuration
// and runtime directory, followed by extra.
func (w *World) RunArgs(extra ...string) []string {
	return append([]string{"run", "--config", w.Config(), "--runtime-dir", w.RunDir()}, extra...)
}

// Run runs a command inside the namespace and returns its wall time and
// combined output.
func (w *World) Run(name string, args ...string) (time.Duration, []byte, error) {
	cmd := exec.Command(name, args...)
	var out bytes.Buffer // one writer for both: exec calls it from one goroutine
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := w.NS.Start(cmd); err != nil {
		return 0, nil, err
	}
	err := cmd.Wait()
	return time.Since(start), out.Bytes(), err
}

// AsUser makes cmd run as uid, with gid uid and no supplementary groups
// (and so no capability).
func AsUser(cmd *exec.Cmd, uid int) *exec.Cmd {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}
	return cmd
}

// RunAs runs cmd as uid inside the namespace and returns its exit code; err
// is set only when it could not be run.
func (w *World) RunAs(uid int, cmd *exec.Cmd) (int, error) {
	if err := w.NS.Start(AsUser(cmd, uid)); err != nil {
		return 0, err
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	return 0, err
}

// DialAs connects from inside the namespace with a socket owned by uid and
// closes the connection: nil if uid may connect to addr.
func (w *World) DialAs(uid int, network, addr string, timeout time.Duration) error {
	c, err := w.NS.DialAs(uid, network, addr, timeout)
	if err == nil {
		c.Close()
	}
	return err
}

// UDPEchoAs sends a datagram to addr with a socket owned by uid and waits
// for the echo: nil if it came back.
func (w *World) UDPEchoAs(uid int, addr string, timeout time.Duration) error {
	c, err := w.NS.DialAs(uid, "udp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout)) //nolint:errcheck
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 16)
	_, err = c.Read(buf)
	return err
}

// ResolveAs asks server (any address: for a dns: proxy user the kernel
// redirects it) for name's A records with a UDP socket owned by uid, as
// the service's own resolver would. It returns the answer's rcode and
// addresses.
func (w *World) ResolveAs(uid int, server, name string, timeout time.Duration) (int, []netip.Addr, error) {
	c, err := w.NS.DialAs(uid, "udp", server, timeout)
	if err != nil {
		return 0, nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout)) //nolint:errcheck
	dc := &dns.Conn{Conn: c}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeA)
	if err := dc.WriteMsg(q); err != nil {
		return 0, nil, err
	}
	r, err := dc.ReadMsg()
	if err != nil {
		return 0, nil, err
	}
	var out []netip.Addr
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			if ip, ok := netip.AddrFromSlice(a.A.To4()); ok {
				out = append(out, ip)
			}
		}
	}
	return r.Rcode, out, nil
}
