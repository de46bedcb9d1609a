package policy

import (
	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/bindguard"
	"github.com/egressd/egressd/ruleset"
)

// Listen is the listen restriction the kernel should hold for users: for
// each user allowlist with a listen: key whose uid is enforced, the ports
// its uid may bind.
func Listen(cfg *config.Config, users Users) bindguard.Policy {
	p := bindguard.Policy{}
	for _, a := range cfg.Allowlists {
		if a.Listen == nil || a.IsUnit() {
			continue
		}
		uid, ok := users.UIDs[a.Name]
		if !ok {
			continue
		}
		p[uid] = listenRule(a)
	}
	return p
}

// ListenCgroups is the listen restriction the kernel should hold for units:
// for each current cgroup of a unit allowlist with a listen: key (cgs, as
// the unit follower found them), that allowlist's ports; and
// bindguard.Expected while any unit allowlist has listen:.
func ListenCgroups(cfg *config.Config, cgs []ruleset.Cgroup) bindguard.Cgroups {
	c := bindguard.Cgroups{}
	byName := map[string]*config.Allowlist{}
	for _, a := range cfg.Allowlists {
		byName[a.Name] = a
		if a.IsUnit() && a.Listen != nil {
			c[bindguard.Expected] = bindguard.Rule{}
		}
	}
	for _, cg := range cgs {
		a := byName[cg.Allowlist]
		if a == nil || a.Listen == nil || !a.IsUnit() {
			continue
		}
		c[cg.ID] = listenRule(a)
	}
	return c
}

func listenRule(a *config.Allowlist) bindguard.Rule {
	r := bindguard.Rule{Audit: a.Mode == config.ModeAudit, Ports: []bindguard.Port{}}
	for _, l := range a.Listen {
		proto := bindguard.TCP
		if l.Proto == "udp" {
			proto = bindguard.UDP
		}
		for port := int(l.From); port <= int(l.To); port++ {
			r.Ports = append(r.Ports, bindguard.Port{Proto: proto, Port: uint16(port)})
		}
	}
	return r
}
