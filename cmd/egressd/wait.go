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
	allowlist := fs.String("allowlist", "", "the allowlist (NAME of allow.d/NAME.yaml); its user is waited for")
	cfgPath := fs.String("config", config.DefaultPath, "main configuration file (with --allowlist)")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait; 0 checks once")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 || (*userName == "") == (*allowlist == "") || *timeout < 0 {
		fmt.Fprintln(stderr, "usage: egressd wait (--user USER | --allowlist NAME) [--timeout 30s] [--config FILE]")
		return 2
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
	if !startgate.HasNetAdmin() {
		fmt.Fprintln(stderr, "egressd wait: needs CAP_NET_ADMIN to read nf_tables (run it as root: ExecStartPre=+…); not starting")
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := startgate.Wait(ctx, &ruleset.Netlink{}, uid, 100*time.Millisecond); err != nil {
		if errors.Is(err, startgate.ErrNotEnforced) {
			fmt.Fprintf(stderr, "egressd wait: %v after %s: egressd does not enforce an allowlist for it; not starting\n", err, *timeout)
		} else {
			fmt.Fprintln(stderr, "egressd wait:", err)
		}
		return 1
	}
	return 0
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
