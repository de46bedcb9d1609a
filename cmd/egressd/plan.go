package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/bindguard"
	"github.com/egressd/egressd/internal/cgroup"
	"github.com/egressd/egressd/internal/check"
	"github.com/egressd/egressd/internal/policy"
	"github.com/egressd/egressd/internal/state"
	"github.com/egressd/egressd/resolver"
	"github.com/egressd/egressd/ruleset"
)

// planKernel is what plan reads from the kernel (never writes).
type planKernel interface {
	ruleset.Verifier
	ReadSets() (map[string][]ruleset.Element, error)
	ReadUsers() (map[uint32]string, error)
}

// cmdPlan prints the ruleset `egressd run` would apply now, as nft text,
// and how the kernel differs from it. It changes nothing. Exit 0 when it
// printed the plan (with or without the difference: without
// CAP_NET_ADMIN the kernel cannot be read, which is said on stderr);
// 2 when the configuration is invalid or the options are.
func cmdPlan(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("plan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", config.DefaultPath, "main configuration file")
	runtimeDir := fs.String("runtime-dir", state.DefaultDir, "where the daemon publishes its state (uids it keeps enforcing)")
	if code, done := parseFlags(fs, args); done || fs.NArg() > 0 {
		if !done {
			code = usageError(stderr, "plan", "unexpected argument %q", fs.Arg(0))
		}
		return code
	}
	return plan(context.Background(), planOptions{ConfigPath: *cfgPath, ConfigRequired: configGiven(fs), RuntimeDir: *runtimeDir,
		Kernel: &ruleset.Netlink{}, CanAdmin: check.CanAdmin, Users: config.SystemUsers}, stdout, stderr)
}

// configGiven: --config was given, so a missing file is an error.
func configGiven(fs *flag.FlagSet) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "config" })
	return given
}

type planOptions struct {
	ConfigPath     string
	ConfigRequired bool
	RuntimeDir     string
	Kernel         planKernel
	CanAdmin       func() bool
	Users          config.UserLookup
	Querier        resolver.Querier // nil: the configuration's resolvers
	Trust          config.Trust
	CgroupRoot     string // where the cgroup2 hierarchy is mounted; "": found in /proc/self/mountinfo
}

func plan(ctx context.Context, o planOptions, stdout, stderr io.Writer) int {
	cfg, err := config.LoadTrusted(o.ConfigPath, o.ConfigRequired, o.Trust)
	if err != nil {
		fmt.Fprintln(stderr, "egressd plan: the configuration is invalid:", err)
		return 2
	}
	p, fresh, users, cgErr := planNow(ctx, o, cfg)
	fmt.Fprintf(stdout, "# the ruleset egressd run would apply now (%s; names resolved just now)\n", cfg.File)
	var failed []string
	for name, r := range fresh {
		if r.Err != nil {
			failed = append(failed, name)
		}
	}
	sort.Strings(failed)
	for _, name := range failed {
		comment(stdout, "%s did not resolve (%v): it allows nothing until it does", name, fresh[name].Err)
	}
	missing := make([]string, 0, len(users.Missing))
	for name := range users.Missing {
		missing = append(missing, name)
	}
	sort.Strings(missing)
	for _, name := range missing {
		comment(stdout, "allowlist %s is not enforced: %v", name, users.Missing[name])
	}
	if cgErr != nil {
		comment(stdout, "the restricted units' cgroups cannot be found (%v): unit allowlists map none", cgErr)
	}
	io.WriteString(stdout, p.NFT()) //nolint:errcheck
	planListen(stdout, o, cfg, p.listen, p.listenCg, users)

	fmt.Fprintln(stdout, "\n# difference with the kernel:")
	if !o.CanAdmin() {
		fmt.Fprintln(stdout, "# not shown: reading nftables needs root or CAP_NET_ADMIN")
		fmt.Fprintln(stderr, "egressd plan: the difference with the kernel needs root or CAP_NET_ADMIN (sudo egressd plan); the plan above is complete")
		return 0
	}
	sets, err := o.Kernel.ReadSets()
	if errors.Is(err, ruleset.ErrNoTable) {
		fmt.Fprintf(stdout, "# the kernel has no table inet %s: run would create it as above\n", ruleset.TableName)
		return 0
	}
	var kusers map[uint32]string
	if err == nil {
		kusers, err = o.Kernel.ReadUsers()
	}
	if err != nil {
		comment(stdout, "not shown: cannot read the kernel: %v", err)
		fmt.Fprintln(stderr, "egressd plan: cannot read the kernel:", err)
		return 0
	}
	text, n := ruleset.KernelDiffNFT(p.Plan, sets, kusers)
	io.WriteString(stdout, text) //nolint:errcheck
	// What elements and users do not say: the structure (chains, rules,
	// kernel sets, the dnsusers/audit/owners sets).
	findings, err := o.Kernel.Verify(p.Plan)
	if err != nil {
		comment(stdout, "the structure could not be compared: %v", err)
	}
	for _, f := range findings {
		switch {
		case (f.Kind == "element_missing" || f.Kind == "element_extra") && ruleset.IsProxySet(f.Object):
			// the DNS proxy's sets are not in the elements above
		case f.Kind == "element_missing", f.Kind == "element_extra", f.Kind == "set_extra",
			f.Kind == "users_differ" && f.Object == ruleset.UsersMap:
			continue // shown above as elements
		}
		comment(stdout, "%s", f.String())
		n++
	}
	if n == 0 {
		fmt.Fprintln(stdout, "# none: the kernel holds this ruleset")
	}
	return 0
}

// comment writes a comment of the nft text: every line of it, including
// the later lines of a multi-line error, starts with "# ".
func comment(w io.Writer, format string, a ...any) {
	for _, l := range strings.Split(strings.TrimRight(fmt.Sprintf(format, a...), "\n"), "\n") {
		fmt.Fprintln(w, "# "+l)
	}
}

// nowPlan is the plan `egressd run` would apply now and its listen
// restriction.
type nowPlan struct {
	ruleset.Plan
	listen   bindguard.Policy
	listenCg bindguard.Cgroups
}

// planNow is the plan `egressd run` would apply now (check.Desired, the
// daemon's policy.Build), with the fresh resolution and the users it was
// made of, and why the units' cgroups could not be found.
func planNow(ctx context.Context, o planOptions, cfg *config.Config) (nowPlan, map[string]check.NameResult, policy.Users, error) {
	// The users as a starting daemon sees them: looked up now, holding the
	// uids the previous run enforced for users that vanished.
	users := policy.LookupUsers(cfg, o.Users)
	if st, err := state.Read(o.RuntimeDir); err == nil {
		users.Keep(policy.Seed(st.Users))
	}
	// Names resolved now, as check does: the hosts file first, then DNS.
	q := o.Querier
	if q == nil {
		q = &resolver.Client{Servers: cfg.Resolvers}
	}
	h, _ := resolver.NewHostsWith(cfg.HostsFile, o.Trust.ReadFile)
	fresh := check.Resolve(ctx, cfg, &resolver.HostsFirst{Hosts: h, Next: q})
	d, err := check.Desired(cfg, users, fresh, h, o.CgroupRoot)
	return nowPlan{Plan: ruleset.Render(d.Ruleset), listen: d.Listen, listenCg: d.ListenCgroups}, fresh, users, err
}

// planListen shows the listen restriction run would load (allowlists'
// listen:) and what the kernel holds, when either has any.
func planListen(w io.Writer, o planOptions, cfg *config.Config, want bindguard.Policy, wantCg bindguard.Cgroups, users policy.Users) {
	// Units' rules are keyed by the cgroups of the units running now.
	cgNames := map[uint64]string{}
	if found, err := cgroup.Restricted(o.CgroupRoot, cfg); err == nil {
		for _, f := range found {
			cgNames[f.ID] = f.Allowlist + ", /" + f.Path
		}
	}
	wantCg = maps.Clone(wantCg)
	delete(wantCg, bindguard.Expected) // the units marker, not a cgroup
	dir := bindguard.DefaultDir
	if st, err := state.Read(o.RuntimeDir); err == nil && st.ListenDir != "" {
		dir = st.ListenDir
	}
	var have bindguard.Policy
	var haveCg bindguard.Cgroups
	var herr error
	if o.CanAdmin() {
		have, herr = bindguard.ReadPinned(dir)
		if errors.Is(herr, os.ErrNotExist) && dir != bindguard.DefaultDir {
			dir = bindguard.DefaultDir
			have, herr = bindguard.ReadPinned(dir)
		}
		if herr == nil {
			haveCg, herr = bindguard.ReadPinnedCgroups(dir)
		}
	}
	if len(want) == 0 && len(wantCg) == 0 && (herr != nil || have == nil) {
		return
	}
	names := map[uint32]string{}
	for name, uid := range users.UIDs {
		names[uid] = name
	}
	text := func(p bindguard.Policy, c bindguard.Cgroups, indent string) string {
		return listenText(p, names, indent) + cgroupListenText(c, cgNames, indent)
	}
	fmt.Fprintln(w, "\n# listen restriction (cgroup BPF bind4, bind6, ingress, setsockopt; docs/hardening.md \"Listening ports\"):")
	fmt.Fprint(w, text(want, wantCg, "#   "))
	switch {
	case !o.CanAdmin():
		fmt.Fprintln(w, "# loaded in the kernel: not shown (needs root)")
	case errors.Is(herr, os.ErrNotExist):
		fmt.Fprintln(w, "# loaded in the kernel: nothing (run loads it)")
	case herr != nil:
		fmt.Fprintln(w, "# loaded in the kernel: cannot read:", herr)
	case text(have, haveCg, "") == text(want, wantCg, ""):
		fmt.Fprintf(w, "# loaded in the kernel (%s): the same\n", dir)
	default:
		fmt.Fprintf(w, "# loaded in the kernel (%s), differs:\n", dir)
		fmt.Fprint(w, text(have, haveCg, "#   "))
	}
}

// cgroupListenText lists units' cgroups' rules, by cgroup id.
func cgroupListenText(c bindguard.Cgroups, names map[uint64]string, indent string) string {
	var b strings.Builder
	for _, id := range slices.Sorted(maps.Keys(c)) {
		fmt.Fprintf(&b, "%scgroup %d (%s) may listen on: %s\n", indent, id, names[id], ruleText(c[id]))
	}
	return b.String()
}

func listenText(p bindguard.Policy, names map[uint32]string, indent string) string {
	var b strings.Builder
	for _, uid := range slices.Sorted(maps.Keys(p)) {
		fmt.Fprintf(&b, "%suid %d (%s) may listen on: %s\n", indent, uid, names[uid], ruleText(p[uid]))
	}
	if len(p) == 0 {
		fmt.Fprintf(&b, "%snobody restricted\n", indent)
	}
	return b.String()
}

// ruleText is one rule's ports, sorted, and its mode.
func ruleText(r bindguard.Rule) string {
	ports := make([]string, 0, len(r.Ports))
	for _, pt := range r.Ports {
		ports = append(ports, fmt.Sprintf("%s:%d", bindguard.ProtoName(pt.Proto), pt.Port))
	}
	sort.Strings(ports)
	list := strings.Join(ports, " ")
	if list == "" {
		list = "no port"
	}
	if r.Audit {
		list += " (audit: reported, allowed)"
	}
	return list
}
