//go:build linux

// Package integration runs the built egressd binary inside network namespaces
// that the tests create, against a real DNS server and real listeners on
// documentation addresses, with clients running as unprivileged users.
package integration

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dnstest"
	"github.com/egressd/egressd/internal/netns"
	"github.com/egressd/egressd/internal/systest"
	"github.com/egressd/egressd/internal/testworld"
	"github.com/egressd/egressd/ruleset"
)

var (
	binDir    string // holds egressd and the client, readable by every user
	egressd   string
	clientBin string
)

const (
	uidA    = 61001 // allowlist "billing"
	uidB    = 61002 // allowlist "web"
	uidNone = 61003 // no allowlist
)

func TestMain(m *testing.M) {
	if mode := os.Getenv("EGRESSD_TEST_CLIENT"); mode != "" {
		os.Exit(clientMain(mode, os.Getenv("EGRESSD_TEST_ADDR")))
	}
	code := func() int {
		if os.Geteuid() != 0 {
			return m.Run() // every test skips or fails through systest.Require
		}
		var err error
		binDir, err = os.MkdirTemp("", "egressd-it-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(binDir)
		os.Chmod(binDir, 0o755) //nolint:errcheck
		egressd = filepath.Join(binDir, "egressd")
		build := exec.Command("go", "build", "-o", egressd, "../cmd/egressd")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build egressd:", err)
			return 1
		}
		// The client is this test binary, copied where unprivileged users can run it.
		clientBin = filepath.Join(binDir, "client")
		if err := copyFile(os.Args[0], clientBin); err != nil {
			fmt.Fprintln(os.Stderr, "copy client:", err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Client exit codes.
const (
	okConnected = 0
	okRefused   = 1 // rejected at once: TCP reset, ICMP error, or EPERM from the output hook
	otherError  = 2
	timedOut    = 3
)

// clientMain is the unprivileged client: one TCP connect or one UDP echo.
func clientMain(mode, addr string) int {
	var err error
	switch mode {
	case "tcp":
		var c net.Conn
		c, err = net.DialTimeout("tcp", addr, 1500*time.Millisecond)
		if err == nil {
			c.Close()
		}
	case "udp":
		var c net.Conn
		c, err = net.Dial("udp", addr)
		if err == nil {
			defer c.Close()
			c.SetDeadline(time.Now().Add(1500 * time.Millisecond)) //nolint:errcheck
			if _, err = c.Write([]byte("ping")); err == nil {
				buf := make([]byte, 64)
				_, err = c.Read(buf)
			}
		}
	case "flock":
		// An unprivileged process trying to take egressd's lock.
		var f *os.File
		if f, err = os.Open(addr); err != nil {
			return okRefused
		}
		defer f.Close()
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			return otherError // opened, but held by the daemon
		}
		return okConnected
	default:
		if f, ok := childModes[mode]; ok {
			return f(addr)
		}
		return otherError
	}
	return classify(err)
}

func classify(err error) int {
	var ne net.Error
	switch {
	case err == nil:
		return okConnected
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EHOSTUNREACH):
		return okRefused
	case errors.As(err, &ne) && ne.Timeout():
		return timedOut
	}
	return otherError
}

// world is one namespace with a DNS server, services and an egressd daemon
// (internal/testworld), with the test's helpers.
type world struct {
	t      *testing.T
	tw     *testworld.World
	ns     *netns.NS
	dns    *dnstest.Server
	dir    string
	daemon *exec.Cmd
	done   <-chan struct{} // closed when the daemon exits
	// unowned starts daemons with an unowned table (ruleset.UnownedEnv),
	// as on kernels before 6.9: for tests that play another tool changing
	// the table, which the kernel refuses for an owned one.
	unowned bool
	// cgroupFD: children start in this cgroup (startChildIn); 0 where the test runs.
	cgroupFD int
}

var worldAddrs = []string{"192.0.2.53", "192.0.2.10", "192.0.2.11", "192.0.2.12", "198.51.100.20", "203.0.113.5", "2001:db8::10", "2001:db8::20"}

func newWorld(t *testing.T) *world {
	t.Helper()
	systest.Require(t)
	tw := testworld.NewT(t, worldAddrs...)
	w := &world{t: t, tw: tw, ns: tw.NS, dir: tw.Dir}
	var err error
	if w.dns, err = tw.StartDNS("192.0.2.53:53"); err != nil {
		t.Fatal(err)
	}
	w.must(tw.ServeTCP("192.0.2.10:443", "192.0.2.10:8443", "192.0.2.11:443", "192.0.2.12:443", "198.51.100.20:443", "198.51.100.20:4444", "[2001:db8::10]:443", "[2001:db8::20]:443"))
	w.must(tw.ServeUDP("203.0.113.5:5353", "203.0.113.5:5354"))
	return w
}

func (w *world) must(err error) {
	w.t.Helper()
	if err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) serveTCP(addr string) { w.t.Helper(); w.must(w.tw.ServeTCP(addr)) }

func (w *world) serveUDP(addr string) { w.t.Helper(); w.must(w.tw.ServeUDP(addr)) }

// write puts a file under the world's config directory, atomically.
func (w *world) write(name, body string) { w.t.Helper(); w.must(w.tw.Write(name, body)) }

const mainConfig = `resolvers: ["192.0.2.53:53"]
min_ttl: 1s
linger: 2s
stale_grace: 30s
`

// standardConfig: billing (uidA) may reach api.example.test:443 (A and
// AAAA) and a UDP service; web (uidB) may reach 192.0.2.12:443 and
// [2001:db8::20]:443, without DNS.
func (w *world) standardConfig() {
	w.write("egressd.yaml", mainConfig)
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nallow:\n  - api.example.test:443\n  - 203.0.113.5:5353/udp\n", uidA))
	w.write("allow.d/web.yaml", fmt.Sprintf("user: %d\nallow:\n  - 192.0.2.12:443\n  - \"[2001:db8::20]:443\"\ndns: none\n", uidB))
	w.dns.Set("api.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, AAAA: []netip.Addr{netip.MustParseAddr("2001:db8::10")}, TTL: 2})
}

// start runs the daemon inside the namespace and waits for "started".
func (w *world) start(args ...string) {
	w.t.Helper()
	w.startCmd(exec.Command(egressd, w.tw.RunArgs(args...)...))
}

func (w *world) startCmd(cmd *exec.Cmd) {
	w.t.Helper()
	if w.unowned {
		cmd.Env = append(cmd.Environ(), ruleset.UnownedEnv+"=1")
	}
	d, err := w.tw.Start(cmd, nil, 15*time.Second)
	if d != nil {
		w.daemon, w.done = d.Cmd, d.Done()
		// Before the cleanups registered earlier (users a daemon may run as).
		w.t.Cleanup(d.Kill)
	}
	w.must(err)
}

func (w *world) kill() {
	if w.daemon == nil {
		return
	}
	w.daemon.Process.Kill() //nolint:errcheck
	<-w.done
	w.daemon = nil
}

func (w *world) stop(sig syscall.Signal) {
	w.t.Helper()
	w.daemon.Process.Signal(sig) //nolint:errcheck
	select {
	case <-w.done:
	case <-time.After(10 * time.Second):
		w.t.Fatal("daemon did not stop within 10s")
	}
	w.daemon = nil
}

// runDir is the daemon's runtime directory (state file) for this world.
func (w *world) runDir() string { return w.tw.RunDir() }

// mark returns the current log position, for waitEvent.
func (w *world) mark() int { return w.tw.Mark() }

// waitEvent waits for an event logged after position since.
func (w *world) waitEvent(name string, since int, timeout time.Duration) (map[string]any, error) {
	return w.tw.WaitEvent(name, since, timeout)
}

// The events logged after position since with the given event name.
func (w *world) eventsSince(name string, since int) []map[string]any {
	return w.tw.EventsSince(name, since)
}

func (w *world) logText() string { return w.tw.LogText() }

// connect runs the client as uid inside the namespace and returns its result.
func (w *world) connect(uid int, proto, addr string) int {
	w.t.Helper()
	cmd := exec.Command(clientBin)
	cmd.Env = []string{"EGRESSD_TEST_CLIENT=" + proto, "EGRESSD_TEST_ADDR=" + addr}
	code, err := w.tw.RunAs(uid, cmd)
	w.must(err)
	return code
}

var resultName = map[int]string{okConnected: "connected", okRefused: "refused at once", otherError: "other error", timedOut: "timed out"}

func (w *world) expect(uid int, proto, addr string, want int) {
	w.t.Helper()
	if got := w.connect(uid, proto, addr); got != want {
		w.t.Errorf("uid %d %s %s: %s, want %s", uid, proto, addr, resultName[got], resultName[want])
	}
}

// eventually retries until uid's connection gives want, or fails after timeout.
func (w *world) eventually(uid int, proto, addr string, want int, timeout time.Duration) time.Duration {
	w.t.Helper()
	start := time.Now()
	for {
		got := w.connect(uid, proto, addr)
		if got == want {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			w.t.Fatalf("uid %d %s %s: still %s after %v, want %s\ndaemon log:\n%s", uid, proto, addr, resultName[got], timeout, resultName[want], w.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// prober connects continuously, in-process, with a socket owned by uid, and
// counts how often a destination that must stay denied was reachable.
type prober struct {
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	tries   int
	leaks   int
	leakErr []string
}

func (w *world) probe(uid int, addr string) *prober {
	p := &prober{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			c, err := w.ns.DialAs(uid, "tcp", addr, time.Second)
			p.mu.Lock()
			p.tries++
			if err == nil {
				c.Close()
				p.leaks++
				p.leakErr = append(p.leakErr, time.Now().Format(time.RFC3339Nano))
			}
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *prober) finish() (tries, leaks int) {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tries, p.leaks
}
