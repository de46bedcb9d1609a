//go:build linux

package bindguard

// Unit tests of the parts that need no kernel map, no BPF and no root: they
// run as any user (make cover runs them as nobody).

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// fakeMap is a map in memory that logs each write, in order, and can fail
// the write whose key is failOn.
type fakeMap struct {
	m      map[any]uint8
	ops    []string
	failOn any
	err    error
}

func newFakeMap[K comparable](have map[K]uint8) *fakeMap {
	f := &fakeMap{m: map[any]uint8{}}
	for k, v := range have {
		f.m[k] = v
	}
	return f
}

func (f *fakeMap) Put(k, v interface{}) error {
	if f.failOn != nil && k == f.failOn {
		return f.err
	}
	f.ops = append(f.ops, fmt.Sprintf("put %v=%v", k, v))
	f.m[k] = v.(uint8)
	return nil
}

func (f *fakeMap) Delete(k interface{}) error {
	if f.failOn != nil && k == f.failOn {
		return f.err
	}
	f.ops = append(f.ops, fmt.Sprintf("del %v", k))
	if _, ok := f.m[k]; !ok {
		return ebpf.ErrKeyNotExist
	}
	delete(f.m, k)
	return nil
}

func have[K comparable](f *fakeMap) map[K]uint8 {
	out := map[K]uint8{}
	for k, v := range f.m {
		out[k.(K)] = v
	}
	return out
}

func index(t *testing.T, ops []string, op string) int {
	t.Helper()
	for i, o := range ops {
		if o == op {
			return i
		}
	}
	t.Fatalf("no %q in %q", op, ops)
	return -1
}

func TestProtoName(t *testing.T) {
	for p, want := range map[uint8]string{TCP: "tcp", UDP: "udp", 132: "132", 0: "0"} {
		if got := ProtoName(p); got != want {
			t.Errorf("ProtoName(%d) = %q, want %q", p, got, want)
		}
	}
}

func TestRuleMode(t *testing.T) {
	if m := (Rule{}).mode(); m != modeEnforce {
		t.Errorf("enforce rule: mode %d, want %d", m, modeEnforce)
	}
	if m := (Rule{Audit: true}).mode(); m != modeAudit {
		t.Errorf("audit rule: mode %d, want %d", m, modeAudit)
	}
}

func TestHooks(t *testing.T) {
	if got, want := Hooks(), []string{"bind4", "bind6", "ingress", "setsockopt"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Hooks() = %q, want %q", got, want)
	}
}

func TestSameRules(t *testing.T) {
	a := Port{TCP, 80}
	b := Port{UDP, 53}
	c := Port{TCP, 443}
	base := Policy{1: {Ports: []Port{a, b}}, 2: {Audit: true}}
	for _, tc := range []struct {
		name  string
		other Policy
		same  bool
	}{
		{"ports in another order", Policy{1: {Ports: []Port{b, a}}, 2: {Audit: true}}, true},
		{"a port twice", Policy{1: {Ports: []Port{a, b, a}}, 2: {Audit: true}}, true},
		{"audit differs", Policy{1: {Ports: []Port{a, b}}, 2: {}}, false},
		{"a port less", Policy{1: {Ports: []Port{a}}, 2: {Audit: true}}, false},
		{"a port more", Policy{1: {Ports: []Port{a, b, c}}, 2: {Audit: true}}, false},
		{"another port", Policy{1: {Ports: []Port{a, c}}, 2: {Audit: true}}, false},
		{"another uid", Policy{1: {Ports: []Port{a, b}}, 3: {Audit: true}}, false},
		{"a uid less", Policy{1: {Ports: []Port{a, b}}}, false},
		{"empty", Policy{}, false},
	} {
		if got := samePolicy(base, tc.other); got != tc.same {
			t.Errorf("%s: samePolicy = %v, want %v", tc.name, got, tc.same)
		}
		if got := samePolicy(tc.other, base); got != tc.same {
			t.Errorf("%s (reversed): samePolicy = %v, want %v", tc.name, got, tc.same)
		}
	}
	if !sameRules(Cgroups{}, Cgroups(nil)) {
		t.Error("an empty and a nil Cgroups differ")
	}
}

// A uid newly restricted gets its ports before its marker (never stricter
// than the new policy), one no longer restricted loses its marker before
// its ports (never stricter than the old one); and the map ends as wanted.
func TestApplyPolicyOrder(t *testing.T) {
	f := newFakeMap[key](nil)
	p := Policy{1000: {Ports: []Port{{TCP, 8080}, {UDP, 53}}}}
	if err := applyPolicy(f, have[key](f), p); err != nil {
		t.Fatal(err)
	}
	marker := index(t, f.ops, fmt.Sprint("put ", key{UID: 1000}, "=1"))
	for _, pt := range p[1000].Ports {
		if i := index(t, f.ops, fmt.Sprint("put ", key{UID: 1000, Port: pt.Port, Proto: pt.Proto}, "=1")); i > marker {
			t.Errorf("port %v put after the uid's marker: %q", pt, f.ops)
		}
	}
	if got := policyOf(have[key](f)); !samePolicy(got, p) {
		t.Errorf("map holds %v, want %v", got, p)
	}

	// The same policy again writes nothing.
	f.ops = nil
	if err := applyPolicy(f, have[key](f), p); err != nil || len(f.ops) != 0 {
		t.Errorf("unchanged policy: %v, writes %q", err, f.ops)
	}

	// To audit mode with one port less, and another uid.
	p2 := Policy{1000: {Audit: true, Ports: []Port{{TCP, 8080}}}, 1001: {}}
	f.ops = nil
	if err := applyPolicy(f, have[key](f), p2); err != nil {
		t.Fatal(err)
	}
	// Port 53 goes only once the uid is in audit mode: enforcing without
	// it would be stricter than both the old and the new policy.
	audit := index(t, f.ops, fmt.Sprint("put ", key{UID: 1000}, "=2"))
	index(t, f.ops, fmt.Sprint("put ", key{UID: 1001}, "=1"))
	if del := index(t, f.ops, fmt.Sprint("del ", key{UID: 1000, Port: 53, Proto: UDP})); del < audit {
		t.Errorf("port 53 deleted before the uid went to audit mode: %q", f.ops)
	}
	if got := policyOf(have[key](f)); !samePolicy(got, p2) {
		t.Errorf("map holds %v, want %v", got, p2)
	}

	// Unrestricted again: the marker goes before the port.
	f.ops = nil
	if err := applyPolicy(f, have[key](f), Policy{1001: {}}); err != nil {
		t.Fatal(err)
	}
	if m, pt := index(t, f.ops, fmt.Sprint("del ", key{UID: 1000})), index(t, f.ops, fmt.Sprint("del ", key{UID: 1000, Port: 8080, Proto: TCP})); m > pt {
		t.Errorf("marker deleted after the port: %q", f.ops)
	}
	if len(f.m) != 1 {
		t.Errorf("map holds %v, want uid 1001's marker only", f.m)
	}
}

func TestApplyPolicyErrors(t *testing.T) {
	f := newFakeMap[key](nil)
	err := applyPolicy(f, nil, Policy{7: {Ports: []Port{{TCP, 0}}}})
	if err == nil || !strings.Contains(err.Error(), "uid 7: port 0") {
		t.Errorf("port 0: %v", err)
	}
	if len(f.ops) != 0 {
		t.Errorf("port 0: writes %q", f.ops)
	}

	boom := errors.New("boom")
	f = newFakeMap[key](nil)
	f.failOn, f.err = key{UID: 7, Port: 22, Proto: TCP}, boom
	err = applyPolicy(f, nil, Policy{7: {Ports: []Port{{TCP, 22}}}})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "uid 7 port 22/6") {
		t.Errorf("failed put: %v", err)
	}
	if _, ok := f.m[key{UID: 7}]; ok {
		t.Error("the marker went in although its port failed")
	}

	// A delete of an entry already gone is no error; another failure is.
	f = newFakeMap[key](nil)
	stale := map[key]uint8{{UID: 9}: 1}
	if err := applyPolicy(f, stale, nil); err != nil {
		t.Errorf("delete of a missing entry: %v", err)
	}
	f.failOn, f.err = key{UID: 9}, boom
	if err := applyPolicy(f, stale, nil); !errors.Is(err, boom) || !strings.Contains(err.Error(), "delete uid 9") {
		t.Errorf("failed delete: %v", err)
	}
}

func TestSyncMapTooManyEntries(t *testing.T) {
	f := newFakeMap[key](nil)
	p := Policy{}
	for uid := uint32(0); uid <= MaxEntries; uid++ {
		p[uid] = Rule{}
	}
	err := applyPolicy(f, nil, p)
	if err == nil || !strings.Contains(err.Error(), "more than the 65536") {
		t.Errorf("%d entries: %v", len(p), err)
	}
	if len(f.ops) != 0 {
		t.Errorf("too many entries: %d writes", len(f.ops))
	}
}

// The units marker (key 0) goes in before the first cgroup marker and out
// after the last one, and stays while Expected is wanted.
func TestApplyCgroupsUnitsMarker(t *testing.T) {
	units := cgroupKey{}
	f := newFakeMap[cgroupKey](nil)
	c := Cgroups{42: {Ports: []Port{{TCP, 80}}}}
	if err := applyCgroups(f, have[cgroupKey](f), c); err != nil {
		t.Fatal(err)
	}
	u := index(t, f.ops, fmt.Sprint("put ", units, "=1"))
	m := index(t, f.ops, fmt.Sprint("put ", cgroupKey{ID: 42}, "=1"))
	pt := index(t, f.ops, fmt.Sprint("put ", cgroupKey{ID: 42, Port: 80, Proto: TCP}, "=1"))
	if !(pt < m && u < m) {
		t.Errorf("port, units marker, cgroup marker out of order: %q", f.ops)
	}
	if got := cgroupsOf(have[cgroupKey](f)); !sameRules(got, c) {
		t.Errorf("map holds %v, want %v", got, c)
	}

	// Unchanged: nothing written, the units marker included.
	f.ops = nil
	if err := applyCgroups(f, have[cgroupKey](f), c); err != nil || len(f.ops) != 0 {
		t.Errorf("unchanged: %v, writes %q", err, f.ops)
	}

	// The unit stops but its allowlist still has listen: the marker stays.
	f.ops = nil
	if err := applyCgroups(f, have[cgroupKey](f), Cgroups{Expected: {}}); err != nil {
		t.Fatal(err)
	}
	if v, ok := f.m[units]; !ok || v != 1 || len(f.m) != 1 {
		t.Errorf("expected only: map holds %v, want the units marker only", f.m)
	}
	if m, pt := index(t, f.ops, fmt.Sprint("del ", cgroupKey{ID: 42})), index(t, f.ops, fmt.Sprint("del ", cgroupKey{ID: 42, Port: 80, Proto: TCP})); m > pt {
		t.Errorf("cgroup marker deleted after its port: %q", f.ops)
	}

	// No unit rule at all: the units marker goes, last.
	f.m[cgroupKey{ID: 43}] = 2
	f.ops = nil
	if err := applyCgroups(f, have[cgroupKey](f), nil); err != nil {
		t.Fatal(err)
	}
	if len(f.m) != 0 {
		t.Errorf("map holds %v, want nothing", f.m)
	}
	if i := index(t, f.ops, fmt.Sprint("del ", units)); i != len(f.ops)-1 || i < index(t, f.ops, fmt.Sprint("del ", cgroupKey{ID: 43})) {
		t.Errorf("units marker not deleted last: %q", f.ops)
	}

	// Nothing wanted and nothing there: nothing written.
	f.ops = nil
	if err := applyCgroups(f, nil, Cgroups{}); err != nil || len(f.ops) != 0 {
		t.Errorf("empty to empty: %v, writes %q", err, f.ops)
	}

	// A units marker of another value is set to 1.
	f = newFakeMap[cgroupKey](map[cgroupKey]uint8{units: 7})
	if err := applyCgroups(f, have[cgroupKey](f), Cgroups{Expected: {}}); err != nil || f.m[units] != 1 {
		t.Errorf("units marker 7: %v, now %v", err, f.m[units])
	}
}

func TestApplyCgroupsErrors(t *testing.T) {
	f := newFakeMap[cgroupKey](nil)
	err := applyCgroups(f, nil, Cgroups{5: {Ports: []Port{{UDP, 0}}}})
	if err == nil || !strings.Contains(err.Error(), "cgroup 5: port 0") || len(f.ops) != 0 {
		t.Errorf("port 0: %v, writes %q", err, f.ops)
	}

	boom := errors.New("boom")
	f = newFakeMap[cgroupKey](nil)
	f.failOn, f.err = cgroupKey{}, boom
	err = applyCgroups(f, nil, Cgroups{5: {}})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "set the units marker") {
		t.Errorf("units marker put: %v", err)
	}
	if _, ok := f.m[cgroupKey{ID: 5}]; ok {
		t.Error("cgroup marker in without the units marker")
	}

	f = newFakeMap[cgroupKey](nil)
	f.failOn, f.err = cgroupKey{}, boom
	if err := applyCgroups(f, map[cgroupKey]uint8{{}: 1}, nil); !errors.Is(err, boom) || !strings.Contains(err.Error(), "delete the units marker") {
		t.Errorf("units marker delete: %v", err)
	}

	f = newFakeMap[cgroupKey](nil)
	f.failOn, f.err = cgroupKey{ID: 5}, boom
	if err := applyCgroups(f, nil, Cgroups{5: {}}); !errors.Is(err, boom) || !strings.Contains(err.Error(), "set cgroup 5 port 0/0") {
		t.Errorf("cgroup marker put: %v", err)
	}

	// The units marker already gone from the map: no error.
	f = newFakeMap[cgroupKey](nil)
	if err := applyCgroups(f, map[cgroupKey]uint8{{}: 1}, nil); err != nil {
		t.Errorf("units marker already gone: %v", err)
	}
}

// What the kernel's maps hold, read back: ports without their marker
// restrict nothing, ports come sorted, mode 2 is audit.
func TestPolicyOf(t *testing.T) {
	got := policyOf(map[key]uint8{
		{UID: 1}:                        modeEnforce,
		{UID: 1, Port: 443, Proto: TCP}: 1,
		{UID: 1, Port: 53, Proto: UDP}:  1,
		{UID: 1, Port: 80, Proto: TCP}:  1,
		{UID: 2}:                        modeAudit,
		{UID: 3, Port: 22, Proto: TCP}:  1, // no marker
	})
	want := Policy{1: {Ports: []Port{{TCP, 80}, {TCP, 443}, {UDP, 53}}}, 2: {Audit: true}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("policyOf = %v, want %v", got, want)
	}
}

func TestCgroupsOf(t *testing.T) {
	got := cgroupsOf(map[cgroupKey]uint8{
		{}:                               1, // the units marker
		{ID: 10}:                         modeAudit,
		{ID: 10, Port: 9000, Proto: UDP}: 1,
		{ID: 10, Port: 22, Proto: TCP}:   1,
		{ID: 11, Port: 80, Proto: TCP}:   1, // no marker
	})
	want := Cgroups{10: {Audit: true, Ports: []Port{{TCP, 22}, {UDP, 9000}}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("cgroupsOf = %v, want %v", got, want)
	}
	if got := cgroupsOf(map[cgroupKey]uint8{{}: 1}); len(got) != 0 {
		t.Errorf("units marker only: %v, want no rule", got)
	}
}

func record(size int, uid uint32, port uint16, proto, family, mode, hook uint8, addr []byte, cg uint64) []byte {
	b := make([]byte, size)
	binary.NativeEndian.PutUint32(b[0:], uid)
	binary.NativeEndian.PutUint16(b[4:], port)
	b[6], b[7], b[8], b[9] = proto, family, mode, hook
	copy(b[12:], addr)
	if size >= eventSize {
		binary.NativeEndian.PutUint64(b[32:], cg)
	}
	return b
}

func TestDecode(t *testing.T) {
	v6 := netip.MustParseAddr("2001:db8::7")
	mapped := netip.MustParseAddr("::ffff:192.0.2.9")
	for _, tc := range []struct {
		name string
		b    []byte
		want Event
	}{
		{"ipv4 by a unit's rule", record(eventSize, 1000, 8080, TCP, afInet, modeEnforce, 1, []byte{192, 0, 2, 1}, 77),
			Event{UID: 1000, Port: 8080, Proto: TCP, Addr: netip.MustParseAddr("192.0.2.1"), Hook: 1, Cgroup: 77}},
		{"ipv6 audit", record(eventSize, 1, 53, UDP, afInet6, modeAudit, 2, v6.AsSlice(), 0),
			Event{UID: 1, Port: 53, Proto: UDP, Addr: v6, Audit: true, Hook: 2}},
		{"v4-mapped stays", record(eventSize, 1, 53, UDP, afInet6, modeEnforce, 0, mapped.AsSlice(), 0),
			Event{UID: 1, Port: 53, Proto: UDP, Addr: mapped}},
		{"an earlier egressd's 32 bytes", record(eventSize-8, 5, 22, TCP, afInet, modeEnforce, 0, []byte{198, 51, 100, 1}, 0),
			Event{UID: 5, Port: 22, Proto: TCP, Addr: netip.MustParseAddr("198.51.100.1")}},
		{"unknown family: no address", record(eventSize, 5, 22, TCP, 99, modeEnforce, 0, []byte{1, 2, 3, 4}, 3),
			Event{UID: 5, Port: 22, Proto: TCP, Cgroup: 3}},
	} {
		got, err := Decode(tc.b)
		if err != nil || got != tc.want {
			t.Errorf("%s: Decode = %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
	if _, err := Decode(make([]byte, eventSize-9)); err == nil || !strings.Contains(err.Error(), "31 bytes, want 40") {
		t.Errorf("short record: %v", err)
	}
}

// A directory that is not bpffs and holds no pins.
func notBPFFS(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/run", "bindguard-unit-")
	if err != nil {
		dir = t.TempDir() // /run not writable (not root): any directory that is not bpffs
	} else {
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	if IsBPFFS(dir) {
		t.Fatalf("%s is on bpffs", dir)
	}
	return dir
}

func TestPinnedAndAttachedWithoutPins(t *testing.T) {
	dir := notBPFFS(t)
	if got := Pinned(dir); len(got) != 0 {
		t.Errorf("Pinned(empty dir) = %q", got)
	}
	if got := Pinned(filepath.Join(dir, "missing")); len(got) != 0 {
		t.Errorf("Pinned(missing dir) = %q", got)
	}
	want := []string{"listen bind4 program not pinned", "listen bind6 program not pinned", "listen ingress program not pinned", "listen setsockopt program not pinned"}
	if got := Attached(dir); !reflect.DeepEqual(got, want) {
		t.Errorf("Attached(empty dir) = %q, want %q", got, want)
	}
	// Plain files in the pins' places are not pins.
	for _, name := range []string{"bind6", "ingress"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if got := Pinned(dir); !reflect.DeepEqual(got, []string{"bind6", "ingress"}) {
		t.Errorf("Pinned = %q, want bind6 and ingress", got)
	}
	if got := Attached(dir); !reflect.DeepEqual(got, want) {
		t.Errorf("Attached(plain files) = %q, want %q", got, want)
	}
}

// Reading pins that are not there (or not BPF objects) is an error naming
// the directory, or, for the start gates' "expected" questions, none
// expected when the map is missing.
func TestReadPinsMissing(t *testing.T) {
	dir := notBPFFS(t)
	if _, err := ReadPinned(dir); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("ReadPinned: %v", err)
	}
	if _, err := CgroupPinned(dir, 5); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("CgroupPinned: %v", err)
	}
	if ok, err := UIDPinned(dir, 5); ok || err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("UIDPinned: %v, %v", ok, err)
	}
	// No map pinned: none expected (a kernel before 6.5 refuses bpf(2)
	// to a user without CAP_BPF: an error then, never "none expected").
	for name, f := range map[string]func(string) (bool, error){"UnitsExpected": UnitsExpected, "UsersExpected": UsersExpected} {
		ok, err := f(dir)
		if ok || (err != nil && !errors.Is(err, unix.EPERM)) {
			t.Errorf("%s(empty dir) = %v, %v; want false, nil", name, ok, err)
		}
	}
	if c, err := ReadPinnedCgroups(dir); err == nil || c != nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("ReadPinnedCgroups(empty dir): %v, %v", c, err)
	}

	// A plain file where the policy map is pinned is not a map.
	if err := os.WriteFile(filepath.Join(dir, "policy"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPinned(dir); err == nil {
		t.Error("ReadPinned(plain file): no error")
	}
	if ok, err := UsersExpected(dir); ok || err == nil {
		t.Errorf("UsersExpected(plain file) = %v, %v", ok, err)
	}
}

func TestBPFFSChecks(t *testing.T) {
	dir := notBPFFS(t)
	missing := filepath.Join(dir, "missing")
	if IsBPFFS(missing) {
		t.Error("IsBPFFS(missing) = true")
	}
	if err := EnsureBPFFS(missing); err == nil || !strings.Contains(err.Error(), "bpffs at "+missing) {
		t.Errorf("EnsureBPFFS(missing): %v", err)
	}
	if os.Geteuid() == 0 {
		t.Skip("as root EnsureBPFFS would mount a bpffs (the root tests cover that)")
	}
	if err := EnsureBPFFS(dir); err == nil || !strings.Contains(err.Error(), "is not a bpffs and egressd may not mount one there") {
		t.Errorf("EnsureBPFFS(not bpffs, not root): %v", err)
	}
}

func TestEnforcerWithoutGuard(t *testing.T) {
	if (&Enforcer{}).dir() != DefaultDir {
		t.Errorf("default dir %q", (&Enforcer{}).dir())
	}
	dir := notBPFFS(t)
	pins := filepath.Join(dir, "pins")
	opened := false
	e := &Enforcer{Dir: pins, Cgroup: dir, OnOpen: func(*Guard) { opened = true }}
	// Nothing to restrict, nothing pinned: nothing loaded.
	if err := e.Apply(nil, Cgroups{}); err != nil {
		t.Errorf("Apply(nothing): %v", err)
	}
	if opened || e.Pinned() != "" {
		t.Errorf("Apply(nothing) loaded a guard (pinned %q)", e.Pinned())
	}
	if found, err := e.Repair(); found != nil || err != nil {
		t.Errorf("Repair without a guard: %q, %v", found, err)
	}
	if err := e.Remove(); err != nil {
		t.Errorf("Remove with nothing pinned: %v", err)
	}
	if os.Geteuid() == 0 {
		t.Skip("as root the guard would load (the root tests cover that)")
	}
	// A restriction to load where no bpffs can be had: an error, nothing
	// claimed loaded.
	for name, apply := range map[string]func() error{
		"users":  func() error { return e.Apply(Policy{1000: {}}, nil) },
		"units":  func() error { return e.Apply(nil, Cgroups{Expected: {}}) },
		"pinned": func() error { return e.Apply(nil, nil) },
	} {
		if name == "pinned" {
			// An earlier egressd's pins (here: files in their place) must be
			// kept current even with nothing to restrict.
			if err := os.MkdirAll(pins, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(pins, "bind4"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		err := apply()
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "may not mount") {
			t.Errorf("%s: Apply without bpffs: %v", name, err)
		}
		if opened || e.Pinned() != "" {
			t.Errorf("%s: a guard claimed open", name)
		}
	}
	// The programs attach to the cgroup2 root by default: found, then the
	// same refusal.
	d := &Enforcer{Dir: pins}
	if err := d.Apply(Policy{1000: {}}, nil); !errors.Is(err, ErrUnsupported) || d.Pinned() != "" {
		t.Errorf("default cgroup: Apply without bpffs: %v", err)
	}
}

// The programs assemble: every jump and call reaches a label that exists
// once, and each ends by returning (a mistake here shows only when the
// kernel loads them, as root).
func TestProgramsAssemble(t *testing.T) {
	for _, h := range hooks {
		insns := h.insns(progMaps{})
		if len(insns) == 0 || insns[len(insns)-1].OpCode != asm.Return().OpCode {
			t.Errorf("%s: does not end with exit", h.name)
		}
		// Without a kernel the maps have no descriptor: their loads
		// (all into R1) are invalid until given one.
		maps := 0
		for i, ins := range insns {
			if ins.OpCode == asm.InvalidOpCode {
				n := asm.LoadMapPtr(asm.R1, 100+i)
				n.Metadata = ins.Metadata
				insns[i] = n
				maps++
			}
		}
		if maps == 0 {
			t.Errorf("%s: looks up no map", h.name)
		}
		var buf bytes.Buffer
		if err := insns.Marshal(&buf, binary.LittleEndian); err != nil {
			t.Errorf("%s: %v", h.name, err)
		}
	}
}

// Close of a guard whose maps were never opened (Open failed early).
func TestCloseWithoutMaps(t *testing.T) {
	g := &Guard{}
	if err := g.Close(); err != nil || g.links != nil || g.policy != nil {
		t.Errorf("Close: %v, %+v", err, g)
	}
}

// Remove reports what it could not delete, and deletes the rest.
func TestRemoveErrors(t *testing.T) {
	dir := notBPFFS(t)
	// A plain file where a link is pinned: not a link, an error.
	if err := os.WriteFile(filepath.Join(dir, "bind4"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// A map pin that cannot be removed (a directory with something in it).
	if err := os.MkdirAll(filepath.Join(dir, "policy", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "lost"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err := Remove(dir)
	if err == nil || !strings.Contains(err.Error(), "load pinned link "+filepath.Join(dir, "bind4")) || !strings.Contains(err.Error(), filepath.Join(dir, "policy")) {
		t.Errorf("Remove: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "lost")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lost pin not removed: %v", err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("the directory went although a pin stayed in it: %v", err)
	}
}
