// Package startgate holds a protected service's start until egressd
// enforces that service's user in the kernel: `egressd wait`, run as the
// service's ExecStartPre=. It reads the kernel, never egressd's own view,
// and fails closed: not enforced by the deadline means the service does not
// start.
package startgate

import (
	"context"
	"errors"
	"fmt"
	"github.com/egressd/egressd/internal/privilege"
	"syscall"
	"time"

	"github.com/egressd/egressd/ruleset"
)

// UsersReader reads the kernel's uid → allowlist chain map
// (ruleset.Netlink satisfies it).
type UsersReader interface {
	ReadUsers() (map[uint32]string, error)
}

// Restricted reports whether uid is restricted in the kernel now: egressd's
// table exists and its users map sends uid to an allowlist chain. This is
// the one place that knows the kernel layout; a missing table is "not yet",
// not an error.
func Restricted(k UsersReader, uid uint32) (bool, error) {
	users, err := k.ReadUsers()
	if errors.Is(err, ruleset.ErrNoTable) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return users[uid] != "", nil
}

// ErrNotEnforced is returned when the deadline passes before uid is restricted.
var ErrNotEnforced = errors.New("not restricted by egressd in the kernel")

// UIDListenMapped reports whether the listen restriction (internal/bindguard's
// pinned policy map) holds the uid's rule now. nil when the user's allowlist
// has no listen: key.
type UIDListenMapped func(uid uint32) (bool, error)

// Wait returns nil as soon as uid is restricted, checking every poll, and
// ErrNotEnforced (wrapping the last read error, if any) when ctx ends first.
// When the user's allowlist has a listen: key (listen non-nil), the uid must
// be in the listen restriction too: egressd applies nftables first on its
// first load, and a listen restriction that cannot be loaded keeps the gate
// shut (fail closed: the service would otherwise listen on any port).
// It gives up at once when the kernel refuses the read (no CAP_NET_ADMIN):
// waiting would not change that.
func Wait(ctx context.Context, k UsersReader, uid uint32, listen UIDListenMapped, poll time.Duration) error {
	var inListen func() (bool, error)
	if listen != nil {
		inListen = func() (bool, error) { return listen(uid) }
	}
	return wait(ctx, func() (bool, error) { return Restricted(k, uid) }, inListen, fmt.Sprintf("uid %d", uid), poll)
}

// wait polls restricted (and, when inListen is non-nil, inListen once
// restricted holds) until both hold, for Wait and WaitUnit: nil then,
// ErrNotEnforced (wrapping the last read error, if any) when ctx ends first,
// and at once an error when the kernel refuses the read (EPERM, EACCES).
// who names the subject in the error.
func wait(ctx context.Context, restricted, inListen func() (bool, error), who string, poll time.Duration) error {
	t := time.NewTicker(poll)
	defer t.Stop()
	var last error
	for {
		ok, err := restricted()
		if ok && inListen != nil {
			ok, err = inListen()
			if err != nil {
				err = fmt.Errorf("read the listen restriction: %w", err)
			}
		}
		if ok {
			return nil
		}
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
			return fmt.Errorf("read the kernel's maps: %w (needs CAP_NET_ADMIN, and CAP_BPF for listen:, or root: run the gate as ExecStartPre=+)", err)
		}
		last = err
		what := ""
		if inListen != nil {
			what = " (and its listen: restriction)"
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%s%s: %w (last read: %v)", who, what, ErrNotEnforced, last)
			}
			return fmt.Errorf("%s%s: %w", who, what, ErrNotEnforced)
		case <-t.C:
		}
	}
}

// HasNetAdmin reports whether this process holds CAP_NET_ADMIN in its
// effective set: the kernel answers nf_tables reads only then, and the
// ruleset reader reports a refusal as "no table", which would make the gate
// wait out its whole timeout for nothing.
func HasNetAdmin() bool { return privilege.NetAdmin() }
