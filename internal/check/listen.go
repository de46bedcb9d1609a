package check

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/bindguard"
	"github.com/egressd/egressd/internal/cgroup"
	"github.com/egressd/egressd/internal/policy"
	"github.com/egressd/egressd/internal/state"
	"github.com/egressd/egressd/ruleset"
)

// readListen reads the pinned listen restriction (a variable: tests).
var readListen = bindguard.ReadPinned

// readListenCgroups reads the units' part of it; findUnits finds the
// restricted units' cgroups running now (variables: tests).
var (
	readListenCgroups = bindguard.ReadPinnedCgroups
	findUnits         = cgroup.Restricted
	attachedListen    = bindguard.Attached
)

// listenProblems compares allowlists' listen: with what the running daemon
// reports and the kernel holds.
func listenProblems(cfg *config.Config, users policy.Users, st *state.State) []Problem {
	want := policy.Listen(cfg, users)
	var names []string
	units := false
	for _, a := range cfg.Allowlists {
		if a.Listen != nil {
			names = append(names, a.Name)
			units = units || a.IsUnit()
		}
	}
	// Units' rules are keyed by the cgroups running now (a unit that is not
	// running has none; its start gate waits for its next one).
	wantCg := bindguard.Cgroups{}
	if units {
		found, err := findUnits("", cfg)
		if err != nil {
			return []Problem{{Kind: "unit_cgroups", Object: "cgroups", Detail: err.Error(), Fix: "unit allowlists need the cgroup v2 hierarchy (Linux ≥ 5.13)"}}
		}
		var cgs []ruleset.Cgroup
		for _, f := range found {
			cgs = append(cgs, ruleset.Cgroup{ID: f.ID, Allowlist: f.Allowlist})
		}
		wantCg = policy.ListenCgroups(cfg, cgs)
	}
	_, expected := wantCg[bindguard.Expected] // read back as the units marker, not a cgroup
	delete(wantCg, bindguard.Expected)
	if len(want) == 0 && len(wantCg) == 0 && !expected && st.ListenDir == "" {
		return nil
	}
	obj := "listen: " + strings.Join(names, ", ")
	if st.ListenError != "" {
		return []Problem{{Kind: "listen_unenforced", Object: obj, Detail: "listen: is not enforced, those services may listen on any port: " + st.ListenError,
			Fix: "egressd needs CAP_BPF, bpf(2) and bpffs at /sys/fs/bpf (egressd.service as shipped grants them; a drop-in or container may take them away): docs/hardening.md, Listening ports"}}
	}
	if st.ListenDir == "" {
		return []Problem{{Kind: "listen_unenforced", Object: obj, Detail: "the daemon reports no listen restriction loaded",
			Fix: "restart egressd (systemctl restart egressd); look for listen_unenforced in its log"}}
	}
	dir := st.ListenDir
	have, err := readListen(dir)
	if errors.Is(err, os.ErrNotExist) && dir != bindguard.DefaultDir {
		// Under systemd the daemon pins through a bind of /sys/fs/bpf/egressd
		// that only its own mount namespace has.
		dir = bindguard.DefaultDir
		have, err = readListen(dir)
	}
	if err != nil {
		return []Problem{{Kind: "cannot_run", Object: st.ListenDir, Detail: err.Error(), Fix: "run egressd check as root"}}
	}
	if undone := attachedListen(dir); len(undone) > 0 {
		return []Problem{{Kind: "drift_listen", Object: dir, Detail: "the listen restriction was undone by another process: " + strings.Join(undone, ", "),
			Fix: "the daemon puts it back at its next verify (drift_repaired); if this stays, restart egressd (systemctl restart egressd)"}}
	}
	if !samePolicy(want, have) {
		return []Problem{{Kind: "drift_listen", Object: st.ListenDir, Detail: fmt.Sprintf("the kernel's listen restriction differs from the allowlists (kernel %v, allowlists %v)", have, want),
			Fix: "restart egressd (systemctl restart egressd): it rewrites the restriction"}}
	}
	haveCg, err := readListenCgroups(dir)
	if err != nil {
		return []Problem{{Kind: "cannot_run", Object: dir, Detail: err.Error(), Fix: "run egressd check as root"}}
	}
	if !sameCgroups(wantCg, haveCg) {
		return []Problem{{Kind: "drift_listen", Object: dir, Detail: fmt.Sprintf("the kernel's listen restriction of units' cgroups differs from the allowlists (kernel %v, allowlists %v; a unit that restarted this instant is mapped within 100 ms)", haveCg, wantCg),
			Fix: "restart egressd (systemctl restart egressd): it rewrites the restriction"}}
	}
	return nil
}

// sameCgroups compares by cgroup, mode and ports.
func sameCgroups(a, b bindguard.Cgroups) bool {
	if len(a) != len(b) {
		return false
	}
	for id, r := range a {
		o, ok := b[id]
		if !ok || !samePolicy(bindguard.Policy{0: r}, bindguard.Policy{0: o}) {
			return false
		}
	}
	return true
}

func samePolicy(a, b bindguard.Policy) bool {
	norm := func(p bindguard.Policy) map[uint32]map[bindguard.Port]bool {
		out := map[uint32]map[bindguard.Port]bool{}
		for uid, r := range p {
			m := map[bindguard.Port]bool{{}: r.Audit}
			for _, pt := range r.Ports {
				m[pt] = true
			}
			out[uid] = m
		}
		return out
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

// procNet is where the legacy iptables tables in use are listed (a
// variable: tests).
var procNet = "/proc/net"

// untrackedProblems: with listen: in use, another table's rule that exempts
// datagrams from connection tracking opens the listen restriction (a peer's
// datagram has no conntrack direction: docs/security.md). Each such rule is
// a problem; a loaded legacy iptables raw table, which check cannot read,
// is a note.
func untrackedProblems(cfg *config.Config, k Kernel) (problems, notes []Problem) {
	listen := false
	for _, a := range cfg.Allowlists {
		listen = listen || a.Listen != nil
	}
	if !listen {
		return nil, nil
	}
	if ur, ok := k.(ruleset.UntrackedReader); ok {
		rules, err := ur.Untracked()
		if err != nil {
			problems = append(problems, Problem{Kind: "listen_untracked", Object: "nftables", Detail: "cannot read the other tables, so cannot tell whether one exempts datagrams from connection tracking: " + err.Error(), Fix: "run egressd check as root"})
		}
		for _, u := range rules {
			problems = append(problems, Problem{Kind: "listen_untracked", Object: u.String(),
				Detail: "this rule exempts packets other than TCP from connection tracking (notrack): a peer's datagram it exempts has no conntrack direction, so listen: cannot tell that the peer opened the flow, and the datagram reaches a listen-restricted service's unlisted ports",
				Fix:    "limit the rule to TCP (meta l4proto tcp) or remove it: docs/security.md, \"Listening ports\" (egressd never changes other tables)"})
		}
	}
	for _, f := range []string{"ip_tables_names", "ip6_tables_names"} {
		b, err := os.ReadFile(filepath.Join(procNet, f))
		if err != nil {
			continue // no legacy iptables module loaded
		}
		if slices.Contains(strings.Fields(string(b)), "raw") {
			notes = append(notes, Problem{Kind: "legacy_raw_unread", Object: filepath.Join(procNet, f),
				Detail: "a legacy iptables raw table is loaded; check reads nftables only and cannot tell whether it exempts datagrams from connection tracking (NOTRACK, CT --notrack), which would open listen:",
				Fix:    "list it (iptables-legacy -t raw -S; ip6tables-legacy -t raw -S) and make sure no rule exempts UDP"})
		}
	}
	return problems, notes
}
