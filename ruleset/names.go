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

const (
	allowPrefix4 = "allow4_"
	allowPrefix6 = "allow6_"
)

// SetName4 and SetName6 name an allowlist's logical sets.
func SetName4(allowlist string) string { return allowPrefix4 + allowlist }
func SetName6(allowlist string) string { return allowPrefix6 + allowlist }

// SetID is the typed identity of a logical set.
type SetID struct {
	Allowlist string // "" for the resolvers' sets
	V6        bool
	Unit      bool // a unit allowlist's set (keyed by its unit key)
}

// Name is the logical name of the set.
func (s SetID) Name() string {
	switch {
	case s.Unit && s.V6:
		return unitPrefix6 + s.Allowlist
	case s.Unit:
		return unitPrefix4 + s.Allowlist
	case s.Allowlist == "" && s.V6:
		return DNSSet6
	case s.Allowlist == "":
		return DNSSet4
	case s.V6:
		return SetName6(s.Allowlist)
	}
	return SetName4(s.Allowlist)
}

// ParseSetName is the inverse of SetID.Name; ok is false for names egressd
// does not write.
func ParseSetName(name string) (SetID, bool) {
	switch {
	case name == DNSSet4:
		return SetID{}, true
	case name == DNSSet6:
		return SetID{V6: true}, true
	case strings.HasPrefix(name, allowPrefix4):
		a := strings.TrimPrefix(name, allowPrefix4)
		return SetID{Allowlist: a}, config.NameRE.MatchString(a)
	case strings.HasPrefix(name, allowPrefix6):
		a := strings.TrimPrefix(name, allowPrefix6)
		return SetID{Allowlist: a, V6: true}, config.NameRE.MatchString(a)
	case strings.HasPrefix(name, unitPrefix4):
		a := strings.TrimPrefix(name, unitPrefix4)
		return SetID{Allowlist: a, Unit: true}, config.NameRE.MatchString(a)
	case strings.HasPrefix(name, unitPrefix6):
		a := strings.TrimPrefix(name, unitPrefix6)
		return SetID{Allowlist: a, V6: true, Unit: true}, config.NameRE.MatchString(a)
	}
	return SetID{}, false
}

// ChainName is kept for reports that name where an allowlist is enforced:
// every allowlist is enforced by the one chain "restricted", selected by uid.
func ChainName(allowlist string) string { return "restricted" }

// LogPrefix is the log prefix of the deny rule. The kernel layout has one
// deny rule for every protected user; a log reader attributes a packet by
// its uid (NFLOG's NFULA_UID, the kernel log's UID= field).
func LogPrefix(prefix string) string {
	return fmt.Sprintf("%s deny: ", prefix)
}

// AuditPrefix is the log prefix of a would-be deny of an allowlist in audit
// mode: logged like a deny, then accepted.
func AuditPrefix(prefix string) string {
	return fmt.Sprintf("%s audit: ", prefix)
}

// IsDenyPrefix reports whether a logged packet's prefix is egressd's deny
// prefix (another tool may share the NFLOG group).
func IsDenyPrefix(configured, prefix string) bool {
	return prefix == LogPrefix(configured)
}

// IsAuditPrefix is IsDenyPrefix for audit mode's prefix.
func IsAuditPrefix(configured, prefix string) bool {
	return prefix == AuditPrefix(configured)
}

// kernelSet is the typed identity of one kernel set that holds plan elements.
type kernelSet struct {
	DNS   bool // the resolvers' sets; otherwise the allowlists' (keyed by uid)
	Proxy bool // what the DNS proxy answered (keyed by uid, elements with timeouts)
	V6    bool
	Range bool // interval set (pipapo) for CIDRs and port ranges; otherwise a hash set of exact elements
	Unit  bool // the unit allowlists' sets (keyed by unit key)
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
	if s.Unit {
		n = "u" + n
	}
	return n
}

// KernelSetName names the kernel set that holds element e of a logical set,
// as `nft list set inet egressd NAME` takes it (for reports).
func KernelSetName(logical string, e Element) string {
	id, _ := ParseSetName(logical)
	return kernelSet{DNS: id.Allowlist == "", V6: id.V6, Range: !isExact(e), Unit: id.Unit}.name()
}

func isExact(e Element) bool { return e.AddrFrom == e.AddrTo && e.PortFrom == e.PortTo }
