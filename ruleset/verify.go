package ruleset

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/egressd/egressd/internal/setdiff"
)

// The comparisons of Verify that need no netlink, shared by the netlink
// adapter (verify_linux.go) and the fake kernel, so that both report a
// difference with the same kind, object and detail.

// maxDetails bounds the elements a finding lists.
const maxDetails = 10

// ExpirySlack is how close to the end of its lifetime a plan's element may
// be missing from the kernel without being drift: the kernel runs its
// timeout out by itself, moments before the daemon drops it from the plan
// (or while the refresh that renews it is in flight).
const ExpirySlack = 2 * time.Second

// elementFindings compares the plan's sets with the elements a kernel holds
// (ReadSets's form) at now: element_missing, element_extra, set_extra.
func elementFindings(p Plan, have map[string][]Element, now time.Time) []Finding {
	var fs []Finding
	add := func(kind, obj, format string, a ...any) {
		fs = append(fs, Finding{Kind: kind, Object: obj, Detail: fmt.Sprintf(format, a...)})
	}
	for _, name := range sortedKeys(p.Sets) {
		missing, extra := setdiff.Of(have[name], p.Sets[name])
		if us := p.Until[name]; us != nil && len(missing) > 0 {
			ending := map[Element]bool{}
			for i, e := range p.Sets[name] {
				if !us[i].IsZero() && us[i].Before(now.Add(ExpirySlack)) {
					ending[e] = true
				}
			}
			kept := missing[:0]
			for _, e := range missing {
				if !ending[e] {
					kept = append(kept, e)
				}
			}
			missing = kept
		}
		if len(missing) > 0 {
			add("element_missing", name, "%d missing: %s", len(missing), elementList(missing))
		}
		if len(extra) > 0 {
			add("element_extra", name, "%d not in the plan: %s", len(extra), elementList(extra))
		}
	}
	for _, name := range sortedKeys(have) {
		if _, ok := p.Sets[name]; !ok && len(have[name]) > 0 {
			add("set_extra", name, "%d elements not in the plan: %s", len(have[name]), elementList(have[name]))
		}
	}
	return fs
}

// usersFindings compares the plan's users with the users set (uid →
// allowlist).
func usersFindings(p Plan, got map[uint32]string) []Finding {
	want := map[uint32]string{}
	for _, ch := range p.Chains {
		want[ch.UID] = ch.Allowlist
	}
	var diffs []string
	for uid, name := range want {
		if g, ok := got[uid]; !ok || g != name {
			diffs = append(diffs, fmt.Sprintf("uid %d → %q, want %q", uid, g, name))
		}
	}
	for uid, name := range got {
		if _, ok := want[uid]; !ok {
			diffs = append(diffs, fmt.Sprintf("uid %d → %q not in the plan", uid, name))
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	sort.Strings(diffs)
	return []Finding{{Kind: "users_differ", Object: kUsers, Detail: strings.Join(diffs, "; ")}}
}

// uidSetMember says which of the plan's users a uid set holds.
func uidSetMember(name string) func(ChainPlan) bool {
	switch name {
	case kDNSUsers:
		return func(ch ChainPlan) bool { return ch.DNS }
	case kAudit:
		return func(ch ChainPlan) bool { return ch.Audit }
	case kProxyUsers:
		return func(ch ChainPlan) bool { return ch.Proxy }
	}
	return func(ChainPlan) bool { return true } // owners
}

// uidSetFindings compares one uid set (owners, dnsusers, audit) with the plan.
func uidSetFindings(name string, p Plan, got map[uint32]bool) []Finding {
	member := uidSetMember(name)
	want := map[uint32]bool{}
	for _, ch := range p.Chains {
		if member(ch) {
			want[ch.UID] = true
		}
	}
	var diffs []string
	for uid := range want {
		if !got[uid] {
			diffs = append(diffs, fmt.Sprintf("uid %d missing", uid))
		}
	}
	for uid := range got {
		if !want[uid] {
			diffs = append(diffs, fmt.Sprintf("uid %d not in the plan", uid))
		}
	}
	if len(diffs) == 0 {
		return nil
	}
	sort.Strings(diffs)
	return []Finding{{Kind: "users_differ", Object: name, Detail: strings.Join(diffs, "; ")}}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func elementList(es []Element) string {
	var parts []string
	for i, e := range es {
		if i == maxDetails {
			parts = append(parts, fmt.Sprintf("and %d more", len(es)-maxDetails))
			break
		}
		parts = append(parts, e.String())
	}
	return strings.Join(parts, ", ")
}
