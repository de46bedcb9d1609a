package ruleset

import (
	"fmt"
	"time"
)

// The kernel layout's object names (see the layout in kernel_linux.go).
// Shared by the netlink adapter and the text rendering (nft.go).
const (
	kUsers       = "users"
	kOwners      = "owners"
	kOpeners     = "openers"
	kListenMarks = "listenmarks"
	kUIDMarks    = "uidmarks"
	kDNSUsers    = "dnsusers"
	kAudit       = "audit"
	kProxyUsers  = "proxyusers"
	chainNAT     = "dnsproxy"
	chainZone    = "dnszone"
	chainIn      = "input"
	chainInbound = "inbound"
	chainICMPErr = "icmperr"
	kDenied      = "denied"
	kDenyLog     = "denylog"
	chainOut     = "output"
	chainRestr   = "restricted"
	chainDeny    = "deny"
)

// familySets are the four kernel sets like base: IPv4 and IPv6, each with
// exact elements and with ranges.
func familySets(base kernelSet) []kernelSet {
	var out []kernelSet
	for _, v6 := range []bool{false, true} {
		for _, r := range []bool{false, true} {
			ks := base
			ks.V6, ks.Range = v6, r
			out = append(out, ks)
		}
	}
	return out
}

// allKernelSets are the user allowlists' element sets, then the resolvers'.
func allKernelSets() []kernelSet {
	return append(familySets(kernelSet{}), familySets(kernelSet{DNS: true})...)
}

// DNSZone is the conntrack zone of dns: proxy users' DNS flows (and of the
// proxy's answers to them). In zone 0, a query from a source port that
// another process used for the same resolver moments before would join that
// process's conntrack entry, never redirected, and be refused; in a zone of
// their own these flows start fresh, and are redirected.
const DNSZone = 53

// proxyKernelSets are the sets the DNS proxy writes (never plan elements).
func proxyKernelSets() []kernelSet { return familySets(kernelSet{Proxy: true}) }

// keyed is an element with the uid it is keyed by (0 in the resolvers' sets)
// and the end of its lifetime (zero: never).
type keyed struct {
	uid   uint32
	e     Element
	until time.Time
}

// placeElements groups elements of logical sets into kernel sets. subjectOf
// maps an allowlist to its subject, whose id keys its elements; a logical set
// of an allowlist the plan does not have, or named for another kind of
// subject, is an error (the caller's plan is inconsistent). until (may be
// nil) gives the elements' lifetimes, aligned with sets.
func placeElements(sets map[string][]Element, until map[string][]time.Time, subjectOf map[string]Subject) (map[kernelSet][]keyed, error) {
	out := map[kernelSet][]keyed{}
	for name, es := range sets {
		us := until[name]
		id, ok := ParseSetName(name)
		if !ok {
			return nil, fmt.Errorf("set %q: not a name egressd writes", name)
		}
		var uid uint32
		if id.Allowlist != "" {
			sub, ok := subjectOf[id.Allowlist]
			if !ok {
				return nil, fmt.Errorf("set %q: allowlist %q has no uid in the plan", name, id.Allowlist)
			}
			if sub.Kind != id.Kind {
				return nil, fmt.Errorf("set %q: allowlist %q restricts a %s", name, id.Allowlist, sub.Kind)
			}
			uid = sub.ID
		}
		for i, e := range es {
			if e.Is6() != id.V6 {
				return nil, fmt.Errorf("set %q: element %s of the other family", name, e)
			}
			ks := kernelSetOf(id, e)
			k := keyed{uid: uid, e: e}
			if us != nil {
				k.until = us[i]
			}
			out[ks] = append(out[ks], k)
		}
	}
	return out, nil
}
