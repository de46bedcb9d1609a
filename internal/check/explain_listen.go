package check

import (
	"errors"
	"fmt"
	"os"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/bindguard"
	"github.com/egressd/egressd/internal/state"
)

// ExplainListen answers "may USER listen on PROTO:PORT right now" (check
// --explain USER listen tcp:PORT) from the listen restriction the kernel
// holds, naming the allowlist entry that allows it. An error means it cannot
// be answered (exit 2).
func ExplainListen(o Options, user, target string) (*Explanation, error) {
	o.defaults()
	l, err := config.ParseListen(target)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	if l.From != l.To {
		return nil, fmt.Errorf("target %q: give one port", target)
	}
	x := &Explanation{User: user, Target: "listen " + target, Proto: l.Proto, Port: l.From, Addresses: []AddrVerdict{}}
	if user == "root" || user == "0" {
		x.Verdict, x.Reason = "unrestricted", "root (uid 0) is never restricted by egressd"
		return x.finish(), nil
	}
	if !o.CanAdmin() {
		return nil, errors.New(NotAdminMsg + " (run as root)")
	}
	cfg, err := config.LoadTrusted(o.ConfigPath, o.ConfigRequired, o.Trust)
	if err != nil {
		return nil, fmt.Errorf("configuration invalid: %w", err)
	}
	if IsUnitName(user) {
		return explainListenUnit(o, cfg, x, l, user)
	}
	uid, ok := (&config.Allowlist{User: user}).NumericUID()
	if !ok {
		if uid, err = o.Users(user); err != nil {
			return nil, fmt.Errorf("user %q: %w", user, err)
		}
	}
	x.UID = uid
	if uid == 0 {
		x.Verdict, x.Reason = "unrestricted", "root (uid 0) is never restricted by egressd"
		return x.finish(), nil
	}
	var al *config.Allowlist
	for _, a := range cfg.Allowlists {
		if u, err := a.UID(o.Users); err == nil && u == uid && !a.IsUnit() {
			al = a
		}
	}
	if al != nil {
		x.Allowlist = al.Name
	}
	dir := bindguard.DefaultDir
	if st, err := state.Read(o.RuntimeDir); err == nil && st.ListenDir != "" {
		dir = st.ListenDir
	}
	loaded, err := readListen(dir)
	if errors.Is(err, os.ErrNotExist) && dir != bindguard.DefaultDir {
		loaded, err = readListen(bindguard.DefaultDir)
	}
	if errors.Is(err, os.ErrNotExist) {
		x.Verdict, x.Reason = "unrestricted", "no listen restriction is loaded in the kernel: egressd restricts nobody's listening ports"
		if al != nil && al.Listen != nil {
			x.Reason += fmt.Sprintf(" (but %s has listen:: run egressd check)", al.File)
		}
		return x.finish(), nil
	}
	if err != nil {
		return nil, err
	}
	rule, restricted := loaded[uid]
	if !restricted {
		x.Verdict, x.Reason = "unrestricted", fmt.Sprintf("uid %d may listen on any port: no listen: restriction in the kernel for it", uid)
		if al != nil && al.Listen != nil {
			x.Reason += fmt.Sprintf(" (but %s has listen:: run egressd check)", al.File)
		}
		return x.finish(), nil
	}
	proto := bindguard.TCP
	if l.Proto == "udp" {
		proto = bindguard.UDP
	}
	for _, p := range rule.Ports {
		if p.Proto == proto && p.Port == l.From {
			x.Verdict, x.Reason = "allowed", "listed in the kernel's listen restriction"
			if al != nil {
				if e, ok := al.ListenAllowed(l.Proto, l.From); ok {
					x.Reason = fmt.Sprintf("allowed by listen: %s (%s:%d:%d)", e, e.Pos.File, e.Pos.Line, e.Pos.Col)
				}
			}
			return x.finish(), nil
		}
	}
	x.Verdict, x.Reason = "denied", fmt.Sprintf("%s is not in the allowlist's listen:: bind() fails with EPERM, a listener there gets no connection", target)
	if rule.Audit {
		x.Reason = fmt.Sprintf("%s is not in the allowlist's listen:, but the allowlist is in audit mode: allowed and reported (bind_denied, audit: true)", target)
		x.Verdict = "allowed"
	}
	return x.finish(), nil
}

// explainListenUnit answers for a unit: the rule the kernel holds for each
// of its cgroups running now.
func explainListenUnit(o Options, cfg *config.Config, x *Explanation, l config.ListenPort, unit string) (*Explanation, error) {
	x.Unit, x.User = unit, ""
	var al *config.Allowlist
	for _, a := range cfg.Allowlists {
		if a.Unit == unit {
			al = a
			x.Allowlist = a.Name
		}
	}
	found, err := findUnits("", cfg)
	if err != nil {
		return nil, err
	}
	var ids []uint64
	for _, f := range found {
		if f.Name == unit {
			ids = append(ids, f.ID)
		}
	}
	if len(ids) == 0 {
		x.Verdict, x.Reason = "unrestricted", fmt.Sprintf("%s is not running (or has no allowlist): no cgroup of it to restrict", unit)
		if al != nil && al.Listen != nil {
			x.Reason += "; its start gate holds its next start until egressd restricts its new cgroup"
		}
		return x.finish(), nil
	}
	dir := bindguard.DefaultDir
	if st, err := state.Read(o.RuntimeDir); err == nil && st.ListenDir != "" {
		dir = st.ListenDir
	}
	loaded, err := readListenCgroups(dir)
	if errors.Is(err, os.ErrNotExist) && dir != bindguard.DefaultDir {
		loaded, err = readListenCgroups(bindguard.DefaultDir)
	}
	if errors.Is(err, os.ErrNotExist) {
		loaded, err = bindguard.Cgroups{}, nil
	}
	if err != nil {
		return nil, err
	}
	proto := bindguard.TCP
	if l.Proto == "udp" {
		proto = bindguard.UDP
	}
	target := l.String()
	for _, id := range ids {
		rule, ok := loaded[id]
		if !ok {
			x.Verdict, x.Reason = "unrestricted", fmt.Sprintf("cgroup %d of %s may listen on any port: no listen: restriction in the kernel for it", id, unit)
			if al != nil && al.Listen != nil {
				x.Reason += fmt.Sprintf(" (but %s has listen:: run egressd check)", al.File)
			}
			return x.finish(), nil
		}
		listed := false
		for _, p := range rule.Ports {
			listed = listed || (p.Proto == proto && p.Port == l.From)
		}
		if !listed {
			x.Verdict, x.Reason = "denied", fmt.Sprintf("%s is not in the allowlist's listen:: bind() in %s fails with EPERM, a listener there gets no connection", target, unit)
			if rule.Audit {
				x.Verdict, x.Reason = "allowed", fmt.Sprintf("%s is not in the allowlist's listen:, but the allowlist is in audit mode: allowed and reported (bind_denied, audit: true)", target)
			}
			return x.finish(), nil
		}
	}
	x.Verdict, x.Reason = "allowed", "listed in the kernel's listen restriction of the unit's cgroup"
	if al != nil {
		if e, ok := al.ListenAllowed(l.Proto, l.From); ok {
			x.Reason = fmt.Sprintf("allowed by listen: %s (%s:%d:%d)", e, e.Pos.File, e.Pos.Line, e.Pos.Col)
		}
	}
	return x.finish(), nil
}
