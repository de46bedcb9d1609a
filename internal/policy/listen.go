package policy

import (
	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/bindguard"
)

// Listen is the listen restriction the kernel should hold: for each user
// allowlist with a listen: key whose uid is enforced, the ports its uid may
// bind (config refuses listen: in a unit allowlist).
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
		p[uid] = r
	}
	return p
}
