package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"go.yaml.in/yaml/v3"
)

// Include is one name in an allowlist's include: list.
type Include struct {
	Name string
	Pos  Pos
}

// entries parses an allow: sequence; duplicates are merged.
func (p *parser) entries(v *yaml.Node, key string) []Entry {
	seq := p.sequence(v, key)
	out := make([]Entry, 0, len(seq))
	seen := make(map[string]bool, len(seq))
	for _, n := range seq {
		if n.Kind == yaml.SequenceNode || n.Kind == yaml.MappingNode {
			p.errorf(n, "allow entry: expected host:port, found a list or mapping (an entry that starts with '[' must be quoted: \"[2001:db8::1]:443\")")
			continue
		}
		s, ok := p.scalar(n, "allow entry")
		if !ok {
			continue
		}
		if runTogether(s) {
			p.errorf(n, "allow: %q: two entries run together: a list item is indented differently from the one above it (every \"- \" of the list must start in the same column)", s)
			continue
		}
		e, err := ParseEntry(s)
		if err != nil {
			p.errorf(n, "allow: %v", err)
			continue
		}
		e.Pos = Pos{File: p.file, Line: n.Line, Col: n.Column}
		if seen[e.Key()] {
			continue // duplicates are merged
		}
		seen[e.Key()] = true
		out = append(out, e)
	}
	return out
}

// includes parses an include: sequence of shared list names.
func (p *parser) includes(v *yaml.Node, key string) []Include {
	var out []Include
	seen := map[string]bool{}
	for _, n := range p.sequence(v, key) {
		s, ok := p.scalar(n, "include entry")
		if !ok {
			continue
		}
		if !NameRE.MatchString(s) {
			p.errorf(n, "include: %q is not a list name (the file name of lists/NAME.yaml without .yaml)", s)
			continue
		}
		if seen[s] {
			continue
		}
		seen[s] = true
		out = append(out, Include{Name: s, Pos: Pos{File: p.file, Line: n.Line, Col: n.Column}})
	}
	return out
}

// ParseList parses a shared list file: one key, allow, with the entries of
// an allowlist.
func ParseList(file string, data []byte) ([]Entry, error) {
	p := &parser{file: file}
	var out []Entry
	if root := p.document(data); root != nil {
		p.fields(root, []string{"allow"}, func(key string, k, v *yaml.Node) {
			out = p.entries(v, key)
		})
	}
	if len(p.errs) > 0 {
		return nil, p.errs
	}
	return out, nil
}

// ResolveIncludes reads the shared lists the allowlists include from dir and
// appends their entries to each including allowlist (after its own; an entry
// both lists allow is kept once). Entries keep their list file positions. A
// list that is missing is an error at the include line; a list with errors
// is reported once, at its own positions. Then each allowlist's tests: run
// against its entries (RunTests). Any error rejects the load.
func ResolveIncludes(lists []*Allowlist, dir string) error {
	return resolveIncludes(lists, dir, os.ReadFile)
}

// resolveIncludes reads each list with read: the loader passes its trusted
// reader, so that a list file another user could change is refused like an
// allowlist it could change.
func resolveIncludes(lists []*Allowlist, dir string, read func(string) ([]byte, error)) error {
	var errs Errors
	loaded := map[string][]Entry{}
	bad := map[string]bool{}
	for _, a := range lists {
		for _, inc := range a.Includes {
			if _, ok := loaded[inc.Name]; !ok && !bad[inc.Name] {
				file := filepath.Join(dir, inc.Name+".yaml")
				data, err := read(file)
				if te, ok := trustError(err); ok {
					errs = append(errs, te)
					bad[inc.Name] = true
					continue
				}
				switch {
				case errors.Is(err, fs.ErrNotExist):
					errs = append(errs, &Error{Pos: inc.Pos, Msg: fmt.Sprintf("include: no shared list %q (%s does not exist)", inc.Name, file)})
					continue
				case err != nil:
					var pe *fs.PathError
					if errors.As(err, &pe) {
						err = pe.Err
					}
					errs = append(errs, &Error{Pos: Pos{File: file}, Msg: fmt.Sprintf("cannot read: %v", err), cause: err})
					bad[inc.Name] = true
					continue
				}
				es, err := ParseList(file, data)
				if err != nil {
					errs = append(errs, asErrors(file, err)...)
					bad[inc.Name] = true
					continue
				}
				loaded[inc.Name] = es
			}
			if bad[inc.Name] {
				continue
			}
			seen := map[string]bool{}
			for _, e := range a.Entries {
				seen[e.Key()] = true
			}
			for _, e := range loaded[inc.Name] {
				if e.IsWildcard() && a.DNS != DNSProxy {
					errs = append(errs, wildcardError(e, a))
					continue
				}
				if !seen[e.Key()] {
					seen[e.Key()] = true
					a.Entries = append(a.Entries, e)
				}
			}
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return RunTests(lists)
}
