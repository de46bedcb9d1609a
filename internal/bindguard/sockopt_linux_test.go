//go:build linux

package bindguard

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// getentHelper is the helper's getent=RESOLV,UID,NAME, run as root in a
// mount namespace of its own: RESOLV bound over /etc/resolv.conf, then, as
// UID, glibc's getent hosts NAME (gethostbyname2: its stub resolver,
// res_send; getaddrinfo's AI_ADDRCONFIG would find no address but
// loopback's here).
func getentHelper(arg string) int {
	f := strings.Split(arg, ",")
	if len(f) != 3 {
		fmt.Println("getent=RESOLV,UID,NAME")
		return 1
	}
	if err := unix.Mount(f[0], "/etc/resolv.conf", "", unix.MS_BIND, ""); err != nil {
		fmt.Println("bind resolv.conf:", err)
		return 1
	}
	uid, _ := strconv.Atoi(f[1])
	if err := syscall.Setgroups(nil); err != nil {
		fmt.Println("setgroups:", err)
		return 1
	}
	if err := syscall.Setresgid(uid, uid, uid); err != nil {
		fmt.Println("setresgid:", err)
		return 1
	}
	if err := syscall.Setresuid(uid, uid, uid); err != nil {
		fmt.Println("setresuid:", err)
		return 1
	}
	getent, err := exec.LookPath("getent")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	err = syscall.Exec(getent, []string{"getent", "hosts", f[2]}, []string{"PATH=/usr/bin:/bin"})
	fmt.Println("exec getent:", err)
	return 1
}

// getent runs getentHelper for uid in the rig's cgroup and namespace and
// returns its output (getent's lines, or its exit status).
func (r *rig) getent(uid int, resolv, name string) string {
	r.t.Helper()
	cgf, err := os.Open(r.cg)
	if err != nil {
		r.t.Fatal(err)
	}
	defer cgf.Close()
	cmd := exec.Command(r.bin, "-test.run=^$", fmt.Sprintf("getent=%s,%d,%s", resolv, uid, name))
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Unshareflags: unix.CLONE_NEWNS, // Go makes it private: the bind stays in it
		UseCgroupFD:  true, CgroupFD: int(cgf.Fd()),
		Pdeathsig: syscall.SIGKILL,
	}
	var out strings.Builder
	cmd.Stdout = &out
	if err := r.ns.Start(cmd); err != nil {
		r.t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		return strings.TrimSpace(out.String() + " " + err.Error())
	}
	return strings.TrimSpace(out.String())
}

// Control of issue 28's setsockopt program: glibc's stub resolver (2.30 and
// later) turns IP_RECVERR on for its UDP socket and fails the query when it
// cannot. A restricted uid's and a restricted unit's lookups must still
// work: the program ignores the option instead of refusing it (with EPERM,
// as first built, every lookup failed).
func TestSockoptGlibcResolver(t *testing.T) {
	r := newRig(t)
	if _, err := exec.LookPath("getent"); err != nil {
		t.Skip("no getent (glibc) here")
	}
	r.tagInbound()
	var pc net.PacketConn
	if err := r.ns.Do(func() (err error) { pc, err = net.ListenPacket("udp4", "127.0.0.1:53"); return err }); err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		if len(q.Question) == 1 && q.Question[0].Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 7)})
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	dir, err := os.MkdirTemp("/run", "egressd-resolv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	resolv := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 127.0.0.1\noptions attempts:1 timeout:2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.apply(policy)
	unitPath, id := r.mkCgroup(r.cg, "svc.service")
	if err := r.guard.ApplyCgroups(Cgroups{id: unitPorts}); err != nil {
		t.Fatal(err)
	}
	const want = "192.0.2.7       svc.example.test"
	for _, c := range []struct {
		name string
		r    *rig
		uid  int
	}{{"unrestricted", r, other}, {"restricted uid", r, protected}, {"restricted unit", r.in(unitPath), other}} {
		if got := c.r.getent(c.uid, resolv, "svc.example.test"); !strings.HasPrefix(got, want) {
			t.Errorf("%s: getent hosts: %q, want %q...", c.name, got, want)
		}
	}
}
