package controller

import (
	"os"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/internal/policy"
	"github.com/egressd/egressd/internal/state"
	"github.com/egressd/egressd/resolver"
	"github.com/egressd/egressd/ruleset"
	"go.uber.org/zap"
)

// publisher writes the daemon's view for `egressd check` (state.json in
// Options.StateDir, replaced atomically), at most once a second unless a
// configuration just took effect. An apply that only renewed lifetimes
// (every 10 s in a steady state) changes nothing check compares, only the
// generation and last apply the file reports: it is written within
// renewalPublish, and before the daemon exits. The loop's goroutine owns it.
type publisher struct {
	o       *Options
	started time.Time
	at      time.Time // next write
	// soon: a configuration took effect; publish without waiting for at.
	soon  bool
	dirty bool // the state file is behind
	// behind: only lifetimes were renewed since the last write (renewed).
	behind  bool
	written time.Time // the last write
	// group: state_group as last looked up (name → gid).
	group struct {
		name string
		gid  int
	}
}

// gid is state_group's gid, looked up once per name; -1 when unset or
// unknown (the file keeps the daemon's group: narrower, never wider).
func (p *publisher) gid(name string) int {
	if name == "" {
		return -1
	}
	if p.group.name != name {
		gid, err := config.GroupID(name)
		if err != nil {
			p.o.Log.Warn("state_group: unknown group; the state file keeps egressd's group", event.Field(event.StateFailed),
				zap.String("group", name), zap.Error(err))
			gid = -1
		}
		p.group.name, p.group.gid = name, gid
	}
	return p.group.gid
}

// changed marks the state file as behind; configChanged also lifts the
// once-a-second limit (check compares with the files at once).
func (p *publisher) changed(configChanged bool) {
	p.dirty = true
	p.soon = p.soon || configChanged
}

// renewalPublish bounds how long the state file's generation and last
// apply may lag behind an apply that only renewed lifetimes.
const renewalPublish = time.Minute

// renewed marks the state file as behind by renewals only: nothing check
// compares changed (the file holds no lifetimes).
func (p *publisher) renewed() { p.behind = true }

// due is when the next write is due, or zero when none is.
func (p *publisher) due() time.Time {
	switch {
	case p.o.StateDir == "":
		return time.Time{}
	case p.dirty:
		return p.at
	case p.behind:
		return later(p.at, p.written.Add(renewalPublish)) // p.at: a failed write is retried a second later
	}
	return time.Time{}
}

// view is what is published.
type view struct {
	generation uint64
	lastApply  time.Time
	cfg        *config.Config
	applied    *ruleset.Plan
	users      policy.Users
	cache      *resolver.Cache
	listenErr  string // why listen: is not enforced; "" when it is
	listenDir  string // where it is pinned, once loaded
}

// publish writes the state file if it is due (or force) and a plan is applied.
func (p *publisher) publish(force bool, v view) {
	if p.o.StateDir == "" || (!p.dirty && !p.behind && !force) || v.applied == nil {
		return
	}
	now := p.o.Now()
	if !force && p.dirty && now.Before(p.at) && !p.soon {
		return
	}
	if !force && !p.dirty && now.Before(later(p.at, p.written.Add(renewalPublish))) {
		return
	}
	p.at, p.soon = now.Add(time.Second), false
	if err := state.WriteMode(p.o.StateDir, p.snapshot(now, v), v.cfg.StateMode, p.gid(v.cfg.StateGroup)); err != nil {
		p.o.Log.Warn("cannot write the state file; egressd check will not see the daemon's view", event.Field(event.StateFailed), zap.Error(err))
		return
	}
	p.dirty, p.behind, p.written = false, false, now
}

func (p *publisher) snapshot(now time.Time, v view) *state.State {
	s := &state.State{
		Version: 1, PID: os.Getpid(), Started: p.started, Updated: now, Generation: v.generation, LastApply: v.lastApply,
		ConfigFile: v.cfg.File, ConfigHash: state.Hash(v.cfg), Plan: state.FromPlan(*v.applied),
		Names: map[string]state.Name{}, Users: v.users.UIDs, MissingUser: map[string]string{},
	}
	s.ListenError, s.ListenDir = v.listenErr, v.listenDir
	for n, err := range v.users.Missing {
		s.MissingUser[n] = err.Error()
	}
	for _, name := range v.cfg.Names() {
		var sn state.Name
		for _, a := range v.cache.Addrs(name) {
			sn.Addrs = append(sn.Addrs, a.String())
		}
		for a, exp := range v.cache.Lingering(name) {
			if sn.Lingering == nil {
				sn.Lingering = map[string]time.Time{}
			}
			sn.Lingering[a.String()] = exp
		}
		for _, k := range resolver.KeysFor(name) {
			if st, ok := v.cache.Status(k); ok {
				sn.Failing = sn.Failing || st.Failing
				sn.ServingStale = sn.ServingStale || st.ServingStale
				if st.LastOK.After(sn.LastOK) {
					sn.LastOK = st.LastOK
				}
				if st.LastErr != nil {
					sn.Error = st.LastErr.Error()
				}
			}
		}
		s.Names[name] = sn
	}
	return s
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
