package startgate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/ruleset"
)

// kernel answers ReadUsers from a script: one answer per call, the last repeated.
type kernel struct {
	answers []func() (map[uint32]string, error)
	calls   int
}

func (k *kernel) ReadUsers() (map[uint32]string, error) {
	i := min(k.calls, len(k.answers)-1)
	k.calls++
	return k.answers[i]()
}

func users(m map[uint32]string) func() (map[uint32]string, error) {
	return func() (map[uint32]string, error) { return m, nil }
}

func fail(err error) func() (map[uint32]string, error) {
	return func() (map[uint32]string, error) { return nil, err }
}

func TestRestricted(t *testing.T) {
	for _, c := range []struct {
		name string
		read func() (map[uint32]string, error)
		want bool
		err  bool
	}{
		{"no table yet", fail(ruleset.ErrNoTable), false, false},
		{"table without the uid", users(map[uint32]string{1001: "allow_web"}), false, false},
		{"uid mapped to its chain", users(map[uint32]string{1001: "allow_web", 1002: "allow_billing"}), true, false},
		{"read error", fail(errors.New("netlink: boom")), false, true},
	} {
		got, err := Restricted(&kernel{answers: []func() (map[uint32]string, error){c.read}}, 1002)
		if got != c.want || (err != nil) != c.err {
			t.Errorf("%s: Restricted = %v, %v; want %v, error %v", c.name, got, err, c.want, c.err)
		}
	}
}

func TestWaitPassesOnceEnforced(t *testing.T) {
	k := &kernel{answers: []func() (map[uint32]string, error){
		fail(ruleset.ErrNoTable), users(map[uint32]string{}), users(map[uint32]string{1002: "allow_billing"}),
	}}
	if err := Wait(context.Background(), k, 1002, nil, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if k.calls != 3 {
		t.Errorf("%d reads, want 3 (no table, not yet, enforced)", k.calls)
	}
}

func TestWaitFailsClosed(t *testing.T) {
	k := &kernel{answers: []func() (map[uint32]string, error){users(map[uint32]string{1001: "allow_web"})}}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the deadline has passed: one read, then give up
	err := Wait(ctx, k, 1002, nil, time.Hour)
	if !errors.Is(err, ErrNotEnforced) {
		t.Fatalf("Wait = %v, want ErrNotEnforced", err)
	}
}

func TestWaitGivesUpWithoutPrivilege(t *testing.T) {
	k := &kernel{answers: []func() (map[uint32]string, error){fail(fmt.Errorf("list table: %w", syscall.EPERM))}}
	err := Wait(context.Background(), k, 1002, nil, time.Hour) // would block for an hour if it retried
	if err == nil || errors.Is(err, ErrNotEnforced) || !errors.Is(err, syscall.EPERM) {
		t.Fatalf("Wait = %v, want the permission error at once", err)
	}
}

func TestUnitCgroup(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "system.slice/shop.service/.control"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, self := range []string{"system.slice/shop.service", "/system.slice/shop.service/.control"} {
		if p, id, err := UnitCgroup(root, self, "shop.service"); err != nil || p != "system.slice/shop.service" || id == 0 {
			t.Errorf("UnitCgroup(%q) = %q, %d, %v", self, p, id, err)
		}
	}
	if _, _, err := UnitCgroup(root, "system.slice/other.service", "shop.service"); err == nil {
		t.Error("a gate outside its unit vouched for it")
	}
}

// units answers ReadCgroups/ReadUnits: the cgroup 7 of shop.service mapped.
type units struct{}

func (units) ReadCgroups() ([]ruleset.Cgroup, error) {
	return []ruleset.Cgroup{{ID: 7, Allowlist: "shop"}}, nil
}
func (units) ReadUnits() (map[string]string, error) {
	return map[string]string{"shop": "shop.service"}, nil
}

// A unit with listen: passes only once its cgroup is in the listen
// restriction too; a restriction that never loads keeps it shut.
func TestWaitUnitListen(t *testing.T) {
	if err := WaitUnit(context.Background(), units{}, "shop.service", 7, nil, time.Millisecond); err != nil {
		t.Fatalf("control: no listen: key: %v", err)
	}
	calls := 0
	listen := func(id uint64) (bool, error) {
		calls++
		return id == 7 && calls >= 3, nil
	}
	if err := WaitUnit(context.Background(), units{}, "shop.service", 7, listen, time.Millisecond); err != nil || calls != 3 {
		t.Fatalf("WaitUnit = %v after %d listen reads, want nil after 3", err, calls)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	never := func(uint64) (bool, error) { return false, fmt.Errorf("pinned map: %w", os.ErrNotExist) }
	if err := WaitUnit(ctx, units{}, "shop.service", 7, never, time.Millisecond); !errors.Is(err, ErrNotEnforced) {
		t.Fatalf("listen restriction never loaded: WaitUnit = %v, want ErrNotEnforced", err)
	}
}

// A user allowlist with listen: passes only once the uid is in the listen
// restriction too (egressd loads nftables first on its first load); a
// restriction that never loads keeps it shut, though nftables maps the uid.
func TestWaitListen(t *testing.T) {
	mapped := func() *kernel {
		return &kernel{answers: []func() (map[uint32]string, error){users(map[uint32]string{1002: "allow_billing"})}}
	}
	if err := Wait(context.Background(), mapped(), 1002, nil, time.Millisecond); err != nil {
		t.Fatalf("control: no listen: key: %v", err)
	}
	calls := 0
	listen := func(uid uint32) (bool, error) {
		calls++
		return uid == 1002 && calls >= 3, nil
	}
	if err := Wait(context.Background(), mapped(), 1002, listen, time.Millisecond); err != nil || calls != 3 {
		t.Fatalf("Wait = %v after %d listen reads, want nil after 3", err, calls)
	}
	// The listen restriction already holds the uid but nftables does not: not yet.
	k := &kernel{answers: []func() (map[uint32]string, error){fail(ruleset.ErrNoTable), users(map[uint32]string{1002: "allow_billing"})}}
	always := func(uint32) (bool, error) { return true, nil }
	if err := Wait(context.Background(), k, 1002, always, time.Millisecond); err != nil || k.calls != 2 {
		t.Fatalf("Wait = %v after %d nftables reads, want nil after 2", err, k.calls)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	never := func(uint32) (bool, error) { return false, fmt.Errorf("pinned map: %w", os.ErrNotExist) }
	err := Wait(ctx, mapped(), 1002, never, time.Millisecond)
	if !errors.Is(err, ErrNotEnforced) || !strings.Contains(err.Error(), "listen: restriction") {
		t.Fatalf("listen restriction never loaded: Wait = %v, want ErrNotEnforced naming it", err)
	}
	// No CAP_BPF: the pinned map cannot be opened; waiting would not change that.
	denied := func(uint32) (bool, error) { return false, fmt.Errorf("open pin: %w", syscall.EPERM) }
	if err := Wait(context.Background(), mapped(), 1002, denied, time.Hour); err == nil || errors.Is(err, ErrNotEnforced) || !errors.Is(err, syscall.EPERM) {
		t.Fatalf("Wait = %v, want the permission error at once", err)
	}
}
