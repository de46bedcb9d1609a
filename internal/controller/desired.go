// Package controller owns egressd's reconcile loop: configuration, DNS
// refreshes, user lookups and signals only mark work as due; one goroutine
// computes the desired state and applies it to the kernel.
package controller

import (
	"fmt"
	"net/netip"
	"sort"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/resolver"
	"github.com/egressd/egressd/ruleset"
)

// Users is the outcome of looking up every allowlist's user.
type Users struct {
	UIDs      map[string]uint32 // allowlist name -> uid, for users that exist
	Missing   map[string]error  // allowlist name -> why its user is not enforced yet
	Conflicts []string          // human-readable, one per allowlist left out
	Vanished  map[string]error  // allowlist name -> why its user no longer resolves (still enforced)
	written   map[string]string // allowlist name -> the user as written, for Keep
}

// Keep carries uids over from an earlier lookup for users that no longer
// resolve (deleted from /etc/passwd, NSS server down) while the allowlist
// still names the same user: processes may still run under that uid, and
// dropping its allowlist would lift their restriction. Fail closed.
func (u *Users) Keep(prev Users) {
	for name, err := range u.Missing {
		uid, ok := prev.UIDs[name]
		if !ok || prev.written[name] != u.written[name] {
			continue
		}
		u.UIDs[name] = uid
		delete(u.Missing, name)
		if u.Vanished == nil {
			u.Vanished = map[string]error{}
		}
		u.Vanished[name] = err
	}
}

// LookupUsers resolves each allowlist's user. Two allowlists that turn out to
// name the same uid (a name and its number) cannot both own it: the first by
// name is enforced, the other is reported.
func LookupUsers(c *config.Config, lookup config.UserLookup) Users {
	u := Users{UIDs: map[string]uint32{}, Missing: map[string]error{}, written: map[string]string{}}
	owner := map[uint32]string{}
	for _, a := range c.Allowlists {
		u.written[a.Name] = a.User
		uid, err := a.UID(lookup)
		if err != nil {
			u.Missing[a.Name] = err
			continue
		}
		if prev, ok := owner[uid]; ok {
			u.Conflicts = append(u.Conflicts, fmt.Sprintf("%s: user %q is uid %d, which allowlist %q already restricts; only %q is enforced for it", a.File, a.User, uid, prev, prev))
			continue
		}
		owner[uid] = a.Name
		u.UIDs[a.Name] = uid
	}
	return u
}

// CacheNames returns the names the resolver cache must hold, each with
// whether any allowlist that uses it accepts private answers.
func CacheNames(c *config.Config) map[string]bool {
	out := map[string]bool{}
	for _, a := range c.Allowlists {
		for _, n := range a.Names() {
			out[n] = out[n] || a.AllowPrivateAnswers
		}
	}
	return out
}

// BuildDesired computes what the kernel should hold. It is pure: addrs
// returns the addresses a name allows now.
func BuildDesired(c *config.Config, users Users, addrs func(name string) []netip.Addr) ruleset.Desired {
	return BuildDesiredHosts(c, users, addrs, nil)
}

// BuildDesiredHosts is BuildDesired where fromHosts (may be nil) says which
// of a name's addresses the hosts file gives: those are taken as written,
// like literal entries, even in internal ranges.
func BuildDesiredHosts(c *config.Config, users Users, addrs func(name string) []netip.Addr, fromHosts func(name string, a netip.Addr) bool) ruleset.Desired {
	d := ruleset.Desired{Resolvers: c.Resolvers, DenyLog: c.DenyLog}
	for _, a := range c.Allowlists {
		uid, ok := users.UIDs[a.Name]
		if !ok {
			continue
		}
		al := ruleset.Allowlist{Name: a.Name, UID: uid, DNS: a.DNS == config.DNSResolvers}
		for _, e := range a.Entries {
			if !e.IsName() {
				al.Elements = append(al.Elements, ruleset.ElementFor(e.Proto, e.Prefix, e.PortFrom, e.PortTo))
				continue
			}
			for _, ip := range addrs(e.Host) {
				// The cache accepted private answers if any allowlist using
				// the name opted in; this one may not have.
				if !a.AllowPrivateAnswers && resolver.Internal(ip) && (fromHosts == nil || !fromHosts(e.Host, ip)) {
					continue
				}
				al.Elements = append(al.Elements, ruleset.ElementFor(e.Proto, netip.PrefixFrom(ip, ip.BitLen()), e.PortFrom, e.PortTo))
			}
		}
		d.Allowlists = append(d.Allowlists, al)
	}
	sort.Slice(d.Allowlists, func(i, j int) bool { return d.Allowlists[i].Name < d.Allowlists[j].Name })
	return d
}
