package config

import (
	"fmt"
	"os/user"
	"strconv"
)

// UserLookup maps a user name to its uid; it returns an error when the user does not exist.
type UserLookup func(name string) (uint32, error)

// SystemUsers looks users up through the system's user database (NSS).
func SystemUsers(name string) (uint32, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("user %q has non-numeric uid %q", name, u.Uid)
	}
	return uint32(n), nil
}

// UID resolves the allowlist's user: a number is a uid as it stands (the
// account need not exist), a name is looked up.
func (a *Allowlist) UID(lookup UserLookup) (uint32, error) {
	if n, ok := a.NumericUID(); ok {
		return n, nil
	}
	uid, err := lookup(a.User)
	if err != nil {
		return 0, fmt.Errorf("user %q (%s): %w", a.User, a.UserPos, err)
	}
	if uid == 0 {
		return 0, fmt.Errorf("user %q (%s) has uid 0, which cannot be restricted", a.User, a.UserPos)
	}
	return uid, nil
}

// GroupID is a group name or numeric gid (metrics_socket_group,
// state_group) as a gid.
func GroupID(group string) (int, error) {
	if n, err := strconv.ParseUint(group, 10, 31); err == nil {
		return int(n), nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(g.Gid)
}
