package check

import (
	"net/netip"
	"os"
	"testing"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/privilege"
	"github.com/egressd/egressd/resolver"
)

// An Options left empty asks as the daemon does: the system's users, the
// configuration's resolvers behind its hosts file, the real clock and
// capabilities, the system's unit directory.
func TestOptionsDefaults(t *testing.T) {
	var o Options
	o.defaults()
	if o.Users == nil || o.Now == nil || o.CanAdmin == nil || o.UnitDir != DefaultUnitDir {
		t.Fatalf("defaults %+v", o)
	}
	servers := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53")}
	q, ok := o.NewQuerier(&config.Config{Resolvers: servers}).(*resolver.HostsFirst)
	if !ok {
		t.Fatalf("querier %T, want the hosts file first", q)
	}
	if c, ok := q.Next.(*resolver.Client); !ok || len(c.Servers) != 1 || c.Servers[0] != servers[0] {
		t.Errorf("after the hosts file: %#v, want a client of the configuration's resolvers", q.Next)
	}
	if o.CanAdmin() != privilege.NetAdmin() {
		t.Error("CanAdmin is not CAP_NET_ADMIN's presence")
	}
	if os.Geteuid() != 0 && CanAdmin() {
		t.Errorf("uid %d without capabilities can admin", os.Geteuid())
	}
}
