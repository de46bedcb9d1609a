package ruleset

import (
	"fmt"
	"strings"

	"github.com/egressd/egressd/config"
)

// Logical names. A Plan speaks of one logical set per allowlist and family
// (SetName4, SetName6) and of the resolvers' sets (DNSSet4, DNSSet6); how the
// kernel stores them is the adapter's business (kernel_linux.go: every
// allowlist's elements live in shared sets keyed by uid). These functions are
// the only place that builds or parses a logical name.
const (
	UsersMap = "users"
	DNSSet4  = "dns4"
	DNSSet6  = "dns6"
)

// kindNames are what the names of each kind of subject's sets and log
// prefixes are built from: a logical set is PREFIX + 4 or 6 + "_" +
// allowlist (allow4_web, uallow6_web), a kernel set PREFIX + "4" or "6"
// (+ "r") (allow4, uallow6r), a log prefix "P " + WORD + "deny: " or
// "audit: ". They are the names of the previous versions: state.json and a
// running daemon's table use them.
var kindNames = []struct {
	kind SubjectKind
	set  string // the kernel sets' prefix before "allow"
	log  string // the log prefix's word before "deny"/"audit"
}{
	{SubjectUser, "", ""},
	{SubjectUnit, "u", "unit "},
}

func namesOf(k SubjectKind) (set, log string) {
	for _, n := range kindNames {
		if n.kind == k {
			return n.set, n.log
		}
	}
	panic(fmt.Sprintf("ruleset: no names for subject kind %s", k))
}

// SetName4 and SetName6 name a user allowlist's logical sets.
func SetName4(allowlist string) string { return SetID{Allowlist: allowlist}.Name() }
func SetName6(allowlist string) string { return SetID{Allowlist: allowlist, V6: true}.Name() }

// SetID is the typed identity of a logical set.
type SetID struct {
	Allowlist string      // "" for the resolvers' sets
	Kind      SubjectKind // of the allowlist's subject (its elements are keyed by the subject's id)
	V6        bool
}

// Name is the logical name of the set.
func (s SetID) Name() string {
	switch {
	case s.Allowlist == "" && s.V6:
		return DNSSet6
	case s.Allowlist == "":
		return DNSSet4
	}
	return setPrefix(s.Kind, s.V6) + s.Allowlist
}

// setPrefix is what the logical set names of an allowlist of kind k and a
// family start with.
func setPrefix(k SubjectKind, v6 bool) string {
	set, _ := namesOf(k)
	if v6 {
		return set + "allow6_"
	}
	return set + "allow4_"
}

// ParseSetName is the inverse of SetID.Name; ok is false for names egressd
// does not write.
func ParseSetName(name string) (SetID, bool) {
	switch name {
	case DNSSet4:
		return SetID{}, true
	case DNSSet6:
		return SetID{V6: true}, true
	}
	for _, n := range kindNames {
		for _, v6 := range []bool{false, true} {
			if a, ok := strings.CutPrefix(name, setPrefix(n.kind, v6)); ok {
				return SetID{Allowlist: a, Kind: n.kind, V6: v6}, config.NameRE.MatchString(a)
			}
		}
	}
	return SetID{}, false
}

// ChainName is kept for reports that name where an allowlist is enforced:
// every allowlist is enforced by the one chain "restricted", selected by uid.
func ChainName(allowlist string) string { return "restricted" }

// LogPrefixOf is the log prefix of a packet that an allowlist whose subject
// is of kind k denied (audit: would have denied, in mode: audit, then let
// through); configured is deny_log.prefix. A log reader attributes the
// packet by the subject's id the packet carries (SubjectIDOf).
func LogPrefixOf(k SubjectKind, audit bool, configured string) string {
	_, word := namesOf(k)
	if audit {
		return fmt.Sprintf("%s %saudit: ", configured, word)
	}
	return fmt.Sprintf("%s %sdeny: ", configured, word)
}

// ParseLogPrefix is the inverse of LogPrefixOf: ok is false for a prefix
// egressd did not write (another tool may share the NFLOG group). With
// configured empty, any deny_log.prefix is taken.
func ParseLogPrefix(configured, prefix string) (k SubjectKind, audit, ok bool) {
	// Longest forms first: "P unit deny: " ends like a user's "deny: ".
	for i := len(kindNames) - 1; i >= 0; i-- {
		for _, audit := range []bool{false, true} {
			want := LogPrefixOf(kindNames[i].kind, audit, configured)
			if prefix == want || configured == "" && strings.HasSuffix(prefix, want) {
				return kindNames[i].kind, audit, true
			}
		}
	}
	return 0, false, false
}

// SubjectIDOf is the id of the subject a logged packet of kind k carries:
// a user's deny rule is shared by every protected user, and the packet's
// socket uid (NFLOG's NFULA_UID, the kernel log's UID=) names it; a unit's
// deny rule sets the packet's mark to the unit key (NFULA_MARK, MARK=).
func SubjectIDOf(k SubjectKind, uid, mark uint32) uint32 {
	if k == SubjectUnit {
		return mark
	}
	return uid
}

// LogPrefix and AuditPrefix are LogPrefixOf for a user allowlist.
func LogPrefix(prefix string) string   { return LogPrefixOf(SubjectUser, false, prefix) }
func AuditPrefix(prefix string) string { return LogPrefixOf(SubjectUser, true, prefix) }

// kernelSet is the typed identity of one kernel set that holds plan elements.
type kernelSet struct {
	DNS   bool // the resolvers' sets; otherwise the allowlists' (keyed by uid)
	Proxy bool // what the DNS proxy answered (keyed by uid, elements with timeouts)
	V6    bool
	Range bool        // interval set (pipapo) for CIDRs and port ranges; otherwise a hash set of exact elements
	Kind  SubjectKind // whose allowlists' sets (keyed by the subject's id: uid, unit key); not DNS
}

// Timed reports whether the set's elements may carry timeouts: the proxy's
// answers, and the allowlists' sets, whose elements from DNS and the hosts
// file end with their lifetime (literal entries carry none and never end).
func (s kernelSet) Timed() bool { return !s.DNS }

func (s kernelSet) name() string {
	n := "allow"
	switch {
	case s.DNS:
		n = "dns"
	case s.Proxy:
		n = "proxy"
	}
	if s.V6 {
		n += "6"
	} else {
		n += "4"
	}
	if s.Range {
		n += "r"
	}
	set, _ := namesOf(s.Kind)
	return set + n
}

// KernelSetName names the kernel set that holds element e of a logical set,
// as `nft list set inet egressd NAME` takes it (for reports).
func KernelSetName(logical string, e Element) string {
	id, _ := ParseSetName(logical)
	return kernelSetOf(id, e).name()
}

// kernelSetOf is the kernel set that holds element e of logical set id.
func kernelSetOf(id SetID, e Element) kernelSet {
	return kernelSet{DNS: id.Allowlist == "", V6: id.V6, Range: !isExact(e), Kind: id.Kind}
}

func isExact(e Element) bool { return e.AddrFrom == e.AddrTo && e.PortFrom == e.PortTo }
