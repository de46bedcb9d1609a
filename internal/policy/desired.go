// Package policy holds the pure rules that the daemon, `egressd check` and
// `egressd plan` share: whose uid an allowlist restricts (LookupUsers, Keep), which names
// the resolver cache holds (CacheNames), what the kernel should hold
// (Build) and how names are looked up (Query: bounded fan-out).
// It has no state and touches no kernel.
package policy

import (
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/bindguard"
	"github.com/egressd/egressd/internal/cgroup"
	"github.com/egressd/egressd/resolver"
	"github.com/egressd/egressd/ruleset"
)

// Users is the outcome of looking up every allowlist's user.
type Users struct {
	UIDs       map[string]uint32 // allowlist name -> uid enforced
	Missing    map[string]error  // allowlist name -> why its user is not enforced yet
	Conflicts  []string          // human-readable, one per allowlist left out
	Conflicted map[string]string // allowlist name -> the allowlist that restricts its uid instead
	Vanished   map[string]error  // allowlist name -> why its user does not resolve (its earlier uid is still enforced)
	Was        map[string]string // allowlist name -> the user it named when its kept uid was looked up, if not the same
	UnitKeys   map[string]uint32 // unit allowlist name -> its unit key (ruleset.UnitKeys); unit allowlists have no uid
	written    map[string]string // allowlist name -> the user as written, for Keep
}

// Keep carries uids over from an earlier lookup for allowlists whose user
// does not resolve now: deleted from /etc/passwd, NSS server down, or the
// file edited to name a user that does not exist (a typo). Processes may
// still run under the earlier uid, and dropping its restriction because of
// an edit would let an invalid edit lift it. Fail closed: only deleting the
// allowlist file lifts a restriction. A kept uid that another allowlist
// now restricts is left to that one.
func (u *Users) Keep(prev Users) {
	owned := map[uint32]bool{}
	for _, uid := range u.UIDs {
		owned[uid] = true
	}
	names := make([]string, 0, len(u.Missing))
	for name := range u.Missing {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		uid, ok := prev.UIDs[name]
		if !ok || owned[uid] {
			continue
		}
		owned[uid] = true
		u.UIDs[name] = uid
		if u.Vanished == nil {
			u.Vanished = map[string]error{}
		}
		u.Vanished[name] = u.Missing[name]
		delete(u.Missing, name)
		was := prev.Was[name]
		if was == "" {
			was = prev.written[name]
		}
		if was != "" && was != u.written[name] {
			if u.Was == nil {
				u.Was = map[string]string{}
			}
			u.Was[name] = was
		}
	}
}

// LookupUsers resolves each allowlist's user. Two allowlists that turn out to
// name the same uid (a name and its number) cannot both own it: the first by
// name is enforced, the other is reported.
func LookupUsers(c *config.Config, lookup config.UserLookup) Users {
	u := Users{UIDs: map[string]uint32{}, Missing: map[string]error{}, Conflicted: map[string]string{}, written: map[string]string{}}
	u.UnitKeys = ruleset.UnitKeys(unitAllowlists(c))
	owner := map[uint32]string{}
	for _, a := range c.Allowlists {
		if a.IsUnit() {
			continue // keyed by its unit, not a uid (Units)
		}
		u.written[a.Name] = a.User
		uid, err := a.UID(lookup)
		if err != nil {
			u.Missing[a.Name] = err
			continue
		}
		if prev, ok := owner[uid]; ok {
			u.Conflicts = append(u.Conflicts, fmt.Sprintf("%s: user %q is uid %d, which allowlist %q already restricts; only %q is enforced for it", a.File, a.User, uid, prev, prev))
			u.Conflicted[a.Name] = prev
			continue
		}
		owner[uid] = a.Name
		u.UIDs[a.Name] = uid
	}
	return u
}

func unitAllowlists(c *config.Config) []string {
	var out []string
	for _, a := range c.Allowlists {
		if a.IsUnit() {
			out = append(out, a.Name)
		}
	}
	return out
}

// Seed returns a lookup result that holds uids enforced earlier (by a
// previous run of the daemon, from its state file), for Keep.
func Seed(uids map[string]uint32) Users {
	u := Users{UIDs: map[string]uint32{}}
	for n, uid := range uids {
		u.UIDs[n] = uid
	}
	return u
}

// CacheNames returns the names the resolver cache must hold, each with
// whether any allowlist that uses it accepts private answers.
func CacheNames(c *config.Config) map[string]bool {
	n := 0
	for _, a := range c.Allowlists {
		n += len(a.Entries)
	}
	out := make(map[string]bool, n) // at most one name an entry: no rehash
	for _, a := range c.Allowlists {
		for _, n := range a.Names() {
			out[n] = out[n] || a.AllowPrivateAnswers
		}
	}
	return out
}

// Inputs are everything the desired state is made of. The daemon, `egressd
// check` and `egressd plan` fill them from their own sources (the resolver
// cache, or a resolution made just now) and call Build, so that the three
// cannot disagree on what "the state egressd run would apply" is.
type Inputs struct {
	Config *config.Config
	Users  Users
	// Lifetimes appends the addresses a name allows now to its first
	// argument, each with its lifetime (resolver.Cache.AppendLifetimes):
	// the element it allows carries it (Allowlist.Until), so that the
	// kernel closes it on time by itself. Nil: Addrs.
	Lifetimes func(dst []resolver.Lifetime, name string) []resolver.Lifetime
	// Addrs returns the addresses a name allows now, without lifetimes (a
	// one-shot resolution); used when Lifetimes is nil. Nil: none.
	Addrs func(name string) []netip.Addr
	// FromHosts (may be nil) says which of a name's addresses the hosts file
	// gives: those are taken as written, like literal entries, even in
	// internal ranges.
	FromHosts func(name string, a netip.Addr) bool
	// Cgroups are the restricted units' cgroups running now (Cgroups).
	Cgroups []ruleset.Cgroup
}

// Desired is what egressd run would enforce: the ruleset and the listen
// restriction.
type Desired struct {
	Ruleset ruleset.Desired
	Listen  bindguard.Policy
	// ListenCgroups are unit allowlists' listen: rules keyed by their
	// units' cgroups running now (Inputs.Cgroups), with the units marker.
	ListenCgroups bindguard.Cgroups
}

// Build is the one function that computes what the kernel should hold. It
// is pure. Literal entries never expire.
func Build(in Inputs) Desired {
	c, users := in.Config, in.Users
	appendLifetimes := in.Lifetimes
	if appendLifetimes == nil {
		appendLifetimes = func(dst []resolver.Lifetime, name string) []resolver.Lifetime {
			if in.Addrs == nil {
				return dst
			}
			for _, a := range in.Addrs(name) {
				dst = append(dst, resolver.Lifetime{Addr: a})
			}
			return dst
		}
	}
	d := ruleset.Desired{Resolvers: c.Resolvers, DenyLog: c.DenyLog, ProxyPort: c.DNSProxyPort, Cgroups: in.Cgroups}
	var buf []resolver.Lifetime // one buffer for every name's lookup
	for _, a := range c.Allowlists {
		uid, ok := users.UIDs[a.Name]
		sub := ruleset.UserSubject(uid)
		if a.IsUnit() {
			var key uint32
			key, ok = users.UnitKeys[a.Name]
			sub = ruleset.UnitSubject(a.Unit, key)
		}
		if !ok {
			continue
		}
		al := ruleset.Allowlist{Name: a.Name, Subject: sub, DNS: a.DNS == config.DNSResolvers, Proxy: a.DNS == config.DNSProxy, Audit: a.Mode == config.ModeAudit, Listen: a.Listen != nil}
		for _, e := range a.Entries {
			if e.IsWildcard() {
				continue // allows only what the proxy answered (the proxy sets)
			}
			if !e.IsName() {
				al.Elements = append(al.Elements, ruleset.ElementFor(e.Proto, e.Prefix, e.PortFrom, e.PortTo))
				if al.Until != nil {
					al.Until = append(al.Until, time.Time{})
				}
				continue
			}
			buf = appendLifetimes(buf[:0], e.Host)
			for _, l := range buf {
				ip := l.Addr
				// The cache accepted private answers if any allowlist using
				// the name opted in; this one may not have.
				if !resolver.Accepts(ip, a.AllowPrivateAnswers, e.Host, in.FromHosts) {
					continue
				}
				if !l.Until.IsZero() && al.Until == nil {
					al.Until = make([]time.Time, len(al.Elements), len(al.Elements)+1)
				}
				al.Elements = append(al.Elements, ruleset.ElementFor(e.Proto, netip.PrefixFrom(ip, ip.BitLen()), e.PortFrom, e.PortTo))
				if al.Until != nil {
					al.Until = append(al.Until, l.Until)
				}
			}
		}
		d.Allowlists = append(d.Allowlists, al)
	}
	sort.Slice(d.Allowlists, func(i, j int) bool { return d.Allowlists[i].Name < d.Allowlists[j].Name })
	return Desired{Ruleset: d, Listen: Listen(c, users), ListenCgroups: ListenCgroups(c, in.Cgroups)}
}

// Cgroups converts the restricted units' cgroups found in the hierarchy
// (cgroup.Restricted) into the plan's.
func Cgroups(found []cgroup.Unit) []ruleset.Cgroup {
	var out []ruleset.Cgroup
	for _, f := range found {
		out = append(out, ruleset.Cgroup{ID: f.ID, Allowlist: f.Allowlist})
	}
	return out
}
