//go:build linux

package bindguard

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/egressd/egressd/internal/cgroup"
	"github.com/egressd/egressd/internal/netns"
	"github.com/egressd/egressd/internal/systest"
	"golang.org/x/sys/unix"
)

const (
	protected = 64281 // the protected service's uid
	other     = 64282 // another service, unrestricted
	helperEnv = "EGRESSD_BINDGUARD_HELPER"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "pingpong" {
		os.Exit(pingpong(os.Args[len(os.Args)-1]))
	}
	if os.Getenv(helperEnv) == "sockoptloop" {
		os.Exit(sockoptLoop(os.Args[len(os.Args)-1]))
	}
	if os.Getenv(helperEnv) != "" {
		os.Exit(helper(os.Args[len(os.Args)-1]))
	}
	os.Exit(m.Run())
}

// rig is a cgroup, a bpffs and a network namespace the test creates, the
// guard attached to that cgroup, and the test binary as the helper that
// performs binds inside them as a given uid.
type rig struct {
	t     testing.TB
	cg    string
	pins  string
	ns    *netns.NS
	guard *Guard
	bin   string
}

func newRig(t testing.TB) *rig {
	t.Helper()
	systest.Require(t)
	root, err := cgroup.Root()
	if err != nil {
		t.Fatal(err)
	}
	cg, err := os.MkdirTemp(root, "egressd-bindguard-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Every helper has exited; the cgroup must be empty to go.
		if err := os.Remove(cg); err != nil {
			t.Errorf("remove test cgroup: %v", err)
		}
	})
	bpffs, err := os.MkdirTemp("/run", "egressd-bpffs-")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", bpffs, "bpf", 0, "mode=0700"); err != nil {
		os.Remove(bpffs)
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(bpffs, 0); err != nil {
			t.Errorf("unmount test bpffs: %v", err)
		}
		os.Remove(bpffs)
	})
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	// The helper runs as unprivileged uids: a copy of the test binary they
	// may execute (go test's build directory is root's alone).
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("/run", "egressd-bindguard-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	helperBin := filepath.Join(dir, "helper")
	if err := os.WriteFile(helperBin, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, cg: cg, pins: filepath.Join(bpffs, "egressd"), ns: ns, bin: helperBin}
	r.open()
	t.Cleanup(func() {
		r.guard.Close()
		if err := Remove(r.pins); err != nil {
			t.Errorf("remove pins: %v", err)
		}
		if left := Pinned(r.pins); len(left) > 0 {
			t.Errorf("pins left behind: %v", left)
		}
	})
	return r
}

func (r *rig) open() {
	r.t.Helper()
	g, err := Open(r.cg, r.pins)
	if err != nil {
		r.t.Fatal(err)
	}
	r.guard = g
}

func (r *rig) apply(p Policy) {
	r.t.Helper()
	if err := r.guard.Apply(p); err != nil {
		r.t.Fatal(err)
	}
}

// start runs the helper op as uid inside the test's cgroup and namespace.
func (r *rig) start(uid int, op string, files ...*os.File) (*exec.Cmd, *bufio.Reader) {
	r.t.Helper()
	return r.startEnv(uid, "1", op, files...)
}

func (r *rig) startEnv(uid int, mode, op string, files ...*os.File) (*exec.Cmd, *bufio.Reader) {
	r.t.Helper()
	cgf, err := os.Open(r.cg)
	if err != nil {
		r.t.Fatal(err)
	}
	defer cgf.Close()
	cmd := exec.Command(r.bin, "-test.run=^$", op)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	cmd.ExtraFiles = files
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential:  &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)},
		UseCgroupFD: true, CgroupFD: int(cgf.Fd()),
		Pdeathsig: syscall.SIGKILL,
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		r.t.Fatal(err)
	}
	if err := r.ns.Start(cmd); err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, bufio.NewReader(out)
}

// run runs op as uid and returns its one-line answer: "ok PORT" or the errno.
func (r *rig) run(uid int, op string) string {
	r.t.Helper()
	cmd, out := r.start(uid, op)
	line, _ := out.ReadString('\n')
	cmd.Wait()
	return strings.TrimSpace(line)
}

// helper performs op, a bind described as
// NETWORK,ADDR,PORT[,hold][,dropto=UID][,reuseport][,range=LO-HI][,listen][,autolisten],
// and prints "ok PORT" or the errno's name.
func helper(op string) int {
	if arg, ok := strings.CutPrefix(op, "getent="); ok {
		return getentHelper(arg)
	}
	if dst, rest, ok := strings.Cut(op, ";"); ok && strings.HasPrefix(dst, "move=") {
		// move=CGROUP;OP: move this process to CGROUP first, as the
		// service could (cgroup.procs), then perform OP.
		pid := []byte(strconv.Itoa(os.Getpid()))
		if err := os.WriteFile(filepath.Join(strings.TrimPrefix(dst, "move="), "cgroup.procs"), pid, 0); err != nil {
			var errno unix.Errno
			if errors.As(err, &errno) {
				fmt.Println("move:", unix.ErrnoName(errno))
			} else {
				fmt.Println("move:", err)
			}
			return 1
		}
		op = rest
	}
	if rest, ok := strings.CutPrefix(op, "userns;"); ok {
		return usernsHelper(rest, 0)
	}
	if rest, ok := strings.CutPrefix(op, "usernet;"); ok {
		return usernsHelper(rest, syscall.CLONE_NEWNET)
	}
	if rest, ok := strings.CutPrefix(op, "rt28="); ok {
		return rt28Helper(rest)
	}
	if op == "tcpmtu" {
		return tcpMTUHelper()
	}
	if mode, rest, ok := strings.Cut(op, ";"); ok && strings.HasPrefix(mode, "rtu=") {
		return rtuHelper(strings.TrimPrefix(mode, "rtu="), rest)
	}
	if ask, rest, ok := strings.Cut(op, ";"); ok && strings.HasPrefix(ask, "recv=") {
		return recvHelper(strings.TrimPrefix(ask, "recv="), rest)
	}
	if n, rest, ok := strings.Cut(op, ";"); ok {
		// flood=N;OP: perform OP N times first (each socket closed), then once
		// more as below.
		count, _ := strconv.Atoi(strings.TrimPrefix(n, "flood="))
		for i := 0; i < count; i++ {
			if res, err := bindOp(rest); err == nil {
				unix.Close(res.fd)
			}
		}
		op = rest
	}
	if strings.HasPrefix(op, "uring,") {
		return uringHelper(op)
	}
	if op == "sockopts" {
		return sockoptsHelper()
	}
	if op == "marks" {
		return marksHelper()
	}
	if ident, ok := strings.CutPrefix(op, "ping4,"); ok {
		return pingReceive(ident)
	}
	res, err := bindOp(op)
	if err != nil {
		if errno, ok := errors.Unwrap(err).(unix.Errno); ok {
			fmt.Println(unix.ErrnoName(errno))
		} else {
			fmt.Println(err)
		}
		return 1
	}
	fmt.Println("ok", res.port)
	if res.accept {
		// Tell the parent the port, then wait for one connection.
		tv := unix.Timeval{Sec: 10}
		unix.SetsockoptTimeval(res.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		if nfd, _, err := unix.Accept(res.fd); err == nil {
			unix.Close(nfd)
			fmt.Println("accepted")
		} else {
			fmt.Println("none:", err)
		}
	}
	return 0
}

type bindResult struct {
	fd     int
	port   int
	accept bool
}

func bindOp(op string) (bindResult, error) {
	f := strings.Split(op, ",")
	network, addr, port := f[0], f[1], f[2]
	opts := map[string]string{}
	for _, o := range f[3:] {
		k, v, _ := strings.Cut(o, "=")
		opts[k] = v
	}
	typ, proto := unix.SOCK_STREAM, unix.IPPROTO_TCP
	switch {
	case strings.HasPrefix(network, "udplite"):
		typ, proto = unix.SOCK_DGRAM, unix.IPPROTO_UDPLITE
	case strings.HasPrefix(network, "udp"):
		typ, proto = unix.SOCK_DGRAM, unix.IPPROTO_UDP
	case strings.HasPrefix(network, "mptcp"):
		proto = unix.IPPROTO_MPTCP
	}
	family := unix.AF_INET
	if strings.HasSuffix(network, "6") {
		family = unix.AF_INET6
	}
	var fd int
	var err error
	if fd, err = unix.Socket(family, typ, proto); err != nil {
		return bindResult{}, fmt.Errorf("socket: %w", err)
	}
	if _, ok := opts["hold"]; ok {
		// The socket exists; wait for the parent (a byte on fd 3) before
		// going on: it moves this process to another cgroup meanwhile.
		fmt.Println("made")
		if _, err := os.NewFile(3, "hold").Read(make([]byte, 1)); err != nil {
			return bindResult{}, fmt.Errorf("hold: %w", err)
		}
	}
	if uid, ok := opts["dropto"]; ok {
		// The socket was made as root; the rest runs as uid, as a service
		// that drops privileges after start (or is handed root's socket).
		n, _ := strconv.Atoi(uid)
		if err := unix.Setresgid(n, n, n); err != nil {
			return bindResult{}, fmt.Errorf("setresgid: %w", err)
		}
		if err := unix.Setresuid(n, n, n); err != nil {
			return bindResult{}, fmt.Errorf("setresuid: %w", err)
		}
	}
	if _, ok := opts["reuseport"]; ok {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return bindResult{}, fmt.Errorf("SO_REUSEPORT: %w", err)
		}
	}
	if rng, ok := opts["range"]; ok {
		lo, hi, _ := strings.Cut(rng, "-")
		l, _ := strconv.Atoi(lo)
		h, _ := strconv.Atoi(hi)
		// IP_LOCAL_PORT_RANGE (Linux 6.3; SOL_IP for IPv6 sockets too): the
		// ephemeral range of this socket.
		if err := unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_LOCAL_PORT_RANGE, l|h<<16); err != nil {
			return bindResult{}, fmt.Errorf("IP_LOCAL_PORT_RANGE: %w", err)
		}
	}
	_, bound := opts["unspec"]
	if bound && family == unix.AF_INET {
		// An AF_INET socket takes an AF_UNSPEC address for INADDR_ANY (an
		// old compatibility case of inet_bind), with a port.
		p, _ := strconv.Atoi(port)
		sa := unix.RawSockaddrInet4{Family: unix.AF_UNSPEC, Port: uint16(p>>8 | p&0xff<<8)}
		if _, _, e := unix.Syscall(unix.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa)); e != 0 {
			return bindResult{}, fmt.Errorf("bind: %w", e)
		}
	}
	if _, auto := opts["autolisten"]; !auto && !bound {
		p, _ := strconv.Atoi(port)
		var sa unix.Sockaddr
		ip := net.ParseIP(addr)
		if family == unix.AF_INET {
			sa = &unix.SockaddrInet4{Port: p, Addr: [4]byte(ip.To4())}
		} else {
			sa = &unix.SockaddrInet6{Port: p, Addr: [16]byte(ip.To16())}
		}
		if err := unix.Bind(fd, sa); err != nil {
			return bindResult{}, fmt.Errorf("bind: %w", err)
		}
	}
	_, listen := opts["listen"]
	_, auto := opts["autolisten"]
	if (listen || auto) && typ == unix.SOCK_STREAM {
		if err := unix.Listen(fd, 8); err != nil {
			return bindResult{}, fmt.Errorf("listen: %w", err)
		}
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return bindResult{}, fmt.Errorf("getsockname: %w", err)
	}
	res := bindResult{fd: fd, accept: listen || auto}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		res.port = sa.Port
	case *unix.SockaddrInet6:
		res.port = sa.Port
	}
	return res, nil
}

var policy = Policy{protected: {Ports: []Port{{TCP, 8080}, {TCP, 8081}, {UDP, 5353}}}}

func TestBindRestricted(t *testing.T) {
	r := newRig(t)
	r.apply(policy)
	// A socket's own ephemeral range (IP_LOCAL_PORT_RANGE) is clamped to the
	// namespace's: widen that so the range trick can reach 8080 and 9999.
	if err := r.ns.Sysctl("net/ipv4/ip_local_port_range", "8000 10000"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, op string
		uid      int
		want     string
	}{
		{"listed tcp4", "tcp4,127.0.0.1,8080", protected, "ok 8080"},
		{"unlisted tcp4", "tcp4,127.0.0.1,9999", protected, "EPERM"},
		{"unlisted tcp4 any address", "tcp4,0.0.0.0,9999", protected, "EPERM"},
		{"listed tcp6", "tcp6,::1,8080", protected, "ok 8080"},
		{"unlisted tcp6", "tcp6,::1,9999", protected, "EPERM"},
		{"unlisted tcp6 any address", "tcp6,::,9999", protected, "EPERM"},
		{"unlisted IPv4-mapped IPv6", "tcp6,::ffff:127.0.0.1,9999", protected, "EPERM"},
		{"listed IPv4-mapped IPv6", "tcp6,::ffff:127.0.0.1,8080", protected, "ok 8080"},
		{"listed udp4", "udp4,127.0.0.1,5353", protected, "ok 5353"},
		{"unlisted udp4", "udp4,127.0.0.1,9999", protected, "EPERM"},
		{"udp port listed for tcp only", "udp4,127.0.0.1,8080", protected, "EPERM"},
		{"tcp port listed for udp only", "tcp4,127.0.0.1,5353", protected, "EPERM"},
		{"unlisted udp6", "udp6,::,9999", protected, "EPERM"},
		// Port 0 binds as clients (and Go's runtime probe) do: allowed; a
		// listener there gets no connection (TestListenEphemeral).
		{"port 0 is a client's bind", "udp6,::ffff:127.0.0.1,0,range=9999-9999", protected, "ok 9999"},
		{"another user is not restricted", "tcp4,127.0.0.1,9999", other, "ok 9999"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.run(tt.uid, tt.op); got != tt.want {
				t.Fatalf("%s as uid %d: %q, want %q", tt.op, tt.uid, got, tt.want)
			}
		})
	}
}

// dial connects from the namespace (as root) to port on loopback.
func (r *rig) dial(port string) error {
	var c net.Conn
	err := r.ns.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp4", "127.0.0.1:"+port, 2*time.Second)
		return err
	})
	if c != nil {
		c.Close()
	}
	return err
}

// listenAndDial starts op as uid (a listener), dials the port it reports
// and returns the dial's error and what the listener saw.
func (r *rig) listenAndDial(uid int, op string) (string, error, string) {
	r.t.Helper()
	cmd, out := r.start(uid, op)
	first, _ := out.ReadString('\n')
	first = strings.TrimSpace(first)
	port, ok := strings.CutPrefix(first, "ok ")
	if !ok {
		cmd.Wait()
		return first, nil, ""
	}
	derr := r.dial(port)
	if derr != nil {
		cmd.Process.Kill() // it would wait for a connection that cannot come
	}
	second, _ := out.ReadString('\n')
	cmd.Wait()
	return first, derr, strings.TrimSpace(second)
}

// serves: op's listener (on port want, when set) accepts the dialled connection.
func (r *rig) serves(t *testing.T, uid int, op, want string) {
	t.Helper()
	first, derr, second := r.listenAndDial(uid, op)
	if (want != "" && first != "ok "+want) || derr != nil || second != "accepted" {
		t.Fatalf("listener %q, dial %v, then %q; want ok %s, a connection, accepted", first, derr, second, want)
	}
}

// dropped: op's listener comes up (on port want, when set), and no
// connection reaches it.
func (r *rig) dropped(t *testing.T, uid int, op, want string) {
	t.Helper()
	first, derr, second := r.listenAndDial(uid, op)
	if !strings.HasPrefix(first, "ok ") || (want != "" && first != "ok "+want) {
		t.Fatalf("listener: %q, want ok %s", first, want)
	}
	if derr == nil || second == "accepted" {
		t.Fatalf("a connection reached the listener (%s): dial %v, listener %q", first, derr, second)
	}
}

// A listen() on an unbound socket, or on one bound to port 0, has a port no
// bind hook refused: the ingress program drops connections to it.
func TestListenEphemeral(t *testing.T) {
	r := newRig(t)
	r.apply(policy)
	if err := r.ns.Sysctl("net/ipv4/ip_local_port_range", "8000 10000"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		uid    int
		op     string
		port   string // the port the listener must report ("" any)
		serves bool
	}{
		{"control: listed port serves", protected, "tcp4,127.0.0.1,8080,listen", "8080", true},
		{"attack: autobound listener", protected, "tcp4,0,0,autolisten", "", false},
		{"attack: bind to port 0, then listen", protected, "tcp4,127.0.0.1,0,listen", "", false},
		{"attack: ephemeral range steered to an unlisted port", protected, "tcp4,127.0.0.1,0,range=9999-9999,listen", "9999", false},
		{"control: ephemeral range steered to the listed port serves", protected, "tcp4,127.0.0.1,0,range=8081-8081,listen", "8081", true},
		{"attack: autobound IPv6 listener, IPv4 client", protected, "tcp6,::,0,autolisten", "", false},
		{"control: another user's autobound listener serves", other, "tcp4,0,0,autolisten", "", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.serves {
				r.serves(t, c.uid, c.op, c.port)
			} else {
				r.dropped(t, c.uid, c.op, c.port)
			}
		})
	}
}

// MPTCP: the listener the service gets is a socket of the kernel's (the
// first subflow), which binds and listens on its behalf. An explicit bind is
// checked against the caller; a listener on the kernel's port must be
// dropped by ingress, which sees the subflow's socket, not the service's.
func TestRedteamMPTCPListener(t *testing.T) {
	r := newRig(t)
	r.apply(policy)
	if err := r.ns.Sysctl("net/mptcp/enabled", "1"); err != nil {
		t.Skipf("no MPTCP in this kernel: %v", err)
	}
	t.Run("control: listed port serves", func(t *testing.T) { r.serves(t, protected, "mptcp4,127.0.0.1,8080,listen", "8080") })
	t.Run("attack: bind an unlisted port", func(t *testing.T) {
		if got := r.run(protected, "mptcp4,127.0.0.1,9999,listen"); got != "EPERM" {
			t.Fatalf("MPTCP bind of 9999: %q, want EPERM", got)
		}
		if got := r.run(protected, "mptcp6,::,9999,listen"); got != "EPERM" {
			t.Fatalf("MPTCP bind of [::]:9999: %q, want EPERM", got)
		}
	})
	for _, op := range []string{"mptcp4,0,0,autolisten", "mptcp4,127.0.0.1,0,listen", "mptcp6,::,0,autolisten"} {
		t.Run("attack: "+op, func(t *testing.T) { r.dropped(t, protected, op, "") })
	}
	t.Run("control: another user's autobound MPTCP listener serves", func(t *testing.T) { r.serves(t, other, "mptcp4,0,0,autolisten", "") })
}

// A listener bound while its port was listed: once the port is unlisted,
// connections to it are dropped (ingress reads the policy per packet).
func TestRedteamListenerNarrowed(t *testing.T) {
	r := newRig(t)
	r.apply(policy)
	cmd, out := r.start(protected, "tcp4,127.0.0.1,8081,listen")
	defer cmd.Wait()
	defer cmd.Process.Kill()
	if line, _ := out.ReadString('\n'); strings.TrimSpace(line) != "ok 8081" {
		t.Fatalf("listener: %q", line)
	}
	r.apply(Policy{protected: {Ports: []Port{{TCP, 8080}}}})
	if err := r.dial("8081"); err == nil {
		t.Fatal("a connection reached the listener on 8081 after 8081 was unlisted")
	}
	r.apply(policy)
	if err := r.dial("8081"); err != nil {
		t.Fatalf("control: 8081 listed again: %v", err)
	}
}

// An AF_UNSPEC address on an AF_INET socket binds INADDR_ANY: the bind4 hook
// still reads its port.
func TestRedteamBindUnspec(t *testing.T) {
	r := newRig(t)
	r.apply(policy)
	for _, op := range []string{"tcp4,0,9999,unspec", "udp4,0,9999,unspec"} {
		if got := r.run(protected, op); got != "EPERM" {
			t.Errorf("protected %s: %q, want EPERM", op, got)
		}
		if got := r.run(other, op); got != "ok 9999" {
			t.Errorf("control: another user's %s: %q", op, got)
		}
	}
	if got := r.run(protected, "tcp4,0,8080,unspec"); got != "ok 8080" {
		t.Errorf("control: the listed port: %q", got)
	}
}

// UDP-Lite is UDP's code with its own protocol number: the bind hooks see
// it, and listen: lists neither it nor any port for it.
func TestRedteamUDPLiteBind(t *testing.T) {
	r := newRig(t)
	r.apply(policy)
	for _, op := range []string{"udplite4,127.0.0.1,9999", "udplite4,127.0.0.1,5353", "udplite6,::,9999", "udplite6,::ffff:127.0.0.1,9999"} {
		if got := r.run(protected, op); got != "EPERM" {
			t.Errorf("protected %s: %q, want EPERM", op, got)
		}
	}
	if got := r.run(other, "udplite4,127.0.0.1,9999"); got != "ok 9999" {
		t.Errorf("control: another user's UDP-Lite bind: %q", got)
	}
	if got := r.run(protected, "udp4,127.0.0.1,5353"); got != "ok 5353" {
		t.Errorf("control: the listed UDP port: %q", got)
	}
}

// SO_REUSEPORT on a listed port held by another user's service: the kernel
// lets only the same uid share a port, so the protected service cannot
// steal half of another's connections.
func TestReuseportOtherService(t *testing.T) {
	r := newRig(t)
	r.apply(Policy{protected: {Ports: []Port{{TCP, 8080}}}})
	holder, out := r.start(other, "tcp4,127.0.0.1,8080,reuseport,listen")
	if line, _ := out.ReadString('\n'); strings.TrimSpace(line) != "ok 8080" {
		t.Fatalf("holder: %q", line)
	}
	if got := r.run(protected, "tcp4,127.0.0.1,8080,reuseport,listen"); got != "EADDRINUSE" {
		t.Fatalf("protected SO_REUSEPORT bind of a port another uid holds: %q, want EADDRINUSE", got)
	}
	holder.Process.Kill()
	holder.Wait()
	if got := r.run(protected, "tcp4,127.0.0.1,8080,reuseport,listen"); got != "ok 8080" {
		t.Fatalf("control: the listed port once free: %q", got)
	}
}

// A socket created by root and handed to the service: binding it is checked
// against the caller, so it gains nothing. (A socket root already bound and
// listens on is the known limit: docs/security.md.)
func TestInheritedSocketBind(t *testing.T) {
	r := newRig(t)
	r.apply(policy)
	op := fmt.Sprintf("tcp4,127.0.0.1,%%d,dropto=%d", protected)
	if got := r.run(0, fmt.Sprintf(op, 9999)); got != "EPERM" {
		t.Fatalf("bind of a root-made socket by the protected uid: %q, want EPERM", got)
	}
	if got := r.run(0, fmt.Sprintf(op, 8080)); got != "ok 8080" {
		t.Fatalf("control: root-made socket on the listed port: %q", got)
	}
}

// Enforcement outlives egressd: the pins keep the programs and the policy;
// a new Open takes them over and replaces the programs in place.
func TestPinnedAcrossRestart(t *testing.T) {
	r := newRig(t)
	r.apply(policy)
	r.guard.Close()
	if got := r.run(protected, "tcp4,127.0.0.1,9999"); got != "EPERM" {
		t.Fatalf("with egressd gone: %q, want EPERM", got)
	}
	r.open()
	if got := r.run(protected, "tcp4,127.0.0.1,9999"); got != "EPERM" {
		t.Fatalf("after a restart: %q, want EPERM", got)
	}
	loaded, err := r.guard.Loaded()
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(loaded[protected].Ports); got != "[{6 8080} {6 8081} {17 5353}]" {
		t.Fatalf("loaded policy %s", got)
	}
	// Widening, narrowing and lifting take effect.
	r.apply(Policy{protected: {Ports: []Port{{TCP, 9999}}}})
	if got := r.run(protected, "tcp4,127.0.0.1,9999"); got != "ok 9999" {
		t.Fatalf("after listing 9999: %q", got)
	}
	if got := r.run(protected, "tcp4,127.0.0.1,8080"); got != "EPERM" {
		t.Fatalf("after removing 8080: %q", got)
	}
	r.apply(Policy{})
	if got := r.run(protected, "tcp4,127.0.0.1,8080"); got != "ok 8080" {
		t.Fatalf("restriction lifted: %q", got)
	}
}

// The events ring buffer filled (no reader, more refusals than it holds):
// a refusal does not depend on its report being written.
func TestRedteamEventsFlooded(t *testing.T) {
	r := newRig(t)
	r.apply(policy)
	// 256 KiB of 32-byte records and their 8-byte headers: ~6,500 fill it.
	if got := r.run(protected, "flood=10000;tcp4,127.0.0.1,9999"); got != "EPERM" {
		t.Fatalf("bind of 9999 with the ring buffer full: %q, want EPERM", got)
	}
	first, derr, second := r.listenAndDial(protected, "tcp4,0,0,autolisten")
	if !strings.HasPrefix(first, "ok ") || derr == nil || second == "accepted" {
		t.Fatalf("autobound listener with the ring buffer full (%s): dial %v, listener %q", first, derr, second)
	}
	if got := r.run(protected, "tcp4,127.0.0.1,8080"); got != "ok 8080" {
		t.Fatalf("control: the listed port: %q", got)
	}
	// The ring buffer is indeed full: a reader finds the first reports, and
	// fewer than were refused.
	rd, err := r.guard.Events()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	n := 0
	for {
		rd.SetDeadline(time.Now().Add(500 * time.Millisecond))
		if _, err := rd.Read(); err != nil {
			break
		}
		n++
	}
	t.Logf("%d reports read after 10,001 refusals", n)
	if n == 0 || n >= 10000 {
		t.Fatalf("%d reports read after 10,001 refusals: the ring buffer was not filled", n)
	}
	// Every report the full buffer did not take is counted (lost reports:
	// egressd's metric and bind_reports_lost event).
	lost, err := r.guard.Lost()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d reports counted lost", lost)
	if lost == 0 || uint64(n)+lost < 10001 {
		t.Fatalf("%d read + %d counted lost, after 10,001 refusals", n, lost)
	}
}

// Refused binds are reported; audit mode reports and allows.
func TestEvents(t *testing.T) {
	r := newRig(t)
	r.apply(policy)
	rd, err := r.guard.Events()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	next := func() Event {
		t.Helper()
		rd.SetDeadline(time.Now().Add(5 * time.Second))
		rec, err := rd.Read()
		if err != nil {
			t.Fatal(err)
		}
		e, err := Decode(rec.RawSample)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	r.run(protected, "udp6,::ffff:127.0.0.1,9999")
	if e := next(); e.UID != protected || e.Proto != UDP || e.Port != 9999 || e.Addr.String() != "::ffff:127.0.0.1" || e.Audit || e.Hook != HookBind {
		t.Fatalf("event %+v", e)
	}
	r.apply(Policy{protected: {Audit: true, Ports: policy[protected].Ports}})
	if got := r.run(protected, "tcp4,127.0.0.1,9998"); got != "ok 9998" {
		t.Fatalf("audit mode: %q, want the bind allowed", got)
	}
	if e := next(); e.Port != 9998 || e.Proto != TCP || e.Addr.String() != "127.0.0.1" || !e.Audit {
		t.Fatalf("audit event %+v", e)
	}
}

// pingpong makes n request/response round trips over loopback TCP between
// two of its own sockets, the server on the listed port 8080 (both in the test's cgroup, so every packet passes
// the ingress program) and prints the nanoseconds per round trip.
func pingpong(arg string) int {
	n, _ := strconv.Atoi(arg)
	l, err := net.Listen("tcp4", "127.0.0.1:8080") // listed: the restricted path, allowed
	if err != nil {
		fmt.Println(err)
		return 1
	}
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		buf := make([]byte, 1)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
			c.Write(buf) //nolint:errcheck
		}
	}()
	c, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		fmt.Println(err)
		return 1
	}
	buf := make([]byte, 1)
	start := time.Now()
	for i := 0; i < n; i++ {
		c.Write(buf) //nolint:errcheck
		if _, err := c.Read(buf); err != nil {
			fmt.Println(err)
			return 1
		}
	}
	fmt.Println(time.Since(start).Nanoseconds() / int64(n))
	return 0
}

// BenchmarkLoopbackRoundTrip: what the ingress program (every packet of
// every socket, at the root cgroup in production) costs a loopback TCP
// round trip of a restricted uid, against the same without the programs.
func BenchmarkLoopbackRoundTrip(b *testing.B) {
	r := newRig(b)
	run := func(b *testing.B) {
		cmd, out := r.startEnv(protected, "pingpong", fmt.Sprint(max(b.N, 1000)))
		line, _ := out.ReadString('\n')
		cmd.Wait()
		ns, err := strconv.ParseFloat(strings.TrimSpace(line), 64)
		if err != nil {
			b.Fatalf("pingpong: %q", line)
		}
		b.ReportMetric(ns, "ns/roundtrip")
	}
	r.apply(Policy{protected: {Ports: []Port{{TCP, 8080}}}})
	// The ingress program's own cost, from the kernel's run-time statistics
	// (enabled only while this descriptor is open).
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatal(err)
	}
	defer stats.Close()
	b.Run("attached", func(b *testing.B) {
		before := ingressStats(b, r.guard)
		run(b)
		after := ingressStats(b, r.guard)
		if n := after.RunCount - before.RunCount; n > 0 {
			b.ReportMetric(float64(after.Runtime-before.Runtime)/float64(n), "ns/ingress-run")
			b.ReportMetric(float64(n)/float64(max(b.N, 1000)), "ingress-runs/roundtrip")
		}
	})
	// With a unit restricted (another cgroup): every packet also walks the
	// socket's ancestor cgroups (levels 1 to MaxLevel, up to its depth).
	_, unitID := r.mkCgroup(r.cg, "unit.service")
	if err := r.guard.ApplyCgroups(Cgroups{unitID: {Ports: []Port{{TCP, 8080}}}}); err != nil {
		b.Fatal(err)
	}
	b.Run("attached, a unit restricted", func(b *testing.B) {
		before := ingressStats(b, r.guard)
		run(b)
		after := ingressStats(b, r.guard)
		if n := after.RunCount - before.RunCount; n > 0 {
			b.ReportMetric(float64(after.Runtime-before.Runtime)/float64(n), "ns/ingress-run")
		}
	})
	r.guard.Close()
	if err := Remove(r.pins); err != nil {
		b.Fatal(err)
	}
	b.Run("detached", run)
	r.open() // for the cleanup
}

func ingressStats(b *testing.B, g *Guard) *ebpf.ProgramStats {
	b.Helper()
	return hookStats(b, g, "ingress")
}

// hookStats is the run-time statistics of the program on the hook name.
func hookStats(b *testing.B, g *Guard, name string) *ebpf.ProgramStats {
	b.Helper()
	i := slices.Index(Hooks(), name)
	if i < 0 {
		b.Fatalf("no hook %s", name)
	}
	info, err := g.links[i].Info()
	if err != nil {
		b.Fatal(err)
	}
	prog, err := ebpf.NewProgramFromID(info.Program)
	if err != nil {
		b.Fatal(err)
	}
	defer prog.Close()
	st, err := prog.Stats()
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// sockoptLoop sets IP_TOS on a UDP socket N times and prints the
// nanoseconds per call.
func sockoptLoop(arg string) int {
	n, _ := strconv.Atoi(arg)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDP)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		if err := unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_TOS, 0x10); err != nil {
			fmt.Println(err)
			return 1
		}
	}
	fmt.Println(float64(time.Since(start).Nanoseconds()) / float64(n))
	return 0
}

// BenchmarkSetsockopt is the cost the setsockopt program adds to every
// setsockopt of the host (it is attached at the root): an option it passes
// (IP_TOS), by a restricted uid, with the program attached and detached.
func BenchmarkSetsockopt(b *testing.B) {
	r := newRig(b)
	r.apply(policy)
	run := func(b *testing.B) {
		cmd, out := r.startEnv(protected, "sockoptloop", fmt.Sprint(max(b.N, 100000)))
		line, _ := out.ReadString('\n')
		cmd.Wait()
		ns, err := strconv.ParseFloat(strings.TrimSpace(line), 64)
		if err != nil {
			b.Fatalf("sockoptloop: %q", line)
		}
		b.ReportMetric(ns, "ns/setsockopt")
	}
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatal(err)
	}
	defer stats.Close()
	b.Run("attached", func(b *testing.B) {
		before := hookStats(b, r.guard, "setsockopt")
		run(b)
		after := hookStats(b, r.guard, "setsockopt")
		if n := after.RunCount - before.RunCount; n > 0 {
			b.ReportMetric(float64(after.Runtime-before.Runtime)/float64(n), "ns/program-run")
		}
	})
	r.guard.Close()
	if err := Remove(r.pins); err != nil {
		b.Fatal(err)
	}
	b.Run("detached", run)
	r.open() // for the cleanup
}
