//go:build linux

package bindguard

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/cgroup"
	"golang.org/x/sys/unix"
)

// A Delegate=yes unit's processes may make sub-cgroups of their own as deep
// as they like: below level 8 of the host's hierarchy the programs stop
// looking, but the unit's own cgroup (level 2 here, as a system service's)
// is an ancestor at a level they do look at.
func TestRedteamUnitDeepSubcgroup(t *testing.T) {
	r := newRig(t)
	unitPath, id := r.mkCgroup(r.cg, "svc.service") // level 2
	deep := unitPath
	for level := 3; level <= MaxLevel+3; level++ {
		deep, _ = r.mkCgroup(deep, fmt.Sprintf("d%d", level))
	}
	if err := r.guard.ApplyCgroups(Cgroups{id: unitPorts}); err != nil {
		t.Fatal(err)
	}
	d := r.in(deep)
	if got := d.run(other, "tcp4,127.0.0.1,9999"); got != "EPERM" {
		t.Fatalf("bind of an unlisted port at level %d: %q, want EPERM", MaxLevel+3, got)
	}
	if got := d.run(other, "udp6,::,9999"); got != "EPERM" {
		t.Fatalf("UDP bind of an unlisted port at level %d: %q, want EPERM", MaxLevel+3, got)
	}
	if got := d.run(other, "tcp4,127.0.0.1,8080"); got != "ok 8080" {
		t.Fatalf("control: listed port at level %d: %q", MaxLevel+3, got)
	}
	first, derr, second := d.listenAndDial(other, "tcp4,0,0,autolisten")
	if !strings.HasPrefix(first, "ok ") || derr == nil || second == "accepted" {
		t.Fatalf("autobound listener at level %d: listener %q, dial %v, then %q: a connection reached it", MaxLevel+3, first, derr, second)
	}
}

// A known limit (docs/security.md, "Not stopped"): a listener is judged by
// the cgroup its socket was made in, and a unit's restart replaces its
// cgroup. A TCP socket made, unbound, by the unit's earlier run and handed
// to the new run (systemd's file descriptor store, FileDescriptorStoreMax=,
// keeps descriptors across restarts) carries the old cgroup, which egressd
// no longer maps: listen() on it gets connections on the port the kernel
// picks. The test moves the process that holds the socket from the old
// cgroup to the new one, as the store's round trip does to the socket.
// harden's drop-in closes it for a real unit (FileDescriptorStoreMax=0;
// integration/systemd's vault.service); this is the mechanism's own limit.
// If this starts failing because the connection is refused, the mechanism
// closes it: say so in docs/security.md.
func TestRedteamUnitSocketOutlivesCgroup(t *testing.T) {
	r := newRig(t)
	unitPath := filepath.Join(r.cg, "svc.service")
	t.Cleanup(func() {
		if err := os.Remove(unitPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("remove test cgroup: %v", err)
		}
	})
	mk := func() uint64 {
		t.Helper()
		if err := os.Mkdir(unitPath, 0o755); err != nil {
			t.Fatal(err)
		}
		id, err := cgroup.ID(unitPath)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	oldID := mk()
	if err := r.guard.ApplyCgroups(Cgroups{oldID: unitPorts}); err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	cmd, out := r.in(unitPath).start(other, "tcp4,0,0,autolisten,hold", pr)
	pr.Close()
	if line, _ := out.ReadString('\n'); strings.TrimSpace(line) != "made" {
		t.Fatalf("helper: %q", line)
	}
	move := func(dst string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dst, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
			t.Fatal(err)
		}
	}
	// The restart: the old cgroup goes, a new one of the same name comes
	// and egressd maps it instead (what the start gate waits for).
	move(r.cg)
	if err := os.Remove(unitPath); err != nil {
		t.Fatal(err)
	}
	newID := mk()
	move(unitPath)
	if err := r.guard.ApplyCgroups(Cgroups{newID: unitPorts}); err != nil {
		t.Fatal(err)
	}
	if _, err := pw.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	first, _ := out.ReadString('\n')
	port, ok := strings.CutPrefix(strings.TrimSpace(first), "ok ")
	if !ok {
		t.Fatalf("listener: %q", first)
	}
	derr := r.dial(port)
	if derr != nil {
		cmd.Process.Kill()
	}
	second, _ := out.ReadString('\n')
	cmd.Wait()
	if derr != nil || strings.TrimSpace(second) != "accepted" {
		t.Fatalf("the old cgroup's socket, listening in the new run: dial %v, listener %q: the known limit is closed, update docs/security.md", derr, second)
	}
	// Control: a socket the new run makes itself is the new cgroup's.
	first, derr, second = r.in(unitPath).listenAndDial(other, "tcp4,0,0,autolisten")
	if !strings.HasPrefix(first, "ok ") || derr == nil || second == "accepted" {
		t.Fatalf("control: the new run's own autobound listener: %q, dial %v, then %q: a connection reached it", first, derr, second)
	}
}

// pingReceive binds an unprivileged ICMP ("ping") socket to ident on
// 127.0.0.1, prints "ok IDENT" (or the errno), then what reached it: "got
// PAYLOAD" or "none". With ",ask" it first sends an echo request of its own.
func pingReceive(op string) int {
	ident, ask := strings.CutSuffix(op, ",ask")
	id, _ := strconv.Atoi(ident)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP)
	if err == nil {
		err = unix.Bind(fd, &unix.SockaddrInet4{Port: id, Addr: [4]byte{127, 0, 0, 1}})
	}
	if err != nil {
		if errno, ok := err.(unix.Errno); ok {
			fmt.Println(unix.ErrnoName(errno))
		} else {
			fmt.Println(err)
		}
		return 1
	}
	fmt.Println("ok", id)
	if ask {
		// An echo request of its own (the kernel sets the identifier).
		req := []byte{8, 0, 0, 0, 0, 0, 0, 1, 'm', 'i', 'n', 'e'}
		if err := unix.Sendto(fd, req, 0, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			fmt.Println("sendto:", err)
			return 1
		}
	}
	tv := unix.Timeval{Sec: 5}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	buf := make([]byte, 256)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil || n < 8 {
		fmt.Println("none:", err)
		return 0
	}
	fmt.Println("got", string(buf[8:n])) // after the ICMP header
	return 0
}

// sendEchoReply sends, as root in the test's namespace, an ICMP echo reply
// with ident id and payload to 127.0.0.1: a peer's datagram that nobody
// asked for.
func (r *rig) sendEchoReply(id int, payload string) error {
	return r.ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		b := append([]byte{0, 0, 0, 0, byte(id >> 8), byte(id), 0, 1}, payload...)
		var sum uint32
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
		for sum>>16 != 0 {
			sum = sum&0xffff + sum>>16
		}
		b[2], b[3] = byte(^sum>>8), byte(^sum)
		return unix.Sendto(fd, b, 0, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	})
}

// An unprivileged ICMP socket (systemd opens net.ipv4.ping_group_range to
// every group) binds an identifier of the service's choosing without any
// bind hook (ping sockets have their own bind), and would receive every echo
// reply that carries it, whoever sends it: an inbound datagram door as a UDP
// socket on an ephemeral port is. The ruleset tags an echo reply that
// conntrack has no request for (ct state invalid); the ingress program drops
// it for a restricted unit's or user's ping socket. The reply to the
// service's own echo request still arrives.
func TestRedteamPingSocketUnsolicitedReply(t *testing.T) {
	r := newRig(t)
	r.tagInbound()
	if err := r.ns.Sysctl("net/ipv4/ping_group_range", "0 2147483647"); err != nil {
		t.Fatal(err)
	}
	unitPath, id := r.mkCgroup(r.cg, "svc.service")
	if err := r.guard.ApplyCgroups(Cgroups{id: unitPorts}); err != nil {
		t.Fatal(err)
	}
	r.apply(Policy{protected: {Ports: []Port{}}})
	// Control: the restriction is in force for both.
	if got := r.in(unitPath).run(other, "udp4,127.0.0.1,9999"); got != "EPERM" {
		t.Fatalf("control: unit's UDP bind of an unlisted port: %q", got)
	}
	if got := r.run(protected, "udp4,127.0.0.1,9999"); got != "EPERM" {
		t.Fatalf("control: user's UDP bind with listen: []: %q", got)
	}
	for i, c := range []struct {
		name string
		r    *rig
		uid  int
	}{{"unit", r.in(unitPath), other}, {"user", r, protected}} {
		t.Run(c.name+"/control: the reply to its own echo request", func(t *testing.T) {
			ident := 9990 + i
			cmd, out := c.r.start(c.uid, fmt.Sprintf("ping4,%d,ask", ident))
			first, _ := out.ReadString('\n')
			second, _ := out.ReadString('\n')
			cmd.Wait()
			if strings.TrimSpace(first) != fmt.Sprintf("ok %d", ident) || strings.TrimSpace(second) != "got mine" {
				t.Fatalf("ping socket %q, then %q; want the reply to its request", first, second)
			}
		})
		t.Run(c.name+"/attack: unsolicited echo reply", func(t *testing.T) {
			ident := 9999 + i
			cmd, out := c.r.start(c.uid, fmt.Sprintf("ping4,%d", ident))
			if line, _ := out.ReadString('\n'); strings.TrimSpace(line) != fmt.Sprintf("ok %d", ident) {
				t.Fatalf("ping socket: %q", line)
			}
			if err := r.sendEchoReply(ident, "door"); err != nil {
				t.Fatal(err)
			}
			line, _ := out.ReadString('\n')
			cmd.Wait()
			if strings.HasPrefix(line, "got") {
				t.Fatalf("the peer's unsolicited echo reply reached the ping socket: %q", line)
			}
		})
	}
}

// A unit's process leaves the unit's cgroup by writing its pid into another
// cgroup's cgroup.procs: the kernel wants write access to that file and to
// the common ancestor's. A Delegate=yes unit's tree is its user's (systemd
// chowns the directory and its cgroup.procs, cgroup.threads and
// cgroup.subtree_control), so an unprivileged process moves only within it,
// still in the unit; out of it (to the parent or a sibling) it gets EACCES
// and stays restricted. Root can (docs/units.md, "Limits").
func TestRedteamUnitMigrateOut(t *testing.T) {
	r := newRig(t)
	// Searchable by everyone, as system.slice is (MkdirTemp made it 0700:
	// every move below would fail on the path, not on the kernel's rule).
	if err := os.Chmod(r.cg, 0o755); err != nil {
		t.Fatal(err)
	}
	unitPath, id := r.mkCgroup(r.cg, "svc.service")
	subPath, _ := r.mkCgroup(unitPath, "payload")
	siblingPath, _ := r.mkCgroup(r.cg, "other.service")
	// svc.service and other.service are both Delegate=yes units of the same
	// user: the sibling's cgroup.procs is writable to it too, only the
	// common ancestor's is not.
	for _, p := range []string{unitPath, subPath, siblingPath} {
		for _, f := range []string{"", "cgroup.procs", "cgroup.threads", "cgroup.subtree_control"} {
			if err := os.Chown(filepath.Join(p, f), other, other); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := r.guard.ApplyCgroups(Cgroups{id: unitPorts}); err != nil {
		t.Fatal(err)
	}
	unit := r.in(unitPath)
	for _, c := range []struct{ name, op, want string }{
		{"attack: move to the parent, bind", "move=" + r.cg + ";tcp4,127.0.0.1,9999", "move: EACCES"},
		{"attack: move to a sibling unit of the same user, bind", "move=" + siblingPath + ";tcp4,127.0.0.1,9999", "move: EACCES"},
		{"attack: move within the delegated tree, bind", "move=" + subPath + ";tcp4,127.0.0.1,9999", "EPERM"},
		{"control: move within the delegated tree, listed port", "move=" + subPath + ";tcp4,127.0.0.1,8080", "ok 8080"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := unit.run(other, c.op); got != c.want {
				t.Fatalf("%s: %q, want %q", c.op, got, c.want)
			}
		})
	}
	t.Run("attack: move to the parent as root", func(t *testing.T) {
		// Root may: the unit's restriction no longer applies (the harden
		// drop-in's ProtectControlGroups=yes makes the tree read-only to
		// the service).
		if got := unit.run(0, "move="+r.cg+";tcp4,127.0.0.1,9999"); got != "ok 9999" {
			t.Fatalf("root: %q, want ok 9999 (the documented limit)", got)
		}
	})
}
