package controller

import (
	"reflect"
	"sort"
	"time"

	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/internal/policy"
	"github.com/egressd/egressd/internal/state"
	"go.uber.org/zap"
)

// lookupUsers refreshes uids; it logs what is missing when the set of
// missing users changed or when loud is set (a reload).
func (c *Controller) lookupUsers(loud bool) bool { return c.lookupUsersFrom(c.users, loud) }

// lookupUsersFrom is lookupUsers keeping the uids of prev (see Users.Keep).
func (c *Controller) lookupUsersFrom(prev policy.Users, loud bool) bool {
	u := policy.LookupUsers(c.cfg, c.o.Users)
	u.Keep(prev)
	changed := !reflect.DeepEqual(u.UIDs, c.users.UIDs)
	if len(u.Vanished) > len(c.users.Vanished) || (loud && len(u.Vanished) > 0) {
		for n, err := range u.Vanished {
			if was, ok := u.Was[n]; ok {
				c.o.Log.Error("the allowlist names a user that does not exist; still enforcing the uid of the user it named before, until the new one exists (fail closed; only deleting the allowlist file lifts a restriction)",
					event.Field(event.UserMissing), zap.String("allowlist", n), zap.Uint32("uid", u.UIDs[n]), zap.String("previous_user", was), zap.Error(err))
				continue
			}
			c.o.Log.Error("a restricted user no longer resolves; still enforcing its last uid (fail closed)",
				event.Field(event.UserMissing), zap.String("allowlist", n), zap.Uint32("uid", u.UIDs[n]), zap.Error(err))
		}
	}
	if loud || changed {
		names := make([]string, 0, len(u.Missing))
		for n := range u.Missing {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			c.o.Log.Warn("allowlist not enforced yet: its user does not exist; it will be as soon as the user appears",
				event.Field(event.UserMissing), zap.String("allowlist", n), zap.Error(u.Missing[n]))
		}
		for _, m := range u.Conflicts {
			c.o.Log.Error("two allowlists restrict the same uid", event.Field(event.UserConflict), zap.String("error", m))
		}
	}
	if !reflect.DeepEqual(u.UIDs, c.users.UIDs) || !reflect.DeepEqual(u.UnitKeys, c.users.UnitKeys) {
		c.usersGen++ // what policy.Build reads of the users changed
	}
	c.users = u
	c.attr.setSubjects(c.cfg, u.UIDs, u.UnitKeys)
	c.usersAt = c.o.Now().Add(5 * time.Second)
	return changed
}

// seedUsers keeps enforcing, across a restart, the uids that the previous
// run enforced for allowlists whose user does not resolve now. The kernel's
// users set is the first witness: the table outlives the daemon, whatever
// happens to the runtime directory (systemd removes it on every stop). The
// state file the previous run published adds what the kernel cannot say
// (a run that never applied).
func (c *Controller) seedUsers() {
	uids := map[string]uint32{}
	if c.o.StateDir != "" {
		if st, err := state.Read(c.o.StateDir); err == nil {
			for n, u := range st.Users {
				uids[n] = u
			}
		}
	}
	if ku, ok := c.o.Kernel.(interface {
		ReadUsers() (map[uint32]string, error)
	}); ok {
		if m, err := ku.ReadUsers(); err == nil {
			for u, n := range m {
				if n != "" {
					uids[n] = u
				}
			}
		}
	}
	if len(uids) == 0 {
		return
	}
	c.lookupUsersFrom(policy.Seed(uids), true)
}
