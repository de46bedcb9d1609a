// Package check is `egressd check`: one-shot verification of the
// configuration, DNS and the live kernel state, through the same code paths
// as the daemon, with a report for people and a stable JSON document for
// monitoring. It changes nothing.
package check

import (
	"context"
	"errors"
	"fmt"
	"github.com/egressd/egressd/internal/privilege"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/cgroup"
	"github.com/egressd/egressd/internal/harden"
	"github.com/egressd/egressd/internal/policy"
	"github.com/egressd/egressd/internal/state"
	"github.com/egressd/egressd/resolver"
	"github.com/egressd/egressd/ruleset"
)

// Exit codes (SPEC.md).
const (
	ExitOK      = 0 // in sync, no problems
	ExitProblem = 1 // drift or problems
	ExitInvalid = 2 // configuration invalid, or check cannot run
)

// Kernel is what check reads from the kernel.
type Kernel interface {
	ruleset.Verifier
	ReadSets() (map[string][]ruleset.Element, error)
	ReadUsers() (map[uint32]string, error)
}

// Options configure a check.
type Options struct {
	ConfigPath     string
	ConfigRequired bool
	RuntimeDir     string
	Kernel         Kernel
	Users          config.UserLookup                     // default config.SystemUsers
	NewQuerier     func(*config.Config) resolver.Querier // default resolver.Client
	Now            func() time.Time
	Trust          config.Trust // who may own configuration paths; zero: root and this process's user
	// CanAdmin reports whether this process may read nftables; default:
	// root, or CAP_NET_ADMIN in the effective set.
	CanAdmin func() bool
	// UnitDir holds the protected services' units and egressd harden's
	// drop-ins; default DefaultUnitDir.
	UnitDir string
	// CgroupRoot is where the cgroup2 hierarchy is mounted (tests); default:
	// found in /proc/self/mountinfo.
	CgroupRoot string
	// ListNFT, when set, shows what the host's nft prints of egressd's
	// table (ListWithNFT); a table it cannot print in full is a note.
	ListNFT func(context.Context) (NFTListing, error)
}

// Report is the JSON document of `egressd check --json` (version 1,
// documented in docs/check.md).
type Report struct {
	Version    int               `json:"version"`
	Status     string            `json:"status"` // ok | problems | invalid | cannot_run
	ExitCode   int               `json:"exit_code"`
	CheckedAt  time.Time         `json:"checked_at"`
	Config     ConfigReport      `json:"config"`
	Daemon     DaemonReport      `json:"daemon"`
	Allowlists []AllowlistReport `json:"allowlists"`
	Problems   []Problem         `json:"problems"`
	// Notes are worth knowing and do not fail the check (nft_cannot_print,
	// legacy_raw_unread).
	Notes []Problem `json:"notes,omitempty"`
}

// ConfigReport describes the configuration on disk.
type ConfigReport struct {
	File       string   `json:"file"`
	Valid      bool     `json:"valid"`
	Errors     []string `json:"errors,omitempty"`
	Allowlists int      `json:"allowlists"`
	Names      int      `json:"names"`
	Resolvers  []string `json:"resolvers"`
	HostsFile  string   `json:"hosts_file"` // looked up before DNS; "" when off
	// Sources says, per name, which source answered the fresh lookup:
	// "hosts" (the hosts file) or "dns"; failed names are absent.
	Sources map[string]string `json:"sources"`
}

// DaemonReport describes the daemon, from its state file.
type DaemonReport struct {
	StateFile     string     `json:"state_file"`
	Seen          bool       `json:"seen"`    // a state file exists
	Running       bool       `json:"running"` // its process is alive
	PID           int        `json:"pid,omitempty"`
	Generation    uint64     `json:"generation,omitempty"`
	LastApply     *time.Time `json:"last_apply,omitempty"`
	Updated       *time.Time `json:"updated,omitempty"`
	ConfigMatches bool       `json:"config_matches"` // the daemon enforces the configuration on disk
}

// AllowlistReport is one line of the report.
type AllowlistReport struct {
	Name    string  `json:"name"`
	File    string  `json:"file"`
	User    string  `json:"user"`
	Unit    string  `json:"unit,omitempty"`    // a unit allowlist's unit (User is "")
	Cgroups int     `json:"cgroups,omitempty"` // a unit allowlist's cgroups the kernel should map (0: the unit is not running)
	UID     *uint32 `json:"uid"`
	Mode    string  `json:"mode"` // enforce | audit
	DNS     string  `json:"dns"`  // resolvers | none | proxy
	// Proxied is, with dns: proxy, how many answers of the proxy the
	// kernel holds for it now (they come and go with the service's queries).
	Proxied   int `json:"proxied,omitempty"`
	Entries   int `json:"entries"`
	Names     int `json:"names"`
	Addresses int `json:"addresses"` // elements the kernel should hold for it
	// Ending counts the kernel's elements for it that end by themselves
	// (addresses from DNS and the hosts file); EndsIn and LastEndsIn are
	// the soonest and the latest time they have left: the kernel removes
	// each then, whether or not egressd runs, unless egressd renews it.
	Ending     int    `json:"ending"`
	EndsIn     string `json:"ends_in,omitempty"`
	LastEndsIn string `json:"last_ends_in,omitempty"`
	Status     string `json:"status"` // ok | drift | user_missing | user_conflict | names_failing
	// Notes are what an operator should know that is not drift: with
	// dns: proxy, where resolved's D-Bus API stays open for the service.
	Notes []string `json:"notes,omitempty"`
}

// Problem is one thing an operator should act on.
type Problem struct {
	Kind   string `json:"kind"`
	Object string `json:"object"`
	Detail string `json:"detail"`
	Fix    string `json:"fix"`
}

func (o *Options) defaults() {
	if o.Users == nil {
		o.Users = config.SystemUsers
	}
	if o.NewQuerier == nil {
		o.NewQuerier = func(c *config.Config) resolver.Querier { return &resolver.Client{Servers: c.Resolvers} }
	}
	// Names are looked up as the daemon does: the hosts file first.
	next := o.NewQuerier
	o.NewQuerier = func(c *config.Config) resolver.Querier {
		h, _ := resolver.NewHostsWith(c.HostsFile, o.Trust.ReadFile) // unreadable: DNS only, as the reports show
		return &resolver.HostsFirst{Hosts: h, Next: next(c)}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CanAdmin == nil {
		o.CanAdmin = CanAdmin
	}
	if o.UnitDir == "" {
		o.UnitDir = DefaultUnitDir
	}
}

// CanAdmin reports whether this process may read nftables: root, or
// CAP_NET_ADMIN in its effective capability set.
func CanAdmin() bool { return privilege.NetAdmin() }

// NotAdminMsg is why check cannot answer without the capability.
const NotAdminMsg = "reading nftables needs root or CAP_NET_ADMIN: cannot answer without CAP_NET_ADMIN"

// NameResult is the fresh resolution of one name.
type NameResult struct {
	Addrs   []netip.Addr // accepted by the name's policy
	Dropped int          // refused: internal ranges, over the cap
	Err     error
	Source  string // resolver.SourceHosts or resolver.SourceDNS, of the last answer
}

// Resolve looks every name of the configuration up once (A and AAAA),
// through the daemon's fan-out and answer filter.
func Resolve(ctx context.Context, cfg *config.Config, q resolver.Querier) map[string]NameResult {
	names := policy.CacheNames(cfg)
	keys := make([]resolver.Key, 0, 2*len(names))
	for name := range names {
		k := resolver.KeysFor(name)
		keys = append(keys, k[:]...)
	}
	outcomes := policy.Query(ctx, q, keys, policy.Concurrency)
	out := make(map[string]NameResult, len(names))
	errs := map[string][]error{}
	for i, k := range keys { // A then AAAA of each name
		r, o := out[k.Name], outcomes[i]
		if o.Err != nil {
			errs[k.Name] = append(errs[k.Name], o.Err)
		} else {
			kept, dropped, _ := resolver.Policy{MaxAddrs: cfg.MaxAddressesPerName}.Admit(o.Res, names[k.Name])
			r.Source = o.Res.Source
			r.Addrs = append(r.Addrs, kept...)
			r.Dropped += dropped
		}
		out[k.Name] = r
	}
	for name, r := range out {
		if len(errs[name]) > 0 {
			r.Err = errors.Join(errs[name]...)
		} else if len(r.Addrs) == 0 && r.Dropped == 0 {
			r.Err = errors.New("no addresses (NXDOMAIN or no A/AAAA records)")
		}
		out[name] = r
	}
	return out
}

// Desired is the state `egressd run` would apply now, built as the daemon
// builds it (policy.Build): from names resolved just now (fresh, from
// Resolve), the hosts file (may be nil) and the restricted units' cgroups
// running now under cgroupRoot ("" for the mounted hierarchy). When the
// cgroups cannot be found, the error comes with a state that maps none.
func Desired(cfg *config.Config, users policy.Users, fresh map[string]NameResult, hosts *resolver.Hosts, cgroupRoot string) (policy.Desired, error) {
	found, err := cgroup.Restricted(cgroupRoot, cfg)
	return policy.Build(policy.Inputs{Config: cfg, Users: users, Addrs: func(name string) []netip.Addr { return fresh[name].Addrs },
		FromHosts: hosts.Has, Cgroups: policy.Cgroups(found)}), err
}

// heldUID is the uid the running daemon enforces for an allowlist.
func heldUID(s *state.State, up bool, allowlist string) (uint32, bool) {
	if !up || s == nil {
		return 0, false
	}
	uid, ok := s.Users[allowlist]
	return uid, ok
}

// Run performs the check.
func Run(ctx context.Context, o Options) *Report {
	o.defaults()
	r := &Report{Version: 1, CheckedAt: o.Now(), Allowlists: []AllowlistReport{}, Problems: []Problem{}}
	r.Config.File = o.ConfigPath
	problem := func(kind, obj, detail, fix string) {
		r.Problems = append(r.Problems, Problem{Kind: kind, Object: obj, Detail: detail, Fix: fix})
	}
	finish := func(code int) *Report {
		r.ExitCode = code
		r.Status = map[int]string{ExitOK: "ok", ExitProblem: "problems", ExitInvalid: "invalid"}[code]
		return r
	}
	r.Daemon.StateFile = filepath.Join(o.RuntimeDir, state.File)

	cfg, err := config.LoadTrusted(o.ConfigPath, o.ConfigRequired, o.Trust)
	if err != nil {
		// Say what protects the host meanwhile, and only what is true.
		keep := "; no egressd daemon is running: nothing enforces a configuration until one starts on valid files (or on its last good copy)"
		if st, serr := state.Read(o.RuntimeDir); serr == nil && st.Running(o.RuntimeDir) {
			keep = fmt.Sprintf("; the running daemon (pid %d) keeps enforcing its last good configuration (%s) meanwhile", st.PID, st.ConfigFile)
			r.Daemon.Seen, r.Daemon.Running, r.Daemon.PID = true, true, st.PID
		}
		var ce config.Errors
		if !errors.As(err, &ce) {
			ce = config.Errors{{Pos: config.Pos{File: o.ConfigPath}, Msg: err.Error()}}
		}
		for i, e := range ce {
			r.Config.Errors = append(r.Config.Errors, e.Error())
			fix := e.Fix
			switch {
			case fix != "":
			case e.Pos.Line > 0:
				fix = "fix the file at the line and column named"
			default:
				fix = "fix or remove the file named"
			}
			obj := e.Pos.File
			if e.Pos.Line > 0 {
				obj = e.Pos.String()
			}
			if i == len(ce)-1 { // said once, after the last error
				fix += keep
			}
			problem("config_invalid", obj, e.Msg, fix)
		}
		return finish(ExitInvalid)
	}
	r.Config.File, r.Config.Valid = cfg.File, true
	r.Config.Allowlists, r.Config.Names = len(cfg.Allowlists), len(cfg.Names())
	for _, a := range cfg.Resolvers {
		r.Config.Resolvers = append(r.Config.Resolvers, a.String())
	}
	r.Config.HostsFile, r.Config.Sources = cfg.HostsFile, map[string]string{}
	if cfg.AllowDirMissing {
		problem("allow_dir_missing", cfg.AllowDir, "the allow directory does not exist: nobody is restricted", "create it and put one NAME.yaml per service user in it")
	}
	for _, f := range cfg.Skipped {
		problem("file_skipped", f, "not loaded: allowlists are named NAME.yaml or NAME.yml (hidden files are ignored silently)",
			"rename it to NAME.yaml if it is an allowlist, or move it out of "+cfg.AllowDir)
	}

	if !o.CanAdmin() {
		problem("cannot_run", "kernel", NotAdminMsg, "run egressd check as root (sudo egressd check)")
		r.ExitCode, r.Status = ExitInvalid, "cannot_run"
		return r
	}
	if _, err := o.Kernel.ReadSets(); err != nil && !errors.Is(err, ruleset.ErrNoTable) {
		problem("cannot_run", "kernel", fmt.Sprintf("cannot read nftables: %v", err), "check that the kernel has nf_tables and that you are root")
		return finish(ExitInvalid)
	}

	st, serr := state.Read(o.RuntimeDir)
	if errors.Is(serr, state.ErrUntrusted) {
		problem("state_untrusted", r.Daemon.StateFile, serr.Error()+": the daemon's published view is ignored",
			"the runtime directory and its files must belong to egressd (or root) and be writable by it alone (systemd's RuntimeDirectory= does this)")
	}
	daemonUp := serr == nil && st.Running(o.RuntimeDir)
	users := policy.LookupUsers(cfg, o.Users)
	for _, a := range cfg.Allowlists {
		err, ok := users.Missing[a.Name]
		if !ok {
			continue
		}
		if uid, held := heldUID(st, daemonUp, a.Name); held {
			problem("user_missing", a.Name, fmt.Sprintf("%v; the daemon still enforces uid %d for this allowlist (the user it named before) until the user exists", err, uid),
				"create the user, or fix \"user:\" in "+a.File+"; deleting the allowlist file is the only way to lift the restriction")
			continue
		}
		problem("user_missing", a.Name, err.Error(), "create the user, or fix \"user:\" in "+a.File+"; the allowlist is enforced as soon as the user exists")
	}
	for _, c := range users.Conflicts {
		problem("user_conflict", "users", c, "keep one allowlist per uid")
	}

	fresh := Resolve(ctx, cfg, o.NewQuerier(cfg))
	failing := map[string]bool{}
	for _, name := range cfg.Names() {
		res := fresh[name]
		if res.Err == nil && res.Source != "" {
			r.Config.Sources[name] = res.Source
		}
		if res.Err != nil {
			failing[name] = true
			effect := "until it resolves it allows nothing"
			if daemonUp {
				if n := len(st.Names[name].Addrs); n > 0 {
					effect = fmt.Sprintf("meanwhile the daemon still allows the %d addresses it last saw (stale answers are served until stale_grace, %s, runs out; lingering ones until their TTL and linger, %s, run out)", n, cfg.StaleGrace, cfg.Linger)
				}
			}
			problem("name_failed", name, res.Err.Error(), "check the name and the resolvers ("+strings.Join(r.Config.Resolvers, ", ")+"); "+effect)
		}
		if res.Dropped > 0 {
			problem("answers_dropped", name, fmt.Sprintf("%d answers refused (loopback, private, link-local or multicast ranges, or over max_addresses_per_name=%d)", res.Dropped, cfg.MaxAddressesPerName),
				"if the name really points into the LAN, set allow_private_answers: true in its allowlist")
		}
	}

	// What the kernel should hold: the daemon's published view when it runs
	// (lingering and stale-served addresses are not drift), else a fresh render.
	hosts, _ := resolver.NewHostsWith(cfg.HostsFile, o.Trust.ReadFile)
	want, err := Desired(cfg, users, fresh, hosts, o.CgroupRoot)
	if err != nil {
		problem("unit_cgroups", "cgroups", err.Error(), "unit allowlists need the cgroup v2 hierarchy (Linux ≥ 5.13)")
	}
	var expected ruleset.Plan
	if serr == nil {
		r.Daemon.Seen, r.Daemon.Running, r.Daemon.PID, r.Daemon.Generation = true, st.Running(o.RuntimeDir), st.PID, st.Generation
		r.Daemon.LastApply, r.Daemon.Updated = &st.LastApply, &st.Updated
		r.Daemon.ConfigMatches = st.ConfigHash == state.Hash(cfg)
	}
	switch {
	case serr == nil && r.Daemon.Running:
		if expected, err = st.Plan.Ruleset(); err != nil {
			problem("cannot_run", r.Daemon.StateFile, fmt.Sprintf("the daemon's published plan is damaged: %v", err), "restart the daemon (systemctl restart egressd): it rewrites the state file")
			return finish(ExitInvalid)
		}
		if !r.Daemon.ConfigMatches {
			problem("config_not_applied", cfg.File, "the daemon enforces a different configuration than the files on disk (a reload is pending, or the files were rejected)",
				"look for config_rejected in the daemon's log (journalctl -u egressd); systemctl reload egressd")
		}
		for _, p := range listenProblems(cfg, users, st) {
			problem(p.Kind, p.Object, p.Detail, p.Fix)
		}
	default:
		if serr == nil {
			problem("daemon_not_running", r.Daemon.StateFile, fmt.Sprintf("the daemon (pid %d) that wrote the state file is gone; the kernel keeps the last rules but nothing follows DNS", st.PID),
				"systemctl start egressd (or run egressd run --once from a timer)")
		}
		expected = ruleset.Render(want.Ruleset)
	}
	// The restricted units' cgroups are the ones running now (a published
	// plan may be a unit restart behind; the daemon maps a new cgroup
	// within 100 ms).
	expected.Cgroups = ruleset.Render(want.Ruleset).Cgroups

	findings, err := o.Kernel.Verify(expected)
	if err != nil {
		problem("cannot_run", "kernel", fmt.Sprintf("cannot compare with the kernel: %v", err), "run as root on a kernel with nf_tables")
		return finish(ExitInvalid)
	}
	if o.ListNFT != nil {
		if l, err := o.ListNFT(ctx); err == nil {
			if n := NFTNote(l); n != nil {
				r.Notes = append(r.Notes, *n)
			}
		}
	}
	untracked, notes := untrackedProblems(cfg, o.Kernel)
	r.Problems, r.Notes = append(r.Problems, untracked...), append(r.Notes, notes...)
	drifted := map[string]bool{}
	for _, f := range findings {
		fix := "the daemon restores its state within seconds; if this persists, another tool keeps changing table inet egressd"
		if !r.Daemon.Running {
			fix = "start egressd (systemctl start egressd) or run egressd run --once"
		}
		problem("drift_"+f.Kind, f.Object, f.Detail, fix)
		drifted[f.Object] = true
		// A finding on one allowlist's elements is that allowlist's; anything
		// else (the table, a chain, a shared kernel set, the users or owners
		// sets, the resolvers' elements) is shared by every allowlist.
		if id, ok := ruleset.ParseSetName(f.Object); !ok || id.Allowlist == "" {
			for _, ch := range expected.Of(ruleset.SubjectUser) {
				drifted[ruleset.ChainName(ch.Allowlist)] = true
			}
		}
	}

	var lifetimes map[string]map[ruleset.Element]time.Duration
	if lr, ok := o.Kernel.(ruleset.LifetimeReader); ok {
		lifetimes, _ = lr.ReadLifetimes() // the report stands without them
	}
	ending := func(ar *AllowlistReport, sets ...string) {
		var lo, hi time.Duration
		for _, name := range sets {
			for _, left := range lifetimes[name] {
				if ar.Ending == 0 || left < lo {
					lo = left
				}
				hi = max(hi, left)
				ar.Ending++
			}
		}
		if ar.Ending > 0 {
			ar.EndsIn, ar.LastEndsIn = lo.Round(time.Second).String(), hi.Round(time.Second).String()
		}
	}
	proxied := map[uint32]int{}
	if pk, ok := o.Kernel.(ruleset.ProxyKernel); ok {
		if es, err := pk.ReadProxy(); err == nil {
			for _, pe := range es {
				proxied[pe.UID]++
			}
		}
	}
	var gated []harden.GatedUnit
	for _, a := range cfg.Allowlists {
		if a.DNS == config.DNSProxy {
			gated = harden.GatedUnits(o.UnitDir)
			break
		}
	}
	for _, a := range cfg.Allowlists {
		ar := AllowlistReport{Name: a.Name, File: a.File, User: a.User, Unit: a.Unit, Mode: string(a.Mode), DNS: string(a.DNS), Entries: len(a.Entries), Names: len(a.Names()), Status: "ok",
			Notes: systemBusNotes(o.UnitDir, a, gated)}
		if a.IsUnit() {
			id4, id6 := ruleset.SetIDs(a.Name, ruleset.SubjectUnit)
			ar.Addresses = len(expected.Sets[id4.Name()]) + len(expected.Sets[id6.Name()])
			ending(&ar, id4.Name(), id6.Name())
			for _, cg := range expected.Cgroups {
				if cg.Allowlist == a.Name {
					ar.Cgroups++
				}
			}
			if drifted[id4.Name()] || drifted[id6.Name()] || drifted["unitids"] || drifted["unitchains"] {
				ar.Status = "drift"
			}
			r.Allowlists = append(r.Allowlists, ar)
			continue
		}
		if uid, ok := users.UIDs[a.Name]; ok {
			u := uid
			ar.UID = &u
			ar.Proxied = proxied[uid]
		}
		ar.Addresses = len(expected.Sets[ruleset.SetName4(a.Name)]) + len(expected.Sets[ruleset.SetName6(a.Name)])
		ending(&ar, ruleset.SetName4(a.Name), ruleset.SetName6(a.Name))
		for _, n := range a.Names() {
			if failing[n] {
				ar.Status = "names_failing"
			}
		}
		if drifted[ruleset.ChainName(a.Name)] || drifted[ruleset.SetName4(a.Name)] || drifted[ruleset.SetName6(a.Name)] {
			ar.Status = "drift"
		}
		if _, ok := users.Conflicted[a.Name]; ok {
			ar.Status = "user_conflict"
		}
		if _, ok := users.Missing[a.Name]; ok {
			ar.Status = "user_missing"
			if uid, held := heldUID(st, daemonUp, a.Name); held {
				u := uid
				ar.UID = &u
			}
		}
		r.Allowlists = append(r.Allowlists, ar)
	}
	sort.SliceStable(r.Problems, func(i, j int) bool { return r.Problems[i].Kind < r.Problems[j].Kind })
	if len(r.Problems) > 0 {
		return finish(ExitProblem)
	}
	return finish(ExitOK)
}
