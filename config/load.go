package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/miekg/dns"
)

// ResolvConf is where default resolvers come from; a variable so tests can point elsewhere.
var ResolvConf = "/etc/resolv.conf"

// Load reads and validates the main file at path and every allowlist in its
// allow directory. A missing main file is an empty one (every key defaults)
// unless required is set, as it is when the operator named the file.
// Any error rejects the whole load: the caller keeps its last good Config.
func Load(path string, required bool) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(abs)
	if errors.Is(err, fs.ErrNotExist) && !required {
		data, err = nil, nil
	}
	if err != nil {
		return nil, Errors{{Pos: Pos{File: abs}, Msg: fmt.Sprintf("cannot read: %v", errors.Unwrap(err))}}
	}
	c, err := ParseMain(abs, data)
	if err != nil {
		return nil, err
	}
	if len(c.Resolvers) == 0 {
		rs, err := systemResolvers(ResolvConf)
		if err != nil {
			return nil, Errors{{Pos: Pos{File: abs}, Msg: fmt.Sprintf("no resolvers configured and %v", err)}}
		}
		c.Resolvers = rs
	}
	if _, err := os.Stat(c.AllowDir); errors.Is(err, fs.ErrNotExist) {
		c.AllowDirMissing = true
		return c, nil
	}
	lists, err := LoadAllowDir(c.AllowDir)
	if err != nil {
		return nil, err
	}
	if err := ResolveIncludes(lists, c.ListsDir); err != nil {
		return nil, err
	}
	c.Allowlists = lists
	return c, nil
}

func systemResolvers(path string) ([]netip.AddrPort, error) {
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %v", path, err)
	}
	var out []netip.AddrPort
	for _, s := range cc.Servers {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			continue // link-local scoped resolvers cannot be matched by address alone
		}
		out = append(out, netip.AddrPortFrom(a.Unmap(), 53))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s names no usable nameserver", path)
	}
	return out, nil
}

// IsAllowlistFile reports whether a directory entry name is an allowlist file.
// Hidden files (editor swap files, Kubernetes' ..data links) are not.
func IsAllowlistFile(name string) bool {
	return strings.HasSuffix(name, ".yaml") && !strings.HasPrefix(name, ".") && len(name) > len(".yaml")
}

// LoadAllowDir parses every allowlist in dir. A missing directory holds no allowlists.
func LoadAllowDir(dir string) ([]*Allowlist, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, Errors{{Pos: Pos{File: dir}, Msg: fmt.Sprintf("cannot list allow directory: %v", errors.Unwrap(err))}}
	}
	var errs Errors
	var lists []*Allowlist
	for _, ent := range ents {
		if !IsAllowlistFile(ent.Name()) {
			continue
		}
		file := filepath.Join(dir, ent.Name())
		if st, err := os.Stat(file); err == nil && st.IsDir() {
			continue
		}
		data, err := os.ReadFile(file) // follows symlinks, as ConfigMap mounts need
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) && pe.Err != nil {
				err = pe.Err
			}
			errs = append(errs, &Error{Pos: Pos{File: file}, Msg: fmt.Sprintf("cannot read: %v", err)})
			continue
		}
		a, err := ParseAllowlist(file, strings.TrimSuffix(ent.Name(), ".yaml"), data)
		if err != nil {
			var ce Errors
			if errors.As(err, &ce) {
				errs = append(errs, ce...)
			} else {
				errs = append(errs, &Error{Pos: Pos{File: file}, Msg: err.Error()})
			}
			continue
		}
		lists = append(lists, a)
	}
	sort.Slice(lists, func(i, j int) bool { return lists[i].Name < lists[j].Name })
	errs = append(errs, duplicateUsers(lists)...)
	if len(errs) > 0 {
		return nil, errs
	}
	return lists, nil
}

func duplicateUsers(lists []*Allowlist) Errors {
	var errs Errors
	first := map[string]*Allowlist{}
	for _, a := range lists {
		if prev, ok := first[a.User]; ok {
			errs = append(errs, &Error{Pos: a.UserPos, Msg: fmt.Sprintf("user %q already has an allowlist in %s (line %d); put all of a user's destinations in one file", a.User, prev.File, prev.UserPos.Line)})
			continue
		}
		first[a.User] = a
	}
	return errs
}
