package state

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/ruleset"
)

// The published ruleset has its own types, with JSON names of their own:
// renaming a field of ruleset.Plan or config.DenyLog must not change
// state.json. FromPlan and Plan.Ruleset convert at the boundary.
//
// The switch from the earlier document (ruleset.Plan marshalled with Go's
// field names) is not read back: state.json lives in the runtime directory
// (/run, emptied at boot) and a starting daemon rewrites it at its first
// apply, within a second of start; the only reader across an upgrade is
// seedUsers, which reads Users, a field that did not change.

// Plan is the ruleset the daemon applied.
type Plan struct {
	Allowlists []Allowlist          `json:"allowlists"` // sorted by name
	Sets       map[string][]Element `json:"sets"`       // logical set name (ruleset.SetID) -> elements
	DenyLog    DenyLog              `json:"deny_log"`
	ProxyPort  uint16               `json:"proxy_port,omitempty"`
	Units      []Unit               `json:"units,omitempty"`   // unit allowlists (docs/units.md), sorted by name
	Cgroups    []Cgroup             `json:"cgroups,omitempty"` // the restricted units' cgroups, by id
	Inbound    bool                 `json:"inbound,omitempty"` // some allowlist has listen: (the inbound chain)
}

// Unit is one unit allowlist's place in the plan.
type Unit struct {
	Name  string `json:"name"`
	Unit  string `json:"unit"`
	Key   uint32 `json:"key"`
	DNS   bool   `json:"dns"`
	Audit bool   `json:"audit"`
	// Listen: the allowlist has listen: (the inbound chain drops ICMP
	// errors about its datagram flows).
	Listen bool `json:"listen,omitempty"`
}

// Cgroup is a restricted unit's cgroup: its id and its allowlist.
type Cgroup struct {
	ID        uint64 `json:"id"`
	Allowlist string `json:"allowlist"`
}

// Allowlist is one protected user's place in the plan.
type Allowlist struct {
	Name  string `json:"name"`
	UID   uint32 `json:"uid"`
	DNS   bool   `json:"dns"`
	Proxy bool   `json:"dns_proxy,omitempty"`
	Audit bool   `json:"audit"`
	// Listen: as Unit.Listen (the uid is in the set listenmarks).
	Listen bool `json:"listen,omitempty"`
}

// Element is one allowed destination range.
type Element struct {
	Proto    string     `json:"proto"` // tcp, udp or a protocol number
	AddrFrom netip.Addr `json:"addr_from"`
	AddrTo   netip.Addr `json:"addr_to"`
	PortFrom uint16     `json:"port_from"`
	PortTo   uint16     `json:"port_to"`
}

// DenyLog is how denied packets are logged.
type DenyLog struct {
	Mode      string        `json:"mode"`
	Group     uint16        `json:"group"`
	RateCount uint64        `json:"rate_count"`
	RateUnit  string        `json:"rate_unit"`
	Prefix    string        `json:"prefix"`
	Interval  time.Duration `json:"interval_ns"`
}

// FromPlan is the published form of a plan.
func FromPlan(p ruleset.Plan) Plan {
	out := Plan{Sets: make(map[string][]Element, len(p.Sets)), DenyLog: DenyLog{
		Mode: string(p.DenyLog.Mode), Group: p.DenyLog.Group, RateCount: p.DenyLog.Rate.Count, RateUnit: p.DenyLog.Rate.Unit,
		Prefix: p.DenyLog.Prefix, Interval: p.DenyLog.Interval,
	}, ProxyPort: p.ProxyPort, Inbound: p.Inbound}
	// Users and units stay in the fields they had before ruleset.Plan
	// held one list of subjects: check and plan of an older egressd read
	// this document during an upgrade.
	out.Allowlists = []Allowlist{}
	for _, a := range p.Allowlists {
		switch a.Subject.Kind {
		case ruleset.SubjectUser:
			out.Allowlists = append(out.Allowlists, Allowlist{Name: a.Allowlist, UID: a.Subject.ID, DNS: a.DNS, Proxy: a.Proxy, Audit: a.Audit, Listen: a.Listen})
		case ruleset.SubjectUnit:
			out.Units = append(out.Units, Unit{Name: a.Allowlist, Unit: a.Subject.Unit, Key: a.Subject.ID, DNS: a.DNS, Audit: a.Audit, Listen: a.Listen})
		}
	}
	for _, c := range p.Cgroups {
		out.Cgroups = append(out.Cgroups, Cgroup{ID: c.ID, Allowlist: c.Allowlist})
	}
	for name, es := range p.Sets {
		doc := make([]Element, len(es))
		for i, e := range es {
			doc[i] = Element{Proto: e.Proto.String(), AddrFrom: e.AddrFrom, AddrTo: e.AddrTo, PortFrom: e.PortFrom, PortTo: e.PortTo}
		}
		out.Sets[name] = doc
	}
	return out
}

// Ruleset converts the published plan back; an element whose protocol is
// neither tcp, udp nor a number is an error (the document is damaged).
func (p Plan) Ruleset() (ruleset.Plan, error) {
	out := ruleset.Plan{Sets: make(map[string][]ruleset.Element, len(p.Sets)), DenyLog: config.DenyLog{
		Mode: config.LogMode(p.DenyLog.Mode), Group: p.DenyLog.Group, Rate: config.Rate{Count: p.DenyLog.RateCount, Unit: p.DenyLog.RateUnit},
		Prefix: p.DenyLog.Prefix, Interval: p.DenyLog.Interval,
	}, ProxyPort: p.ProxyPort, Inbound: p.Inbound}
	for _, a := range p.Allowlists {
		out.Allowlists = append(out.Allowlists, ruleset.AllowlistPlan{Allowlist: a.Name, Subject: ruleset.UserSubject(a.UID), DNS: a.DNS, Proxy: a.Proxy, Audit: a.Audit, Listen: a.Listen})
	}
	for _, u := range p.Units {
		out.Allowlists = append(out.Allowlists, ruleset.AllowlistPlan{Allowlist: u.Name, Subject: ruleset.UnitSubject(u.Unit, u.Key), DNS: u.DNS, Audit: u.Audit, Listen: u.Listen})
	}
	// ruleset.Plan's allowlists are sorted by name, users and units alike.
	sort.SliceStable(out.Allowlists, func(i, j int) bool { return out.Allowlists[i].Allowlist < out.Allowlists[j].Allowlist })
	for _, c := range p.Cgroups {
		out.Cgroups = append(out.Cgroups, ruleset.Cgroup{ID: c.ID, Allowlist: c.Allowlist})
	}
	for name, doc := range p.Sets {
		es := make([]ruleset.Element, len(doc))
		for i, e := range doc {
			proto, err := parseProto(e.Proto)
			if err != nil {
				return ruleset.Plan{}, fmt.Errorf("set %s: %w", name, err)
			}
			es[i] = ruleset.Element{Proto: proto, AddrFrom: e.AddrFrom, AddrTo: e.AddrTo, PortFrom: e.PortFrom, PortTo: e.PortTo}
		}
		out.Sets[name] = es
	}
	return out, nil
}

func parseProto(s string) (config.Proto, error) {
	switch s {
	case "tcp":
		return config.TCP, nil
	case "udp":
		return config.UDP, nil
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil {
		return 0, fmt.Errorf("protocol %q: not tcp, udp or a number", s)
	}
	return config.Proto(n), nil
}
