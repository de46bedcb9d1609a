package ruleset

import "fmt"

// SubjectKind is the kind of identity an allowlist restricts. The layout
// (rules.go) emits one match per kind — who opened a socket — and shares the
// rest: the allowlist's sets, its deny and log rules, the placement of its
// elements, verification, the fake and the nft text. A third kind is a new
// constant here and its match there, not a third track.
type SubjectKind uint8

const (
	// SubjectUser is a protected user: the socket's owner uid (meta skuid).
	SubjectUser SubjectKind = iota
	// SubjectUnit is a restricted systemd unit (docs/units.md): the
	// socket's cgroup (socket cgroupv2), mapped to its allowlist's chain.
	SubjectUnit
)

func (k SubjectKind) String() string {
	switch k {
	case SubjectUser:
		return "user"
	case SubjectUnit:
		return "unit"
	}
	return fmt.Sprintf("kind%d", uint8(k))
}

// Subject is who an allowlist restricts.
type Subject struct {
	Kind SubjectKind
	// ID keys the allowlist's elements in the kernel's shared sets: the
	// uid of a user, the unit key (UnitKeys) of a unit.
	ID   uint32
	Unit string // the unit's name (SubjectUnit); "" for a user
}

// UserSubject is the protected user uid.
func UserSubject(uid uint32) Subject { return Subject{Kind: SubjectUser, ID: uid} }

// UnitSubject is the restricted unit with its unit key.
func UnitSubject(unit string, key uint32) Subject {
	return Subject{Kind: SubjectUnit, ID: key, Unit: unit}
}

func (s Subject) String() string {
	if s.Kind == SubjectUnit {
		return fmt.Sprintf("unit %s (key %s)", s.Unit, unitKeyText(s.ID))
	}
	return fmt.Sprintf("uid %d", s.ID)
}

// AllowlistPlan is one allowlist in a plan: whom it restricts and how.
type AllowlistPlan struct {
	Allowlist string
	Subject   Subject
	DNS       bool // may reach the resolvers on port 53
	Proxy     bool // dns: proxy (users only: a unit's DNS is judged by its allowlist)
	Audit     bool // mode: audit
	Listen    bool // listen: (the inbound chain drops ICMP errors about its datagram flows)
}

// Of returns the plan's allowlists of one kind of subject, in the plan's
// order (by name).
func (p Plan) Of(k SubjectKind) []AllowlistPlan {
	var out []AllowlistPlan
	for _, a := range p.Allowlists {
		if a.Subject.Kind == k {
			out = append(out, a)
		}
	}
	return out
}

// subjects is allowlist -> subject, for every allowlist of p.
func subjects(p Plan) map[string]Subject {
	m := make(map[string]Subject, len(p.Allowlists))
	for _, a := range p.Allowlists {
		m[a.Allowlist] = a.Subject
	}
	return m
}

// SetIDs are the logical sets (names.go) of an allowlist of kind k: IPv4,
// then IPv6.
func SetIDs(allowlist string, k SubjectKind) (v4, v6 SetID) {
	v4 = SetID{Allowlist: allowlist, Kind: k}
	v6 = v4
	v6.V6 = true
	return v4, v6
}
