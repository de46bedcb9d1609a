//go:build linux

package ruleset

import (
	"testing"
	"time"
)

// Held. What a protected user (unprivileged) can change in the kernel is
// the packet path: its denied connections update egressd's dynamic sets
// (denied, denylog: per-uid counters and rate meters) without a
// transaction, so without a new generation. The skip loses nothing there:
// a full read-back does not compare those elements either (their
// declarations are, and those change only by a transaction), and the
// allowlist sets have no rule that writes them from the packet path. The
// control: the connections did change the dynamic sets, and the allowed
// destination still connects.
func TestRedteamRTVPacketPathLeavesNothingToVerify(t *testing.T) {
	e := newEnv(t)
	e.serveTCP(t, "192.0.2.10:443")
	e.serveTCP(t, "192.0.2.20:7000")
	ch := rtvWatch(t, e)
	p := basePlan()
	if err := e.k.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	rtvCaughtUp(t, e.k, "after egressd's apply")
	rtvDrain(ch)
	for i := 0; i < 20; i++ {
		mustRefuse(t, "uidA → 192.0.2.20:7000", e.tcp(uidA, "192.0.2.20:7000"))
	}
	if err := e.tcp(uidA, "192.0.2.10:443"); err != nil {
		t.Fatalf("control: uidA → 192.0.2.10:443: %v", err)
	}
	c, err := e.k.conn()
	if err != nil {
		t.Fatal(err)
	}
	els, err := setElements(c, table, kDenied)
	if err != nil || len(els) == 0 {
		t.Fatalf("control: the denied connections left no element in %s (%d, %v)", kDenied, len(els), err)
	}
	if rtvReported(ch, 200*time.Millisecond) {
		t.Fatal("the packet path was reported as a transaction")
	}
	caught, err := e.k.CaughtUp()
	if err != nil || !caught {
		t.Fatalf("the packet path changed the generation (caught %v, %v)", caught, err)
	}
	// What a full read-back would have found: nothing, as the skip assumes.
	if fs, err := e.k.Verify(p); err != nil || len(fs) != 0 {
		t.Fatalf("HOLE: the packet path changed what a full verification compares (%v, %v), and the skip hides it", fs, err)
	}
}

// Held. Another network namespace (a container, a user namespace of the
// protected user, which gets CAP_NET_ADMIN there) has nf_tables of its
// own: its transactions neither reach egressd's monitor nor change the
// generation or any table in egressd's namespace. The control: the same
// transaction in egressd's namespace is reported.
func TestRedteamRTVOtherNamespaceTransaction(t *testing.T) {
	e := newEnv(t)
	ch := rtvWatch(t, e)
	p := basePlan()
	if err := e.k.ApplyFull(p); err != nil {
		t.Fatal(err)
	}
	rtvCaughtUp(t, e.k, "after egressd's apply")
	rtvDrain(ch)
	other, _ := newKernel(t, "192.0.2.99")
	// In the other namespace, from egressd's own writing port id too (port
	// ids are per namespace).
	rtvCommitFromPort(t, other.NetNSFd, e.k.own.port, "egressd")
	if rtvReported(ch, 300*time.Millisecond) {
		t.Fatal("another namespace's transaction reached egressd's monitor")
	}
	caught, err := e.k.CaughtUp()
	if err != nil || !caught {
		t.Fatalf("another namespace's transaction changed this namespace's generation (caught %v, %v)", caught, err)
	}
	if fs, err := e.k.Verify(p); err != nil || len(fs) != 0 {
		t.Fatalf("another namespace's transaction changed egressd's table: %v, %v", fs, err)
	}
	// Control.
	rtvCommitFromPort(t, e.k.NetNSFd, 0, "other")
	if !rtvReported(ch, 5*time.Second) {
		t.Fatal("control: a transaction in egressd's namespace was not reported")
	}
}
