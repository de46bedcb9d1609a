package policy

import (
	"errors"
	"testing"

	"github.com/egressd/egressd/config"
)

func users(name string) (uint32, error) {
	switch name {
	case "billing":
		return 1001, nil
	case "billing-alias":
		return 1001, nil
	}
	return 0, errors.New("no such user")
}

func TestLookupUsersConflict(t *testing.T) {
	c := &config.Config{Allowlists: []*config.Allowlist{{Name: "a", User: "billing"}, {Name: "b", User: "billing-alias"}, {Name: "c", User: "1001"}}}
	u := LookupUsers(c, users)
	if len(u.UIDs) != 1 || u.UIDs["a"] != 1001 || len(u.Conflicts) != 2 {
		t.Fatalf("users = %+v", u)
	}
}

// Seeded from the previous run's state, a held uid survives a restart.
func TestHeldUIDSurvivesRestart(t *testing.T) {
	u := LookupUsers(&config.Config{Allowlists: []*config.Allowlist{{Name: "svc", User: "typo"}}}, users)
	u.Keep(Seed(map[string]uint32{"svc": 4242, "gone": 7}))
	if u.UIDs["svc"] != 4242 || len(u.Missing) != 0 || len(u.UIDs) != 1 {
		t.Fatalf("uids %v missing %v", u.UIDs, u.Missing)
	}
}
