//go:build linux

package ruleset

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/cgroup"
	"github.com/egressd/egressd/internal/nflog"
	"github.com/egressd/egressd/internal/systest"
	"github.com/google/nftables"
)

// testCgroups is a test-owned subtree of the cgroup2 hierarchy:
// ROOT/egressdtest-PID.slice, removed (with what the test made in it) at
// the end.
type testCgroups struct {
	root, slice string
}

func newTestCgroups(t *testing.T) *testCgroups {
	t.Helper()
	systest.Require(t)
	root, err := cgroup.Root()
	if err != nil {
		t.Fatalf("unit allowlists need cgroup v2: %v", err)
	}
	slice := fmt.Sprintf("egressdtest-%d.slice", os.Getpid())
	if err := os.Mkdir(filepath.Join(root, slice), 0o755); err != nil {
		t.Fatalf("create a test cgroup: %v", err)
	}
	tc := &testCgroups{root: root, slice: slice}
	t.Cleanup(func() {
		// Deepest first; the test's processes have exited.
		for _, d := range tc.dirs() {
			os.Remove(d) //nolint:errcheck
		}
	})
	return tc
}

// dirs lists the subtree's directories, deepest first.
func (tc *testCgroups) dirs() []string {
	var out []string
	filepath.WalkDir(filepath.Join(tc.root, tc.slice), func(p string, d os.DirEntry, err error) error { //nolint:errcheck
		if err == nil && d.IsDir() {
			out = append([]string{p}, out...)
		}
		return nil
	})
	return out
}

// make creates rel (below the test slice) and returns its path and id.
func (tc *testCgroups) make(t *testing.T, rel string) (string, uint64) {
	t.Helper()
	p := filepath.Join(tc.root, tc.slice, rel)
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	id, err := cgroup.ID(p)
	if err != nil {
		t.Fatal(err)
	}
	return p, id
}

// tcpIn connects to addr from a process of uid started in the cgroup dir:
// nil when it connected. bash's /dev/tcp: one connect, exit 0 on success.
func (e *env) tcpIn(dir string, uid int, addr netip.AddrPort) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	script := fmt.Sprintf("exec 3<>/dev/tcp/%s/%d", addr.Addr(), addr.Port())
	cmd := exec.Command("timeout", "2", "bash", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd()),
		Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	if err := e.w.NS.Do(cmd.Start); err != nil {
		return err
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return fmt.Errorf("connect failed (exit %d)", ee.ExitCode())
	}
	return err
}

func unitPlan(cgs ...Cgroup) Plan {
	d := Desired{
		Allowlists: []Allowlist{
			{Name: "a", Subject: UserSubject(uidA), Elements: []Element{ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.10/32"), 443, 443)}},
			{Name: "web", Subject: UnitSubject("web.service", UnitKeys([]string{"web"})["web"]), Elements: []Element{
				ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.10/32"), 443, 443),
				ElementFor(config.TCP, netip.MustParsePrefix("2001:db8::10/128"), 443, 443),
			}},
		},
		DenyLog: config.Defaults().DenyLog,
		Cgroups: cgs,
	}
	return Render(d)
}

func TestKernelUnit(t *testing.T) {
	e := newEnv(t)
	tc := newTestCgroups(t)
	for _, a := range []string{"192.0.2.10:443", "192.0.2.10:444", "[2001:db8::10]:443", "[2001:db8::10]:444"} {
		e.serveTCP(t, a)
	}
	allowed, other, allowed6, other6 := netip.MustParseAddrPort("192.0.2.10:443"), netip.MustParseAddrPort("192.0.2.10:444"),
		netip.MustParseAddrPort("[2001:db8::10]:443"), netip.MustParseAddrPort("[2001:db8::10]:444")
	web, webID := tc.make(t, "web.service")
	neighbour, _ := tc.make(t, "neighbour.service")
	sub, _ := tc.make(t, "web.service/worker") // a Delegate=yes unit's own sub-cgroup

	p := unitPlan(Cgroup{ID: webID, Allowlist: "web"})
	if err := e.k.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	mustAllow(t, "web.service, uid without allowlist → its allowed destination", e.tcpIn(web, uidNoList, allowed))
	mustAllow(t, "web.service → allowed IPv6", e.tcpIn(web, uidNoList, allowed6))
	if err := e.tcpIn(web, uidNoList, other); err == nil {
		t.Error("web.service → 192.0.2.10:444 connected: the unit is not restricted")
	}
	if err := e.tcpIn(web, uidNoList, other6); err == nil {
		t.Error("web.service → [2001:db8::10]:444 connected")
	}
	if err := e.tcpIn(web, 0, other); err == nil {
		t.Error("root in web.service → 192.0.2.10:444 connected: a unit allowlist binds every uid in it")
	}
	if err := e.tcpIn(sub, uidNoList, other); err == nil {
		t.Error("web.service/worker → 192.0.2.10:444 connected: a sub-cgroup escapes")
	}
	mustAllow(t, "neighbour.service, same uid → anything", e.tcpIn(neighbour, uidNoList, other))
	mustAllow(t, "same uid outside any unit → anything", e.tcp(uidNoList, "192.0.2.10:444"))
	// Both: a restricted user inside a restricted unit passes both lists.
	mustAllow(t, "uid a in web.service → in both lists", e.tcpIn(web, uidA, allowed))
	if err := e.tcpIn(web, uidA, allowed6); err == nil {
		t.Error("uid a in web.service → [2001:db8::10]:443 (web's, not a's) connected: the user's list was skipped")
	}
	mustAllow(t, "uid a outside → its list", e.tcp(uidA, "192.0.2.10:443"))

	if fs, err := e.k.Verify(p); err != nil || len(fs) != 0 {
		t.Fatalf("verify: %v %v", fs, err)
	}
	if n, err := e.k.ReadDenyCounters(); err != nil || n["web"] < 4 {
		t.Fatalf("deny counters %v, %v: want web's rejects counted", n, err)
	}
	if cgs, err := e.k.ReadCgroups(); err != nil || len(cgs) != 1 || cgs[0] != (Cgroup{ID: webID, Allowlist: "web"}) {
		t.Fatalf("ReadCgroups = %v, %v", cgs, err)
	}
	if us, err := e.k.ReadUnits(); err != nil || us["web"] != "web.service" || len(us) != 1 {
		t.Fatalf("ReadUnits = %v, %v", us, err)
	}
	sets, err := e.k.ReadSets()
	if err != nil || len(sets[SetID{Allowlist: "web", Kind: SubjectUnit}.Name()]) != 1 {
		t.Fatalf("ReadSets = %v, %v", sets, err)
	}

	// A restart: the unit's cgroup goes, a new one (a new id) comes. Until
	// egressd maps it, nothing restricts it (the start gate, docs/units.md,
	// keeps the unit's processes from running in that time).
	if err := os.Remove(sub); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(web); err != nil {
		t.Fatal(err)
	}
	web2, webID2 := tc.make(t, "web.service")
	if webID2 == webID {
		t.Fatal("a new cgroup kept the old id")
	}
	add, del := CgroupDelta(p.Cgroups, []Cgroup{{ID: webID2, Allowlist: "web"}})
	p2 := unitPlan(Cgroup{ID: webID2, Allowlist: "web"})
	if err := e.k.ApplyCgroups(p2, add, del); err != nil {
		t.Fatal(err)
	}
	if err := e.tcpIn(web2, uidNoList, other); err == nil {
		t.Error("restarted web.service → 192.0.2.10:444 connected")
	}
	mustAllow(t, "restarted web.service → allowed", e.tcpIn(web2, uidNoList, allowed))
	if fs, err := e.k.Verify(p2); err != nil || len(fs) != 0 {
		t.Fatalf("verify after the restart: %v %v", fs, err)
	}
	if fs, _ := e.k.Verify(p); len(fs) == 0 {
		t.Fatal("verify against the old cgroups found nothing")
	}

	// A full rebuild keeps the unit restricted.
	if err := e.k.ApplyFull(p2); err != nil {
		t.Fatal(err)
	}
	if err := e.tcpIn(web2, uidNoList, other); err == nil {
		t.Error("after a full rebuild: web.service → 192.0.2.10:444 connected")
	}
}

// The text of a plan with unit allowlists has the unit map, sets and chains.
func TestNFTUnitText(t *testing.T) {
	p := unitPlan(Cgroup{ID: 7, Allowlist: "web"})
	text := p.NFT()
	web := unitChain(p.Of(SubjectUnit)[0].Subject.ID)
	for _, want := range []string{"map unitchains {", "7 : jump " + web, "set uallow4 {", "type mark . inet_proto . ipv4_addr . inet_service", "chain " + web + " {", "socket cgroupv2 level 8 vmap @unitchains"} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q in\n%s", want, text)
		}
	}
	if strings.Contains(Render(Desired{}).NFT(), "chain unit") {
		t.Error("unit chains without a unit allowlist")
	}
}

// A unit's logged deny carries its unit key as the packet's mark, which is
// how a deny event names the unit whatever the socket's uid.
func TestKernelUnitLog(t *testing.T) {
	e := newEnv(t)
	tc := newTestCgroups(t)
	e.serveTCP(t, "192.0.2.10:444")
	web, webID := tc.make(t, "web.service")
	p := unitPlan(Cgroup{ID: webID, Allowlist: "web"})
	if err := e.k.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	l, err := nflog.Listen(p.DenyLog.Group, e.ns.Fd())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		l.Close()
	}()
	if err := e.tcpIn(web, uidNoList, netip.MustParseAddrPort("192.0.2.10:444")); err == nil {
		t.Fatal("web.service → 192.0.2.10:444 connected")
	}
	pks, err := l.Read()
	if err != nil || len(pks) == 0 {
		t.Fatalf("no logged packet: %v", err)
	}
	if pk := pks[0]; pk.Prefix != LogPrefixOf(SubjectUnit, false, p.DenyLog.Prefix) || pk.Mark != p.Of(SubjectUnit)[0].Subject.ID || pk.UID != uidNoList {
		t.Fatalf("logged %+v, want prefix %q, mark %d (web's key)", pk, LogPrefixOf(SubjectUnit, false, p.DenyLog.Prefix), p.Of(SubjectUnit)[0].Subject.ID)
	}
}

// systemd's NFTSet= puts a starting unit's new cgroup in the unowned
// NFTSet= table before egressd has seen it: the unit reaches nothing until
// egressd maps the cgroup, then its allowlist applies; egressd's rebuilds
// keep systemd's elements.
func TestKernelUnitNFTSet(t *testing.T) {
	e := newEnv(t)
	tc := newTestCgroups(t)
	for _, a := range []string{"192.0.2.10:443", "192.0.2.10:444"} {
		e.serveTCP(t, a)
	}
	allowed, other := netip.MustParseAddrPort("192.0.2.10:443"), netip.MustParseAddrPort("192.0.2.10:444")
	p := unitPlan()
	if err := e.k.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	web, webID := tc.make(t, "web.service")
	// systemd, another netlink socket, announces the cgroup.
	sd := &Netlink{NetNSFd: e.ns.Fd()}
	c, err := sd.conn()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetAddElements(cgroupSet(NFTSetUnits), []nftables.SetElement{{Key: cgroupKey(webID)}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("systemd's NFTSet= write into %s: %v", HelperTableName, err)
	}
	if err := e.tcpIn(web, uidNoList, allowed); err == nil {
		t.Error("announced, not yet mapped: web.service reached even its allowed destination (want: nothing)")
	}
	// Why a table of its own: egressd's, when owned, refuses systemd's write.
	if owned, _, err := e.k.Ownership(); err == nil && owned {
		c, _ := sd.conn()
		c.SetAddElements(unitChainsMap(), []nftables.SetElement{cgroupElement(webID, 1)}) //nolint:errcheck
		if err := c.Flush(); !errors.Is(err, syscall.EPERM) {
			t.Errorf("another socket's write into the owned table: %v, want EPERM", err)
		}
	}
	// A rebuild keeps systemd's element.
	if err := e.k.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	if ids, err := e.k.ReadNFTSetUnits(); err != nil || len(ids) != 1 || ids[0] != webID {
		t.Fatalf("after a rebuild the NFTSet= set holds %v, %v; want %d", ids, err, webID)
	}
	if err := e.tcpIn(web, uidNoList, other); err == nil {
		t.Error("after a rebuild: announced web.service reached 192.0.2.10:444")
	}
	p2 := unitPlan(Cgroup{ID: webID, Allowlist: "web"})
	if err := e.k.ApplyCgroups(p2, p2.Cgroups, nil); err != nil {
		t.Fatal(err)
	}
	mustAllow(t, "mapped web.service → its allowed destination", e.tcpIn(web, uidNoList, allowed))
	if err := e.tcpIn(web, uidNoList, other); err == nil {
		t.Error("mapped web.service reached 192.0.2.10:444")
	}
	// Without unit allowlists the NFTSet= table goes; remove takes it too.
	if err := e.k.ApplyFull(basePlan()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.k.ReadNFTSetUnits(); err == nil {
		t.Error("the NFTSet= table outlived the last unit allowlist")
	}
	if err := e.k.ApplyFull(p2); err != nil {
		t.Fatal(err)
	}
	if err := e.k.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.k.ReadNFTSetUnits(); err == nil {
		t.Error("egressd remove left the NFTSet= table")
	}
}

// udpIn sends one datagram from src (bound with SO_REUSEADDR) to dst, from a
// process of uid started in the cgroup dir, and waits a second for the
// echo: nil when it came back.
func (e *env) udpIn(dir string, uid int, src, dst netip.AddrPort) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	script := fmt.Sprintf(`import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("%s", %d))
s.settimeout(1)
try:
    s.sendto(b"x", ("%s", %d))
    s.recv(16)
except OSError as e:
    print(e)
    sys.exit(1)
`, src.Addr(), src.Port(), dst.Addr(), dst.Port())
	cmd := exec.Command("/usr/bin/python3", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd()),
		Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := e.w.NS.Do(cmd.Start); err != nil {
		return err
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(out.String()))
	}
	return nil
}

// The unit owner check: a restricted unit's socket that joins an
// established flow another process opened (the same source address and
// port, SO_REUSEADDR) is judged by its destination, in the original
// direction, because the flow's label does not hold the unit's key; a flow
// the unit opened itself goes on. The key is a constant of the unit's chain
// and the check a masked compare of label bits 64-95 (what nft can print);
// with the mask or the compare wrong (e.g. every established packet of the
// unit returned) the ride connects.
func TestKernelUnitOwnerCheck(t *testing.T) {
	e := newEnv(t)
	tc := newTestCgroups(t)
	e.serveUDP(t, "192.0.2.10:444")
	e.serveUDP(t, "192.0.2.10:445")
	web, webID := tc.make(t, "web.service")
	outside, _ := tc.make(t, "other.service")
	keys := UnitKeys([]string{"web"})
	p := Render(Desired{
		Allowlists: []Allowlist{{Name: "web", Subject: UnitSubject("web.service", keys["web"]), Elements: []Element{
			ElementFor(config.UDP, netip.MustParsePrefix("192.0.2.10/32"), 445, 445)}}},
		DenyLog: config.Defaults().DenyLog,
		Cgroups: []Cgroup{{ID: webID, Allowlist: "web"}},
	})
	if err := e.k.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	src := netip.MustParseAddrPort("192.0.2.20:40000")
	listed, unlisted := netip.MustParseAddrPort("192.0.2.10:445"), netip.MustParseAddrPort("192.0.2.10:444")
	// Its own flow, new then established (the same tuple again).
	mustAllow(t, "web.service → its allowed UDP destination", e.udpIn(web, uidNoList, src, listed))
	mustAllow(t, "web.service again on its own flow", e.udpIn(web, uidNoList, src, listed))
	if err := e.udpIn(web, uidNoList, netip.MustParseAddrPort("192.0.2.20:40001"), unlisted); err == nil {
		t.Fatal("web.service → 192.0.2.10:444 (not in its allowlist) answered")
	}
	// Another unit (unrestricted) opens a flow to the unlisted destination...
	ride := netip.MustParseAddrPort("192.0.2.20:40002")
	mustAllow(t, "other.service → 192.0.2.10:444", e.udpIn(outside, uidNoList, ride, unlisted))
	// ...and the restricted unit joins it: the attack.
	if err := e.udpIn(web, uidNoList, ride, unlisted); err == nil {
		t.Error("web.service rode other.service's established flow to 192.0.2.10:444")
	}
	// The flow still works for its opener.
	mustAllow(t, "other.service on its own flow", e.udpIn(outside, uidNoList, ride, unlisted))
}
