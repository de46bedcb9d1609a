package check

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/bindguard"
	"github.com/egressd/egressd/internal/cgroup"
	"github.com/egressd/egressd/internal/policy"
	"github.com/egressd/egressd/internal/state"
	"github.com/egressd/egressd/ruleset"
)

func TestListenProblems(t *testing.T) {
	cfg := &config.Config{Allowlists: []*config.Allowlist{{Name: "web", Listen: []config.ListenPort{{Proto: "tcp", From: 8080, To: 8080}}}}}
	users := policy.Users{UIDs: map[string]uint32{"web": 1001}}
	kernel := bindguard.Policy{1001: {Ports: []bindguard.Port{{Proto: bindguard.TCP, Port: 8080}}}}
	read := map[string]bindguard.Policy{bindguard.DefaultDir: kernel}
	readListen = func(dir string) (bindguard.Policy, error) {
		if p, ok := read[dir]; ok {
			return p, nil
		}
		return nil, fmt.Errorf("open %s: %w", dir, os.ErrNotExist)
	}
	defer func() { readListen = bindguard.ReadPinned }()
	readListenCgroups = func(string) (bindguard.Cgroups, error) { return bindguard.Cgroups{}, nil }
	defer func() { readListenCgroups = bindguard.ReadPinnedCgroups }()
	var undone []string
	attachedListen = func(string) []string { return undone }
	defer func() { attachedListen = bindguard.Attached }()
	kinds := func(st *state.State) string {
		var out []string
		for _, p := range listenProblems(cfg, users, st) {
			out = append(out, p.Kind)
		}
		return fmt.Sprint(out)
	}
	if got := kinds(&state.State{ListenDir: bindguard.DefaultDir}); got != "[]" {
		t.Errorf("in sync: %s", got)
	}
	if got := kinds(&state.State{ListenDir: "/run/egressd/bpf"}); got != "[]" {
		t.Errorf("pinned through the drop-in's bind: %s", got)
	}
	if got := kinds(&state.State{ListenError: "no CAP_BPF"}); got != "[listen_unenforced]" {
		t.Errorf("daemon reports an error: %s", got)
	}
	if got := kinds(&state.State{}); got != "[listen_unenforced]" {
		t.Errorf("nothing loaded: %s", got)
	}
	undone = []string{"listen bind4 program detached from its cgroup"}
	if got := kinds(&state.State{ListenDir: bindguard.DefaultDir}); got != "[drift_listen]" {
		t.Errorf("a program detached: %s", got)
	}
	undone = nil
	read[bindguard.DefaultDir] = bindguard.Policy{}
	if got := kinds(&state.State{ListenDir: bindguard.DefaultDir}); got != "[drift_listen]" {
		t.Errorf("kernel lost the restriction: %s", got)
	}
	cfg.Allowlists[0].Listen = nil
	if got := kinds(&state.State{}); got != "[]" {
		t.Errorf("no listen: anywhere: %s", got)
	}
}

// A unit allowlist's listen: is checked against the cgroups of the unit
// running now.
func TestListenProblemsUnit(t *testing.T) {
	cfg := &config.Config{Allowlists: []*config.Allowlist{{Name: "shop", Unit: "shop.service", Listen: []config.ListenPort{{Proto: "tcp", From: 8080, To: 8080}}}}}
	readListen = func(string) (bindguard.Policy, error) { return bindguard.Policy{}, nil }
	defer func() { readListen = bindguard.ReadPinned }()
	kernel := bindguard.Cgroups{}
	readListenCgroups = func(string) (bindguard.Cgroups, error) { return kernel, nil }
	defer func() { readListenCgroups = bindguard.ReadPinnedCgroups }()
	attachedListen = func(string) []string { return nil }
	defer func() { attachedListen = bindguard.Attached }()
	var running []cgroup.Unit
	findUnits = func(string, *config.Config) ([]cgroup.Unit, error) { return running, nil }
	defer func() { findUnits = cgroup.Restricted }()
	kinds := func(st *state.State) string {
		var out []string
		for _, p := range listenProblems(cfg, policy.Users{}, st) {
			out = append(out, p.Kind)
		}
		return fmt.Sprint(out)
	}
	if got := kinds(&state.State{}); got != "[listen_unenforced]" {
		t.Errorf("unit not running, nothing loaded (its gate would fail): %s", got)
	}
	if got := kinds(&state.State{ListenDir: bindguard.DefaultDir}); got != "[]" {
		t.Errorf("unit not running, restriction loaded: %s", got)
	}
	running = []cgroup.Unit{{Name: "shop.service", Path: "system.slice/shop.service", ID: 42, Allowlist: "shop"}}
	if got := kinds(&state.State{}); got != "[listen_unenforced]" {
		t.Errorf("unit running, nothing loaded: %s", got)
	}
	if got := kinds(&state.State{ListenDir: bindguard.DefaultDir}); got != "[drift_listen]" {
		t.Errorf("unit's cgroup missing from the kernel: %s", got)
	}
	kernel[42] = bindguard.Rule{Ports: []bindguard.Port{{Proto: bindguard.TCP, Port: 8080}}}
	if got := kinds(&state.State{ListenDir: bindguard.DefaultDir}); got != "[]" {
		t.Errorf("in sync: %s", got)
	}
	kernel[42] = bindguard.Rule{Ports: []bindguard.Port{{Proto: bindguard.TCP, Port: 9999}}}
	if got := kinds(&state.State{ListenDir: bindguard.DefaultDir}); got != "[drift_listen]" {
		t.Errorf("other port in the kernel: %s", got)
	}
}

type untrackedKernel struct {
	fakeKernel
	rules []ruleset.Untracked
	err   error
}

func (k untrackedKernel) Untracked() ([]ruleset.Untracked, error) { return k.rules, k.err }

// Another table's notrack for datagrams opens listen: (docs/security.md):
// each rule is a problem while some allowlist has listen:, none without; a
// legacy raw table check cannot read is a note; an unreadable ruleset is
// said, not taken as clean.
func TestUntrackedProblems(t *testing.T) {
	listen := &config.Config{Allowlists: []*config.Allowlist{{Name: "web", Listen: []config.ListenPort{{Proto: "tcp", From: 8080, To: 8080}}}}}
	egressOnly := &config.Config{Allowlists: []*config.Allowlist{{Name: "web"}}}
	rule := ruleset.Untracked{Table: "ip raw", Chain: "pre", Handle: 4, Hook: "prerouting"}
	dir := t.TempDir()
	procNet = dir
	defer func() { procNet = "/proc/net" }()
	kinds := func(cfg *config.Config, k Kernel) string {
		ps, ns := untrackedProblems(cfg, k)
		var out []string
		for _, p := range ps {
			out = append(out, p.Kind+" "+p.Object)
		}
		for _, n := range ns {
			out = append(out, "note "+n.Kind)
		}
		return fmt.Sprint(out)
	}
	if got := kinds(listen, untrackedKernel{}); got != "[]" {
		t.Errorf("nothing untracked: %s", got)
	}
	if got := kinds(listen, untrackedKernel{rules: []ruleset.Untracked{rule}}); got != "[listen_untracked table ip raw chain pre (hook prerouting) rule handle 4]" {
		t.Errorf("a notrack rule: %s", got)
	}
	if got := kinds(egressOnly, untrackedKernel{rules: []ruleset.Untracked{rule}}); got != "[]" {
		t.Errorf("no listen: in use: %s", got)
	}
	if got := kinds(listen, untrackedKernel{err: errors.New("EPERM")}); got != "[listen_untracked nftables]" {
		t.Errorf("unreadable: %s", got)
	}
	if err := os.WriteFile(filepath.Join(dir, "ip_tables_names"), []byte("filter\nraw\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := kinds(listen, untrackedKernel{}); got != "[note legacy_raw_unread]" {
		t.Errorf("a legacy raw table: %s", got)
	}
}
