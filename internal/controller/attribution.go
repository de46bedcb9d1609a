package controller

import (
	"net/netip"
	"sort"
	"sync/atomic"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/resolver"
	"github.com/egressd/egressd/ruleset"
)

// nameIndex maps, per allowlist, the addresses its own names allow now
// (current or lingering answers, as the kernel holds them) back to those
// names, so that a deny event can say "api.example.test, wrong port" and
// never names another allowlist's name, or one that left the configuration.
// The loop replaces it whole after each apply; readers never lock.
type nameIndex struct {
	p atomic.Pointer[map[string]map[netip.Addr][]string]
}

// buildNameIndex is pure: addrs returns the addresses a name allows now.
func buildNameIndex(cfg *config.Config, addrs func(string) []netip.Addr) map[string]map[netip.Addr][]string {
	out := make(map[string]map[netip.Addr][]string, len(cfg.Allowlists))
	for _, a := range cfg.Allowlists {
		out[a.Name] = allowlistIndex(a, addrs)
	}
	return out
}

// allowlistIndex is one allowlist's part of the index.
func allowlistIndex(a *config.Allowlist, addrs func(string) []netip.Addr) map[netip.Addr][]string {
	m := map[netip.Addr][]string{}
	seen := map[string]bool{}
	for _, e := range a.Entries {
		if !e.IsName() || seen[e.Host] {
			continue
		}
		seen[e.Host] = true
		for _, ip := range addrs(e.Host) {
			// Hosts-file answers are not told apart here (BuildDesiredHosts
			// does): an internal one of an allowlist that did not opt in is
			// in the set but not in the index.
			if !resolver.Accepts(ip, a.AllowPrivateAnswers, e.Host, nil) {
				continue // not in this allowlist's set (see policy.BuildDesired)
			}
			m[ip] = append(m[ip], e.Host)
		}
	}
	return m
}

// updateNameIndex rebuilds only the allowlists that use a changed name
// (DNS churn touches few), sharing the others with the previous index.
func updateNameIndex(prev map[string]map[netip.Addr][]string, cfg *config.Config, changed map[string]bool, addrs func(string) []netip.Addr) map[string]map[netip.Addr][]string {
	out := make(map[string]map[netip.Addr][]string, len(cfg.Allowlists))
	for _, a := range cfg.Allowlists {
		m, ok := prev[a.Name]
		if ok {
			for _, e := range a.Entries {
				if e.IsName() && changed[e.Host] {
					ok = false
					break
				}
			}
		}
		if !ok {
			m = allowlistIndex(a, addrs)
		}
		out[a.Name] = m
	}
	return out
}

func (x *nameIndex) load() map[string]map[netip.Addr][]string {
	if m := x.p.Load(); m != nil {
		return *m
	}
	return nil
}

func (x *nameIndex) store(m map[string]map[netip.Addr][]string) { x.p.Store(&m) }

func (x *nameIndex) lookup(allowlist string, a netip.Addr) []string {
	m := x.p.Load()
	if m == nil {
		return nil
	}
	ns := (*m)[allowlist][a.Unmap()]
	out := append([]string(nil), ns...)
	sort.Strings(out)
	return out
}

// attribution is what deny events are told: which allowlist restricts a
// uid, which user an allowlist names, which of its names an address
// belongs to. The deny event loop reads it from its own goroutine, so each
// part is replaced whole behind an atomic pointer; the loop's goroutine is
// the only writer and alone uses stale and changed.
type attribution struct {
	index nameIndex                         // allowlist -> address -> names
	users atomic.Pointer[map[string]string] // allowlist -> user, as written
	// the subject a denied packet carries (its socket's uid, a unit deny's
	// mark: ruleset.SubjectIDOf) -> (allowlist, unit)
	bySubject atomic.Pointer[map[subjectRef][2]string]
	// cgroup id -> (allowlist, unit): restricted units' cgroups (bind_denied)
	byCgroup atomic.Pointer[map[uint64][2]string]

	stale   bool            // the configuration changed since the index was built
	changed map[string]bool // names whose addresses changed since the index was built
}

// configChanged records a new configuration: its users at once, the name
// index at the next refresh.
func (x *attribution) configChanged(cfg *config.Config) {
	users := make(map[string]string, len(cfg.Allowlists))
	for _, a := range cfg.Allowlists {
		users[a.Name] = a.User
	}
	x.users.Store(&users)
	x.stale = true
}

// nameChanged records that a name's allowed addresses changed.
func (x *attribution) nameChanged(name string) {
	if x.changed == nil {
		x.changed = map[string]bool{}
	}
	x.changed[name] = true
}

// subjectRef is a subject as a logged packet names it: its kind and id.
type subjectRef struct {
	kind ruleset.SubjectKind
	id   uint32
}

// setSubjects records which allowlist each subject stands for: each uid
// (uids), each unit key of a unit allowlist of cfg (keys).
func (x *attribution) setSubjects(cfg *config.Config, uids, keys map[string]uint32) {
	m := make(map[subjectRef][2]string, len(uids)+len(keys))
	for n, uid := range uids {
		m[subjectRef{ruleset.SubjectUser, uid}] = [2]string{n, ""}
	}
	for _, a := range cfg.Allowlists {
		if k, ok := keys[a.Name]; ok && a.IsUnit() {
			m[subjectRef{ruleset.SubjectUnit, k}] = [2]string{a.Name, a.Unit}
		}
	}
	x.bySubject.Store(&m)
}

// subjectOf returns the allowlist and unit of a subject; safe for
// concurrent use.
func (x *attribution) subjectOf(k ruleset.SubjectKind, id uint32) (string, string, bool) {
	m := x.bySubject.Load()
	if m == nil {
		return "", "", false
	}
	au, ok := (*m)[subjectRef{k, id}]
	return au[0], au[1], ok
}

// setCgroups records which unit allowlist each followed cgroup is of.
func (x *attribution) setCgroups(cfg *config.Config, cgs []ruleset.Cgroup) {
	units := map[string]string{}
	for _, a := range cfg.Allowlists {
		units[a.Name] = a.Unit
	}
	m := make(map[uint64][2]string, len(cgs))
	for _, c := range cgs {
		m[c.ID] = [2]string{c.Allowlist, units[c.Allowlist]}
	}
	x.byCgroup.Store(&m)
}

// CgroupOf returns the unit allowlist and unit of a restricted unit's
// cgroup (a refused bind's); safe for concurrent use.
func (c *Controller) CgroupOf(id uint64) (string, string, bool) {
	m := c.attr.byCgroup.Load()
	if m == nil {
		return "", "", false
	}
	au, ok := (*m)[id]
	return au[0], au[1], ok
}

// UnitOf returns the unit allowlist and unit of a unit key (a unit deny's
// packet mark); safe for concurrent use.
func (c *Controller) UnitOf(key uint32) (string, string, bool) {
	return c.attr.subjectOf(ruleset.SubjectUnit, key)
}

// refresh brings the name index up to date with what the kernel now holds.
func (x *attribution) refresh(cfg *config.Config, addrs func(string) []netip.Addr) {
	if x.stale {
		x.index.store(buildNameIndex(cfg, addrs))
	} else if len(x.changed) > 0 {
		x.index.store(updateNameIndex(x.index.load(), cfg, x.changed, addrs))
	}
	x.stale, x.changed = false, nil
}

// NamesFor returns the names of the allowlist whose current or lingering
// addresses include a; safe for concurrent use (the deny event loop calls it).
func (c *Controller) NamesFor(allowlist string, a netip.Addr) []string {
	return c.attr.index.lookup(allowlist, a)
}

// User returns the user an allowlist names, as written; safe for concurrent use.
func (c *Controller) User(allowlist string) (string, bool) {
	m := c.attr.users.Load()
	if m == nil {
		return "", false
	}
	u, ok := (*m)[allowlist]
	return u, ok
}

// AllowlistOf returns the allowlist that restricts uid; safe for concurrent use.
func (c *Controller) AllowlistOf(uid uint32) (string, bool) {
	n, _, ok := c.attr.subjectOf(ruleset.SubjectUser, uid)
	return n, ok
}
