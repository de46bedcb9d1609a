package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/deny"
	"github.com/egressd/egressd/internal/learn"
	"github.com/egressd/egressd/internal/state"
)

// cmdLearn prints a proposed allowlist for ALLOWLIST (or the allowlist of
// USER) from what the daemon observed: the attempts it denied or, in audit
// mode, let through. The observations live in the state directory
// (observed.json) and survive restarts.
func cmdLearn(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("learn", flag.ContinueOnError)
	fl.SetOutput(stderr)
	cfgPath := fl.String("config", config.DefaultPath, "main configuration file")
	since := fl.Duration("since", 0, "only what was seen in this last period (0: everything kept)")
	stateDir := fl.String("state-dir", orString(stateDirectory(), "/var/lib/egressd"), "the daemon's state directory (StateDirectory=)")
	runtimeDir := fl.String("runtime-dir", state.DefaultDir, "the daemon's runtime directory (its recent denies, when the state directory has none)")
	if code, done := parseFlags(fl, args); done {
		return code
	}
	if fl.NArg() != 1 {
		return usageError(stderr, "learn", "name one ALLOWLIST (or the USER it restricts)")
	}
	cfg, err := config.Load(*cfgPath, *cfgPath != config.DefaultPath)
	if err != nil {
		fmt.Fprintf(stderr, "egressd learn: the configuration is invalid:\n%v\n", err)
		return 2
	}
	var a *config.Allowlist
	for _, x := range cfg.Allowlists {
		if x.Name == fl.Arg(0) || (x.User != "" && x.User == fl.Arg(0)) || (x.Unit != "" && x.Unit == fl.Arg(0)) {
			a = x
			break
		}
	}
	if a == nil {
		fmt.Fprintf(stderr, "egressd learn: no allowlist named %q, and none restricts a user written so\n", fl.Arg(0))
		return 2
	}
	// Both files are snapshots of the same record: observed.json in the
	// state directory (every 10 s, kept across restarts), denies.json in the
	// runtime directory (every 250 ms while the daemon runs). The newer wins.
	var doc deny.RecentDoc
	src := ""
	var errs []error
	for _, f := range []struct{ dir, name string }{{*stateDir, deny.ObservedFile}, {*runtimeDir, deny.RecentFile}} {
		var d deny.RecentDoc
		if err := state.ReadJSON(f.dir, f.name, &d); err != nil {
			errs = append(errs, err)
			continue
		}
		if src == "" || d.Updated.After(doc.Updated) {
			doc, src = d, f.dir+"/"+f.name
		}
	}
	if src == "" {
		fmt.Fprintf(stderr, "egressd learn: no observations to learn from (%v): %s\n", errors.Join(errs...), whyNothingLearnt(cfg, a, *runtimeDir, errs))
		return 2
	}
	var from time.Time
	if *since > 0 {
		from = time.Now().Add(-*since)
	}
	fmt.Fprintf(stdout, "# from %s\n", src)
	fmt.Fprint(stdout, learn.ProposeDoc(a, doc, from))
	return 0
}

// whyNothingLearnt names the cause it can detect when neither file could
// be read: no daemon at this runtime directory, another deny_log.mode, a
// file it may not read; only else the advice to let the service work.
func whyNothingLearnt(cfg *config.Config, a *config.Allowlist, runtimeDir string, errs []error) string {
	for _, err := range errs {
		if !errors.Is(err, fs.ErrNotExist) {
			return "a file could not be read (run as root: the observations are readable by root only)"
		}
	}
	pid, held, err := state.Holder(runtimeDir)
	switch {
	case err != nil:
		return fmt.Sprintf("cannot tell whether a daemon runs with runtime directory %s: %v", runtimeDir, err)
	case !held:
		return fmt.Sprintf("no egressd daemon runs with runtime directory %s; if it runs with --runtime-dir (or a StateDirectory=) of its own, pass the same --runtime-dir and --state-dir to learn", runtimeDir)
	case cfg.DenyLog.Mode != config.LogNFLOG:
		return fmt.Sprintf("deny_log.mode is %s: the daemon observes denied attempts only with deny_log.mode: nflog", cfg.DenyLog.Mode)
	case a.Mode != config.ModeAudit:
		return fmt.Sprintf("the daemon (pid %d) has observed nothing yet; to learn without breaking the service, put allowlist %s in mode: audit and let the service work", pid, a.Name)
	}
	return fmt.Sprintf("the daemon (pid %d) has observed nothing yet: let the service work (allowlist %s is in mode: audit)", pid, a.Name)
}

func orString(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
