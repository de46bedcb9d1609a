package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Kind is what a candidate file is: the main file, an allowlist or a shared list.
type Kind string

const (
	KindMain      Kind = "main file"
	KindAllowlist Kind = "allowlist"
	KindList      Kind = "shared list"
)

// ValidateOptions is the context `egressd validate` checks candidates in.
type ValidateOptions struct {
	// ConfigPath, when set, is the installed main file: the candidates are
	// checked together with the installed configuration (its allow
	// directory, shared lists and other allowlists), which is read under the
	// trust rules as the daemon reads it. Empty: the candidates alone.
	ConfigPath string
	// As is where the one candidate will be installed (an allowlist's name
	// comes from it, and with ConfigPath whether it is the main file, an
	// allowlist or a shared list). Empty: each candidate's own path.
	As    string
	Trust Trust
}

// Verdict is what validate found out about one valid candidate.
type Verdict struct {
	Path   string
	Target string // where it goes (As, or Path)
	Kind   Kind
	Name   string // an allowlist's or a list's name
	Notes  []string
	Tests  int // an allowlist's tests: run, all passed
}

// Validate checks candidate files offline: no root, no kernel, no daemon, no
// DNS. The candidates themselves are read as they are (configuration
// management writes them under temporary names, in directories of its own);
// the trust rules apply to the installed configuration that ConfigPath
// names and to the directories the candidates go to. It returns a verdict
// per candidate, or every error found (Errors, with file:line:col).
func Validate(paths []string, o ValidateOptions) ([]Verdict, error) {
	if o.As != "" && len(paths) != 1 {
		return nil, fmt.Errorf("--as names where one candidate goes; %d were given", len(paths))
	}
	var errs Errors
	cands := make([]*candidate, 0, len(paths))
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, err
		}
		data, err := os.ReadFile(abs)
		if err != nil {
			errs = append(errs, readError(abs, err))
			continue
		}
		target := abs
		if o.As != "" {
			if target, err = filepath.Abs(o.As); err != nil {
				return nil, err
			}
		}
		cands = append(cands, &candidate{v: Verdict{Path: abs, Target: target}, data: data})
	}
	if len(errs) > 0 {
		return nil, errs
	}
	var cfg *Config
	w := o.Trust.walker()
	if o.ConfigPath != "" {
		c, err := installedMain(w, o.ConfigPath, cands)
		if err != nil {
			return nil, err
		}
		cfg = c
	}
	for _, c := range cands {
		if err := c.classify(cfg); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	if cfg != nil || o.As != "" {
		errs = append(errs, targetDirs(w, cands)...)
	}
	var lists []*Allowlist
	listData := map[string][]byte{} // list file → candidate bytes
	for _, c := range cands {
		switch c.v.Kind {
		case KindAllowlist:
			a, err := ParseAllowlist(c.v.Path, c.v.Name, c.data)
			if err != nil {
				errs = append(errs, asErrors(c.v.Path, err)...)
				continue
			}
			c.list = a
			lists = append(lists, a)
		case KindList:
			if _, err := ParseList(c.v.Path, c.data); err != nil {
				errs = append(errs, asErrors(c.v.Path, err)...)
				continue
			}
			listData[c.v.Target] = c.data
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	listsDir := ""
	if cfg != nil {
		installed, err := installedAllowlists(w, cfg.AllowDir, cands)
		if err != nil {
			return nil, err
		}
		lists = append(lists, installed...)
		listsDir = cfg.ListsDir
	}
	sort.SliceStable(lists, func(i, j int) bool { return lists[i].Name < lists[j].Name })
	for i := 1; i < len(lists); i++ {
		if lists[i].Name == lists[i-1].Name {
			errs = append(errs, &Error{Pos: Pos{File: lists[i].File}, Msg: fmt.Sprintf("allowlist %q is also defined by %s; keep one of the two files", lists[i].Name, lists[i-1].File)})
		}
	}
	errs = append(errs, duplicateUsers(lists)...)
	if len(errs) > 0 {
		return nil, errs
	}
	// Includes: the candidate lists first (by where they go), then, with
	// the installed configuration, its lists dir under the trust rules.
	// Without it an include that no candidate provides cannot be checked.
	var resolvable []*Allowlist
	for _, c := range cands {
		if c.list == nil {
			continue
		}
		var missing []string
		for _, inc := range c.list.Includes {
			if cfg == nil && !hasCandidateList(listData, inc.Name) {
				missing = append(missing, inc.Name)
			}
		}
		if len(missing) > 0 {
			c.v.Notes = append(c.v.Notes, fmt.Sprintf("include %s not checked: no such list among the candidates (pass --config to use the installed lists); its tests: are not run", strings.Join(missing, ", ")))
			c.untested = true
			continue
		}
		resolvable = append(resolvable, c.list)
	}
	if cfg != nil {
		resolvable = lists
	}
	read := func(file string) ([]byte, error) {
		if d, ok := listData[file]; ok {
			return d, nil
		}
		if cfg == nil {
			return candidateList(listData, file)
		}
		return w.readTrusted(file)
	}
	if err := resolveIncludes(resolvable, listsDir, read); err != nil {
		return nil, err
	}
	out := make([]Verdict, 0, len(cands))
	for _, c := range cands {
		if c.list != nil && !c.untested {
			c.v.Tests = len(c.list.Tests)
		}
		out = append(out, c.v)
	}
	return out, nil
}

// candidateList looks a candidate list up by its base name (without --config the lists
// an allowlist includes are those given beside it, wherever they are).
func candidateList(listData map[string][]byte, file string) ([]byte, error) {
	for f, b := range listData {
		if filepath.Base(f) == filepath.Base(file) {
			return b, nil
		}
	}
	return nil, &fs.PathError{Op: "open", Path: file, Err: fs.ErrNotExist}
}

func hasCandidateList(listData map[string][]byte, name string) bool {
	_, err := candidateList(listData, name+".yaml")
	return err == nil
}

type candidate struct {
	v    Verdict
	data []byte
	list *Allowlist // parsed, when it is an allowlist
	// untested: an include could not be resolved, so its tests did not run.
	untested bool
}

// classify decides what the candidate is: from where it goes when that is
// the installed main file, its allow directory or its lists directory;
// otherwise from its keys.
func (c *candidate) classify(cfg *Config) *Error {
	dir, base := filepath.Dir(c.v.Target), filepath.Base(c.v.Target)
	if cfg != nil {
		switch {
		case c.v.Target == cfg.File:
			c.v.Kind = KindMain
			return nil
		case dir == filepath.Clean(cfg.AllowDir):
			name, ok := AllowlistName(base)
			if !ok {
				return &Error{Pos: Pos{File: c.v.Target}, Msg: fmt.Sprintf("the daemon would not load %s: allowlists are named NAME.yaml or NAME.yml (hidden files are ignored)", base)}
			}
			c.v.Kind, c.v.Name = KindAllowlist, name
			return nil
		case dir == filepath.Clean(cfg.ListsDir):
			name, ok := strings.CutSuffix(base, ".yaml")
			if !ok || !NameRE.MatchString(name) {
				return &Error{Pos: Pos{File: c.v.Target}, Msg: fmt.Sprintf("the daemon would not read %s: shared lists are named NAME.yaml", base)}
			}
			c.v.Kind, c.v.Name = KindList, name
			return nil
		}
		c.v.Notes = append(c.v.Notes, fmt.Sprintf("%s is neither %s nor in %s or %s: checked by its keys", c.v.Target, cfg.File, cfg.AllowDir, cfg.ListsDir))
	}
	c.v.Kind = kindOf(c.data)
	switch c.v.Kind {
	case KindAllowlist:
		if name, ok := AllowlistName(base); ok {
			c.v.Name = name
		} else {
			c.v.Name = "candidate"
			c.v.Notes = append(c.v.Notes, fmt.Sprintf("%s is not NAME.yaml: checked as allowlist %q (pass --as DEST to name it)", base, c.v.Name))
		}
	case KindList:
		c.v.Name = strings.TrimSuffix(base, ".yaml")
		c.v.Notes = append(c.v.Notes, "it has allow: alone: checked as a shared list (an allowlist needs user: or unit:)")
	}
	return nil
}

// kindOf tells the kind of a file from its top-level keys: a main-file key
// makes a main file, allow: alone a shared list, anything else an allowlist
// (whose parser reports what is wrong with it).
func kindOf(data []byte) Kind {
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return KindAllowlist
	}
	m := doc.Content[0]
	onlyAllow := len(m.Content) > 0
	for i := 0; i+1 < len(m.Content); i += 2 {
		k := m.Content[i].Value
		for _, mk := range mainKeys {
			if k == mk {
				return KindMain
			}
		}
		onlyAllow = onlyAllow && k == "allow"
	}
	if onlyAllow {
		return KindList
	}
	return KindAllowlist
}

// installedMain reads the installed main file under the trust rules, or
// parses the candidate that replaces it. Resolvers are not needed offline:
// resolv.conf is not read.
func installedMain(w *walker, path string, cands []*candidate) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	for _, c := range cands {
		if c.v.Target == abs {
			c.v.Kind = KindMain
			// The candidate is read where it is; the directory it goes to
			// is the daemon's.
			if err := trustedDir(w, filepath.Dir(abs)); err != nil {
				return nil, Errors{err}
			}
			cfg, err := ParseMain(abs, c.data)
			if err != nil {
				var es Errors
				for _, e := range asErrors(c.v.Path, err) {
					if e.Pos.File == abs {
						e.Pos.File = c.v.Path
					}
					es = append(es, e)
				}
				return nil, es
			}
			return cfg, nil
		}
	}
	data, err := w.readTrusted(abs)
	if err != nil {
		return nil, Errors{refusedError(abs, err)}
	}
	return ParseMain(abs, data)
}

// targetDirs checks, under the trust rules, the directories the candidates
// go to: the daemon would refuse a file placed in one another user can
// change, however valid the file.
func targetDirs(w *walker, cands []*candidate) Errors {
	var errs Errors
	seen := map[string]bool{}
	for _, c := range cands {
		dir := filepath.Dir(c.v.Target)
		if seen[dir] || c.v.Kind == KindMain {
			continue
		}
		seen[dir] = true
		if err := trustedDir(w, dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func trustedDir(w *walker, dir string) *Error {
	_, _, err := w.resolve(dir)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return refusedError(dir, err)
}

// refusedError is readError saying that it is the daemon that would refuse.
func refusedError(path string, err error) *Error {
	e := readError(path, err)
	if _, ok := trustError(err); ok {
		e.Msg = "the daemon would refuse this configuration: " + e.Msg
	}
	return e
}

// installedAllowlists parses the installed allowlists under the trust rules,
// leaving out the files the candidates replace.
func installedAllowlists(w *walker, dir string, cands []*candidate) ([]*Allowlist, error) {
	replaced := map[string]bool{}
	for _, c := range cands {
		replaced[c.v.Target] = true
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, Errors{{Pos: Pos{File: dir}, Msg: fmt.Sprintf("cannot list allow directory: %v", errors.Unwrap(err))}}
	}
	var errs Errors
	var out []*Allowlist
	for _, ent := range ents {
		file := filepath.Join(dir, ent.Name())
		name, ok := AllowlistName(ent.Name())
		if !ok || replaced[file] {
			continue
		}
		if st, err := os.Stat(file); err == nil && st.IsDir() {
			continue
		}
		data, err := w.readTrusted(file)
		if err != nil {
			errs = append(errs, refusedError(file, err))
			continue
		}
		a, err := ParseAllowlist(file, name, data)
		if err != nil {
			errs = append(errs, asErrors(file, err)...)
			continue
		}
		out = append(out, a)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return out, nil
}
