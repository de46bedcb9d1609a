package check

import (
	"fmt"
	"strings"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/harden"
)

// DefaultUnitDir is where egressd harden's drop-ins are installed.
const DefaultUnitDir = "/etc/systemd/system"

// systemBusNotes says, for a dns: proxy allowlist, where resolved's D-Bus
// API (org.freedesktop.resolve1, on the system bus) stays reachable for
// its service: it resolves any name out of the DNS proxy's sight. The
// units are those of dir whose start gate waits for the allowlist (its
// user, or its unit).
func systemBusNotes(dir string, a *config.Allowlist, units []harden.GatedUnit) []string {
	if a.DNS != config.DNSProxy {
		return nil
	}
	var open, closed []string
	for _, u := range units {
		if (a.IsUnit() && u.Unit != a.Unit) || (!a.IsUnit() && (u.User == "" || u.User != a.User)) {
			continue
		}
		if u.SystemBus {
			open = append(open, u.Name)
		} else {
			closed = append(closed, u.Name)
		}
	}
	switch {
	case len(open) > 0:
		return []string{fmt.Sprintf("resolved's D-Bus API (org.freedesktop.resolve1) stays reachable for %s: its hardening leaves the D-Bus system bus open "+
			"(egressd harden --keep-system-bus), and through it any name resolves out of the DNS proxy's sight (a DNS tunnel)", strings.Join(open, ", "))}
	case len(closed) == 0:
		return []string{fmt.Sprintf("no unit in %s starts gated on this allowlist: unless the service's own unit closes them, resolved's D-Bus API "+
			"(org.freedesktop.resolve1) and varlink socket resolve any name out of the DNS proxy's sight (egressd harden --allowlist %s closes both)", dir, a.Name)}
	}
	return nil
}
