package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/user"
	"strconv"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/bindguard"
	"github.com/egressd/egressd/internal/cgroup"
	"github.com/egressd/egressd/internal/startgate"
	"github.com/egressd/egressd/ruleset"
)

// cmdWait is the start gate of a protected service (ExecStartPre=+, written
// by harden): exit 0 once the service's user is restricted in the kernel,
// 1 when the timeout passes first (the unit then fails to start), 2 when
// the arguments are wrong or the user cannot be found.
func cmdWait(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("wait", flag.ContinueOnError)
	fs.SetOutput(stderr)
	userName := fs.String("user", "", "the service user (name or uid)")
	unit := fs.String("unit", "", "the unit this gate runs in (a unit allowlist's unit)")
	allowlist := fs.String("allowlist", "", "the allowlist (NAME of allow.d/NAME.yaml); its user is waited for")
	cfgPath := fs.String("config", config.DefaultPath, "main configuration file (with --allowlist)")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait; 0 checks once")
	bpfDir := fs.String("bpf-dir", bindguard.DefaultDir, "where egressd pins the listen restriction (an allowlist with listen:)")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	given := 0
	for _, s := range []string{*userName, *allowlist, *unit} {
		if s != "" {
			given++
		}
	}
	if fs.NArg() > 0 || given != 1 || *timeout < 0 {
		return usageError(stderr, "wait", "give one of --user USER, --unit UNIT or --allowlist NAME (and a --timeout of 0 or more)")
	}
	if *allowlist != "" {
		if u, err := allowlistUnit(*cfgPath, *allowlist); err == nil && u != "" {
			*unit = u
		}
	}
	if *unit != "" {
		return waitUnit(*unit, *cfgPath, *bpfDir, *timeout, stderr)
	}
	var uid uint32
	var err error
	if *allowlist != "" {
		uid, err = allowlistUID(*cfgPath, *allowlist)
	} else {
		uid, err = lookupUID(*userName)
	}
	if err != nil {
		fmt.Fprintln(stderr, "egressd wait:", err)
		return 2
	}
	listen, err := userListen(*cfgPath, uid, *bpfDir)
	if err != nil {
		fmt.Fprintln(stderr, "egressd wait:", err, "; not starting")
		return 1
	}
	if !startgate.HasNetAdmin() {
		fmt.Fprintln(stderr, "egressd wait: needs CAP_NET_ADMIN to read nf_tables (run it as root: ExecStartPre=+…); not starting")
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := startgate.Wait(ctx, &ruleset.Netlink{}, uid, listen, 100*time.Millisecond); err != nil {
		if errors.Is(err, startgate.ErrNotEnforced) {
			fmt.Fprintf(stderr, "egressd wait: %v after %s: egressd does not enforce an allowlist for it; not starting\n", err, *timeout)
		} else {
			fmt.Fprintln(stderr, "egressd wait:", err)
		}
		return 1
	}
	return 0
}

// waitUnit is the gate of a unit allowlist: this process runs in the
// unit's new cgroup; wait until the kernel maps that cgroup to the unit,
// and, when the unit's allowlist has listen:, until the listen restriction
// holds it too.
func waitUnit(unit, cfgPath, bpfDir string, timeout time.Duration, stderr io.Writer) int {
	if err := config.ValidUnit(unit); err != nil {
		fmt.Fprintln(stderr, "egressd wait: --unit:", err)
		return 2
	}
	listen, err := unitListen(cfgPath, unit, bpfDir)
	if err != nil {
		fmt.Fprintln(stderr, "egressd wait:", err, "; not starting")
		return 1
	}
	root, err := cgroup.Root()
	if err == nil {
		var self string
		if self, err = cgroup.Self(); err == nil {
			_, id, uerr := startgate.UnitCgroup(root, self, unit)
			if uerr != nil {
				fmt.Fprintln(stderr, "egressd wait:", uerr, "; not starting")
				return 1
			}
			if !startgate.HasNetAdmin() {
				fmt.Fprintln(stderr, "egressd wait: needs CAP_NET_ADMIN to read nf_tables (run it as root: ExecStartPre=+…); not starting")
				return 1
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			if err := startgate.WaitUnit(ctx, &ruleset.Netlink{}, unit, id, listen, 50*time.Millisecond); err != nil {
				fmt.Fprintf(stderr, "egressd wait: %v after %s: egressd does not enforce an allowlist for this cgroup of the unit; not starting\n", err, timeout)
				return 1
			}
			return 0
		}
	}
	fmt.Fprintln(stderr, "egressd wait:", err, "; not starting")
	return 1
}

// unitListen says whether unit's allowlist has listen: (from the
// configuration: the kernel does not say which unit should be there) and
// returns then how to read the listen restriction's cgroup map. When the
// configuration cannot be read (the daemon then enforces its last good
// one), the kernel decides: while any unit allowlist's listen: is in force
// or expected, this unit waits for it too (fail closed; a unit without
// listen: then fails to start until the configuration is fixed).
func unitListen(cfgPath, unit, bpfDir string) (startgate.ListenMapped, error) {
	mapped := func(id uint64) (bool, error) { return bindguard.CgroupPinned(bpfDir, id) }
	cfg, err := config.Load(cfgPath, false)
	if err != nil {
		expected, kerr := bindguard.UnitsExpected(bpfDir)
		switch {
		case kerr != nil:
			return nil, fmt.Errorf("cannot tell whether unit %s has listen: (configuration: %v; kernel: %w)", unit, err, kerr)
		case expected:
			return mapped, nil
		}
		return nil, nil
	}
	for _, a := range cfg.Allowlists {
		if a.Unit == unit && a.Listen != nil {
			return mapped, nil
		}
	}
	return nil, nil
}

// userListen is unitListen for a user: whether uid's allowlist has listen:
// (from the configuration), and then how to read the listen restriction's
// policy map. When the configuration cannot be read, the kernel decides:
// while any user's listen: is in force, this user waits for its own rule too
// (fail closed; a user without listen: then fails to start until the
// configuration is fixed).
func userListen(cfgPath string, uid uint32, bpfDir string) (startgate.UIDListenMapped, error) {
	mapped := func(uid uint32) (bool, error) { return bindguard.UIDPinned(bpfDir, uid) }
	cfg, err := config.Load(cfgPath, false)
	if err != nil {
		expected, kerr := bindguard.UsersExpected(bpfDir)
		switch {
		case kerr != nil:
			return nil, fmt.Errorf("cannot tell whether uid %d has listen: (configuration: %v; kernel: %w)", uid, err, kerr)
		case expected:
			return mapped, nil
		}
		return nil, nil
	}
	for _, a := range cfg.Allowlists {
		if a.Unit != "" || a.Listen == nil {
			continue
		}
		if id, err := a.UID(config.SystemUsers); err == nil && id == uid {
			return mapped, nil
		}
	}
	return nil, nil
}

// allowlistUnit is the unit of a unit allowlist ("" for a user's).
func allowlistUnit(cfgPath, name string) (string, error) {
	cfg, err := config.Load(cfgPath, false)
	if err != nil {
		return "", err
	}
	for _, a := range cfg.Allowlists {
		if a.Name == name {
			return a.Unit, nil
		}
	}
	return "", fmt.Errorf("no allowlist %q", name)
}

func lookupUID(name string) (uint32, error) {
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(n), nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(u.Uid, 10, 32)
	return uint32(n), err
}

func allowlistUID(cfgPath, name string) (uint32, error) {
	cfg, err := config.Load(cfgPath, false)
	if err != nil {
		return 0, fmt.Errorf("--allowlist needs a valid configuration: %w", err)
	}
	for _, a := range cfg.Allowlists {
		if a.Name == name {
			return a.UID(config.SystemUsers)
		}
	}
	return 0, fmt.Errorf("no allowlist %q in %s", name, cfg.AllowDir)
}
