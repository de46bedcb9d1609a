//go:build linux

package integration

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/bindguard"
	"github.com/egressd/egressd/internal/cgroup"
	"golang.org/x/sys/unix"
)

func init() { childModes["listen"] = childListen }

// childListen binds and listens on addr ("tcp4 127.0.0.1:9999").
func childListen(addr string) int {
	var network, a string
	fmt.Sscan(addr, &network, &a) //nolint:errcheck
	var err error
	if network == "udp4" || network == "udp6" {
		var c net.PacketConn
		if c, err = net.ListenPacket(network, a); err == nil {
			c.Close()
		}
	} else {
		var l net.Listener
		if l, err = net.Listen(network, a); err == nil {
			l.Close()
		}
	}
	return classify(err)
}

// listenRig is what a listen: test needs beyond a world: a cgroup the
// restriction attaches to (never the host's root) and a private bpffs for
// its pins, both gone at the end.
type listenRig struct {
	cg, pins string
}

func newListenRig(t *testing.T) *listenRig {
	t.Helper()
	root, err := cgroup.Root()
	if err != nil {
		t.Fatal(err)
	}
	cg, err := os.MkdirTemp(root, "egressdtest-listen-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(cg) })
	fs, err := os.MkdirTemp("/run", "egressdtest-bpffs-")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", fs, "bpf", 0, "mode=0700"); err != nil {
		os.Remove(fs)
		t.Fatal(err)
	}
	r := &listenRig{cg: cg, pins: filepath.Join(fs, "egressd")}
	t.Cleanup(func() {
		bindguard.Remove(r.pins) //nolint:errcheck // the test asserts removal itself
		unix.Unmount(fs, 0)      //nolint:errcheck
		os.Remove(fs)
	})
	return r
}

func (r *listenRig) args() []string { return []string{"--bpf-dir", r.pins, "--listen-cgroup", r.cg} }

// listen runs the child as uid in the rig's cgroup: okConnected when it
// could bind and listen, okRefused on EPERM.
func (w *world) listen(r *listenRig, uid int, network, addr string) int {
	w.t.Helper()
	cmd := exec.Command(clientBin)
	cmd.Env = []string{"EGRESSD_TEST_CLIENT=listen", "EGRESSD_TEST_ADDR=" + network + " " + addr}
	done := inCgroup(w.t, cmd, r.cg)
	defer done()
	code, err := w.tw.RunAs(uid, cmd)
	w.must(err)
	return code
}

func (w *world) expectListen(r *listenRig, uid int, network, addr string, want int) {
	w.t.Helper()
	if got := w.listen(r, uid, network, addr); got != want {
		w.t.Errorf("uid %d listen %s %s: %s, want %s", uid, network, addr, resultName[got], resultName[want])
	}
}

// listen: [tcp:8080] is enforced by the daemon: the listed port serves, any
// other bind fails with EPERM and is a bind_denied event; the restriction
// stays while egressd is stopped and after it restarts, follows edits, and
// egressd remove lifts it.
func TestListenRestriction(t *testing.T) {
	w := newWorld(t)
	r := newListenRig(t)
	w.standardConfig()
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nallow: [api.example.test:443]\nlisten: [tcp:8080]\n", uidA))
	w.start(r.args()...)

	w.expectListen(r, uidA, "tcp4", "127.0.0.1:8080", okConnected)
	w.expectListen(r, uidA, "tcp4", "0.0.0.0:8080", okConnected)
	since := w.mark()
	w.expectListen(r, uidA, "tcp4", "127.0.0.1:9999", okRefused)
	w.expectListen(r, uidA, "tcp6", "[::]:9999", okRefused)
	w.expectListen(r, uidA, "udp4", "127.0.0.1:8080", okRefused)
	w.expectListen(r, uidB, "tcp4", "127.0.0.1:9999", okConnected) // web has no listen: key
	w.expectListen(r, uidNone, "tcp4", "127.0.0.1:9999", okConnected)
	ev, err := w.waitEvent("bind_denied", since, 5*time.Second)
	if err != nil {
		t.Fatalf("no bind_denied event: %v\n%s", err, w.logText())
	}
	if ev["allowlist"] != "billing" || ev["proto"] != "tcp" || ev["port"] != float64(9999) || ev["address"] != "127.0.0.1" || ev["audit"] != false {
		t.Errorf("bind_denied %v", ev)
	}
	// The connection still works for what egress allows (the two restrictions are independent).
	w.expect(uidA, "tcp", "192.0.2.10:443", okConnected)
	// check and check --explain answer for listening too.
	explain := func(port string) (int, string) {
		_, out, err := w.tw.Run(egressd, "check", "--config", w.tw.Config(), "--runtime-dir", w.runDir(), "--explain", fmt.Sprint(uidA), "listen", port)
		return exitCode(err), string(out)
	}
	if code, out := explain("tcp:8080"); code != 0 || !strings.Contains(out, "ALLOWED") || !strings.Contains(out, "allowed by listen: tcp:8080 (") {
		t.Errorf("check --explain listen tcp:8080: exit %d\n%s", code, out)
	}
	if code, out := explain("tcp:9999"); code != 1 || !strings.Contains(out, "DENIED") {
		t.Errorf("check --explain listen tcp:9999: exit %d\n%s", code, out)
	}
	if _, out, err := w.tw.Run(egressd, "check", "--config", w.tw.Config(), "--runtime-dir", w.runDir()); err != nil {
		t.Errorf("egressd check: %v\n%s", err, out)
	}
	// Another table's notrack for UDP opens listen: to peers' datagrams
	// (TestRedteamRTFUntrackedDatagram): check says so, names the rule and
	// exits 1; a notrack for TCP alone is fine.
	for _, c := range []struct {
		rule string
		code int
	}{{"udp dport 53 notrack", 1}, {"meta l4proto tcp notrack", 0}} {
		if out, err := w.nft("add table ip rawtest; add chain ip rawtest pre { type filter hook prerouting priority raw; }; add rule ip rawtest pre " + c.rule); err != nil {
			t.Fatalf("nft: %v\n%s", err, out)
		}
		_, out, err := w.tw.Run(egressd, "check", "--config", w.tw.Config(), "--runtime-dir", w.runDir())
		if code := exitCode(err); code != c.code || (c.code == 1) != strings.Contains(string(out), "table ip rawtest chain pre (hook prerouting) rule handle") {
			t.Errorf("egressd check with %q in another table: exit %d, want %d\n%s", c.rule, code, c.code, out)
		}
		if out, err := w.nft("delete table ip rawtest"); err != nil {
			t.Fatalf("nft: %v\n%s", err, out)
		}
	}
	if _, out, err := w.tw.Run(egressd, "plan", "--config", w.tw.Config(), "--runtime-dir", w.runDir()); err != nil ||
		!strings.Contains(string(out), fmt.Sprintf("uid %d (billing) may listen on: tcp:8080\n", uidA)) || !strings.Contains(string(out), "the same") {
		t.Errorf("egressd plan: %v\n%s", err, out)
	}

	w.stop(syscall.SIGTERM)
	w.expectListen(r, uidA, "tcp4", "127.0.0.1:9999", okRefused)
	w.expectListen(r, uidA, "tcp4", "127.0.0.1:8080", okConnected)
	w.start(r.args()...)
	w.expectListen(r, uidA, "tcp4", "127.0.0.1:9999", okRefused)
	w.expectListen(r, uidA, "tcp4", "127.0.0.1:8080", okConnected)

	// An edit takes effect: 9999 listed, 8080 no longer.
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nallow: [api.example.test:443]\nlisten: [tcp:9999]\n", uidA))
	deadline := time.Now().Add(10 * time.Second)
	for w.listen(r, uidA, "tcp4", "127.0.0.1:9999") != okConnected {
		if time.Now().After(deadline) {
			t.Fatalf("listen: [tcp:9999] not in force after the edit\n%s", w.logText())
		}
		time.Sleep(100 * time.Millisecond)
	}
	w.expectListen(r, uidA, "tcp4", "127.0.0.1:8080", okRefused)

	w.stop(syscall.SIGTERM)
	_, out, err := w.tw.Run(egressd, "remove", "--runtime-dir", w.runDir(), "--bpf-dir", r.pins)
	if err != nil {
		t.Fatalf("egressd remove: %v\n%s", err, out)
	}
	if left := bindguard.Pinned(r.pins); len(left) != 0 {
		t.Fatalf("egressd remove left %v pinned", left)
	}
	w.expectListen(r, uidA, "tcp4", "127.0.0.1:8080", okConnected)
}

// audit mode: the bind is allowed and reported.
func TestListenAudit(t *testing.T) {
	w := newWorld(t)
	r := newListenRig(t)
	w.standardConfig()
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nmode: audit\nallow: []\nlisten: []\n", uidA))
	w.start(r.args()...)
	since := w.mark()
	w.expectListen(r, uidA, "udp4", "127.0.0.1:5353", okConnected)
	ev, err := w.waitEvent("bind_denied", since, 5*time.Second)
	if err != nil {
		t.Fatalf("no bind_denied event: %v\n%s", err, w.logText())
	}
	if ev["audit"] != true || ev["proto"] != "udp" || ev["port"] != float64(5353) {
		t.Errorf("bind_denied %v", ev)
	}
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
