package check

import (
	"net/netip"
	"testing"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/policy"
	"github.com/egressd/egressd/ruleset"
)

// planKernel is a kernel that holds a rendered plan: what the daemon would
// have applied for a configuration.
type planKernel struct {
	plan      ruleset.Plan
	users     map[uint32]string
	audited   map[uint32]bool
	findings  []ruleset.Finding
	verifyErr error
	setsErr   error
	usersErr  error
}

func (k *planKernel) Verify(ruleset.Plan) ([]ruleset.Finding, error) { return k.findings, k.verifyErr }
func (k *planKernel) ReadSets() (map[string][]ruleset.Element, error) {
	return k.plan.Sets, k.setsErr
}
func (k *planKernel) ReadUsers() (map[uint32]string, error) { return k.users, k.usersErr }
func (k *planKernel) ReadAudited() (map[uint32]bool, error) { return k.audited, nil }

// applied renders o's configuration as the daemon would, with addrs for
// names, and returns a kernel that holds it.
func applied(t *testing.T, o Options, addrs map[string][]string) *planKernel {
	t.Helper()
	cfg, err := config.LoadTrusted(o.ConfigPath, o.ConfigRequired, o.Trust)
	if err != nil {
		t.Fatal(err)
	}
	users := policy.LookupUsers(cfg, o.Users)
	get := func(name string) []netip.Addr {
		var out []netip.Addr
		for _, s := range addrs[name] {
			out = append(out, netip.MustParseAddr(s))
		}
		return out
	}
	k := &planKernel{plan: ruleset.Render(policy.Build(policy.Inputs{Config: cfg, Users: users, Addrs: get}).Ruleset), users: map[uint32]string{}, audited: map[uint32]bool{}}
	for name, uid := range users.UIDs {
		k.users[uid] = name
	}
	return k
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
