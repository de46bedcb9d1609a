package ruleset

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/egressd/egressd/internal/setdiff"
)

// The text rendering of plans and deltas, in nft's syntax, for people
// (`egressd plan`, the fake kernel's Dump). Plans print the layout's
// objects (objects.go), the ones the netlink adapter sends.

// NFT renders the plan as the table inet egressd the kernel adapter builds
// for it (the same objects: layout): every set with its elements (keyed by
// uid, as the kernel holds them), then the chains with their rules. It is
// valid nft syntax (`nft -c -f` takes it: a test checks). A plan whose sets
// cannot be placed (a set of an allowlist without a uid) renders with a
// comment saying so instead of those elements.
func (p Plan) NFT() string {
	t, err := layout(p, nil)
	text := t.NFT()
	if err != nil {
		text = strings.Replace(text, "{\n", fmt.Sprintf("{\n\t# cannot place the elements: %v\n", err), 1)
	}
	return text
}

// NFT renders the delta as the nft commands of its one transaction: the
// deletions, then the additions, per kernel set, as ApplyDelta sends them.
// p is the plan the delta leads to (it maps allowlists to uids).
func (d Delta) NFT(p Plan) string {
	adds, dels := map[string][]Element{}, map[string][]Element{}
	for name, sd := range d {
		adds[name], dels[name] = sd.Add, sd.Del
	}
	var b strings.Builder
	for _, op := range []struct {
		verb string
		sets map[string][]Element
	}{{"delete", dels}, {"add", adds}} {
		placed, err := placeElements(op.sets, nil, subjects(p))
		if err != nil {
			fmt.Fprintf(&b, "# cannot place the elements to %s: %v\n", op.verb, err)
			continue
		}
		for _, ks := range everyKernelSet() {
			if es := keyedText(ks, placed[ks]); len(es) > 0 {
				writeElements(&b, op.verb, ks.name(), es)
			}
		}
	}
	return b.String()
}

// UsersNFT renders a change of the protected users (uid → allowlist) as nft
// commands on the users set.
func UsersNFT(add, del map[uint32]string) string {
	var b strings.Builder
	for _, op := range []struct {
		verb string
		m    map[uint32]string
	}{{"delete", del}, {"add", add}} {
		uids := make([]uint32, 0, len(op.m))
		for u := range op.m {
			uids = append(uids, u)
		}
		sort.Slice(uids, func(i, j int) bool { return uids[i] < uids[j] })
		var es []string
		for _, u := range uids {
			es = append(es, fmt.Sprintf("%d comment %q", u, op.m[u]))
		}
		if len(es) > 0 {
			writeElements(&b, op.verb, kUsers, es)
		}
	}
	return b.String()
}

func writeElements(b *strings.Builder, verb, set string, es []string) {
	fmt.Fprintf(b, "%s element inet %s %s { %s }\n", verb, TableName, set, strings.Join(es, ", "))
}

// keyedText renders the elements of one kernel set, sorted by uid, then element.
func keyedText(ks kernelSet, es []keyed) []string {
	es = append([]keyed(nil), es...)
	sort.Slice(es, func(i, j int) bool {
		if es[i].uid != es[j].uid {
			return es[i].uid < es[j].uid
		}
		return lessElement(es[i].e, es[j].e)
	})
	out := make([]string, len(es))
	for i, k := range es {
		s := elementText(k.e)
		if !ks.DNS {
			s = fmt.Sprintf("%d . %s", k.uid, s)
		}
		out[i] = s
	}
	return out
}

// elementText is proto . addr . port as nft prints a concatenation: an
// address range that is a prefix as a CIDR, other ranges as from-to.
func elementText(e Element) string {
	addr := e.AddrFrom.String()
	if e.AddrTo != e.AddrFrom {
		addr += "-" + e.AddrTo.String()
		for bits := 0; bits < e.AddrFrom.BitLen(); bits++ {
			if p := netip.PrefixFrom(e.AddrFrom, bits); p.Masked().Addr() == e.AddrFrom && lastAddr(p) == e.AddrTo {
				addr = p.String()
				break
			}
		}
	}
	port := fmt.Sprint(e.PortFrom)
	if e.PortTo != e.PortFrom {
		port += fmt.Sprintf("-%d", e.PortTo)
	}
	return fmt.Sprintf("%s . %s . %s", e.Proto, addr, port)
}

// KernelDiffNFT renders how a kernel that holds sets (as ReadSets returns
// them) and users (as ReadUsers returns them) differs from the plan, as the
// nft commands that would take it there: users to delete and add, elements
// to delete and add. n counts the elements and users that differ; 0 means
// the kernel's elements and users are the plan's.
func KernelDiffNFT(p Plan, sets map[string][]Element, users map[uint32]string) (text string, n int) {
	var b strings.Builder
	want := map[uint32]string{}
	for _, ch := range p.Of(SubjectUser) {
		want[ch.Subject.ID] = ch.Allowlist
	}
	addU, delU := map[uint32]string{}, map[uint32]string{}
	for uid, name := range want {
		if got, ok := users[uid]; !ok || got != name {
			addU[uid] = name
		}
	}
	for uid, name := range users {
		if got, ok := want[uid]; !ok || got != name {
			delU[uid] = name
		}
	}
	b.WriteString(UsersNFT(addU, delU))
	n += len(addU) + len(delU)

	// Elements of allowlists the plan does not have are placed by the
	// kernel's own uids; elements of uids the kernel's users set does not
	// name (ReadSets's "uid:N") cannot be named as a logical set.
	place := Plan{Allowlists: append([]AllowlistPlan(nil), p.Allowlists...)}
	for uid, name := range users {
		if _, ok := want[uid]; !ok {
			place.Allowlists = append(place.Allowlists, AllowlistPlan{Allowlist: name, Subject: UserSubject(uid)})
		}
	}
	d := Delta{}
	names := map[string]bool{}
	for name := range p.Sets {
		names[name] = true
	}
	for name := range sets {
		names[name] = true
	}
	var orphans []string
	for name := range names {
		add, del := setdiff.Of(sets[name], p.Sets[name])
		if _, ok := ParseSetName(name); !ok {
			orphans = append(orphans, fmt.Sprintf("# %d elements keyed by %s, which the users set does not name: not in the plan", len(del), name))
			n += len(del)
			continue
		}
		if len(add)+len(del) > 0 {
			d[name] = SetDelta{Add: add, Del: del}
			n += len(add) + len(del)
		}
	}
	b.WriteString(d.NFT(place))
	sort.Strings(orphans)
	for _, o := range orphans {
		b.WriteString(o + "\n")
	}
	return b.String(), n
}
