package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"
)

// ResolvConf is where default resolvers come from; a variable so tests can point elsewhere.
var ResolvConf = "/etc/resolv.conf"

// Load reads and validates the main file at path and every allowlist in its
// allow directory. A missing main file is an empty one (every key defaults)
// unless required is set, as it is when the operator named the file.
// Any error rejects the whole load: the caller keeps its last good Config.
// Every path is checked as Trust{} says: root and egressd's own user alone
// may be able to change it.
func Load(path string, required bool) (*Config, error) {
	return LoadTrusted(path, required, Trust{})
}

// LoadTrusted is Load with the trust rules given (tests: other owners, or
// an Above for their temporary directories).
func LoadTrusted(path string, required bool, t Trust) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	w := t.walker()
	data, err := w.readTrusted(abs)
	if errors.Is(err, fs.ErrNotExist) && !required {
		// No main file: every key defaults, but whoever could create it
		// could still redirect allow_dir: its directory must be trusted.
		if _, _, derr := w.resolve(filepath.Dir(abs)); derr != nil && !errors.Is(derr, fs.ErrNotExist) {
			err = derr
		} else {
			data, err = nil, nil
		}
	}
	if err != nil {
		return nil, Errors{readError(abs, err)}
	}
	c, err := parseMain(abs, data, t)
	if err != nil {
		return nil, err
	}
	if _, _, err := w.resolve(c.AllowDir); errors.Is(err, fs.ErrNotExist) {
		c.AllowDirMissing = true
		return c, nil
	} else if err != nil {
		return nil, Errors{readError(c.AllowDir, err)}
	}
	lists, skipped, err := loadAllowDir(w, c.AllowDir)
	if err != nil {
		return nil, err
	}
	if err := resolveIncludes(lists, c.ListsDir, w.readTrusted); err != nil {
		return nil, err
	}
	c.Allowlists, c.Skipped = lists, skipped
	return c, nil
}

// parseMain parses the main file and, when it names no resolvers, takes
// them from resolv.conf.
func parseMain(abs string, data []byte, t Trust) (*Config, error) {
	c, err := ParseMain(abs, data)
	if err != nil {
		return nil, err
	}
	if len(c.Resolvers) == 0 {
		rs, err := systemResolvers(ResolvConf, t)
		if err != nil {
			return nil, Errors{{Pos: Pos{File: abs}, Msg: fmt.Sprintf("no resolvers configured and %v", err), cause: err}}
		}
		c.Resolvers = rs
	}
	return c, nil
}

// readError describes a file that could not be read, or is not trusted.
func readError(file string, err error) *Error {
	if te, ok := trustError(err); ok {
		return te
	}
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Err != nil {
		if pe.Path != file {
			err = fmt.Errorf("%s: %w", pe.Path, pe.Err)
		} else {
			err = pe.Err
		}
	}
	return &Error{Pos: Pos{File: file}, Msg: fmt.Sprintf("cannot read: %v", err), cause: err}
}

func systemResolvers(path string, t Trust) ([]netip.AddrPort, error) {
	// The resolvers are destinations of every dns: resolvers user and decide
	// what every name opens: resolv.conf passes the trust rules too, with
	// systemd-resolved's own user trusted for its stub file.
	t.Owners = append(append([]uint32(nil), t.owners()...), resolvedOwners()...)
	data, err := t.ReadFile(path)
	if err != nil {
		if _, ok := trustError(err); ok {
			return nil, fmt.Errorf("the resolvers of %s: %v (or set resolvers: in egressd.yaml)", path, err)
		}
		return nil, fmt.Errorf("cannot read %s: %w", path, err)
	}
	cc, err := dns.ClientConfigFromReader(bytes.NewReader(data))
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

// AllowlistName returns the allowlist a directory entry name defines:
// NAME.yaml or NAME.yml. Hidden files (editor swap files, Kubernetes' ..data
// links) are not allowlists.
func AllowlistName(name string) (string, bool) {
	if strings.HasPrefix(name, ".") {
		return "", false
	}
	for _, ext := range []string{".yaml", ".yml"} {
		if base, ok := strings.CutSuffix(name, ext); ok && base != "" {
			return base, true
		}
	}
	return "", false
}

// IsAllowlistFile reports whether a directory entry name is an allowlist file.
func IsAllowlistFile(name string) bool {
	_, ok := AllowlistName(name)
	return ok
}

// LoadAllowDir parses every allowlist in dir, checking each path as Trust{}
// says. A missing directory holds no allowlists.
func LoadAllowDir(dir string) ([]*Allowlist, error) {
	lists, _, err := loadAllowDir(Trust{}.walker(), dir)
	return lists, err
}

// loadAllowDir returns the allowlists and the files it skipped (not hidden,
// not NAME.yaml or NAME.yml).
func loadAllowDir(w *walker, dir string) ([]*Allowlist, []string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, Errors{{Pos: Pos{File: dir}, Msg: fmt.Sprintf("cannot list allow directory: %v", errors.Unwrap(err)), cause: err}}
	}
	var skipped []string
	byName := map[string]string{}
	// Read (and check) each file in turn, then parse them in parallel:
	// parsing is a pure function of the bytes read, and most of the time
	// of a large configuration. The errors keep the files' order.
	type slot struct {
		file, name string
		data       []byte
		parse      bool // read: to be parsed
		a          *Allowlist
		errs       Errors
	}
	var slots []slot
	for _, ent := range ents {
		file := filepath.Join(dir, ent.Name())
		name, ok := AllowlistName(ent.Name())
		if !ok {
			if !strings.HasPrefix(ent.Name(), ".") {
				skipped = append(skipped, file)
			}
			continue
		}
		// The listing's type says a plain file is no directory; a
		// symlink is followed to see.
		if t := ent.Type(); t.IsDir() || t&fs.ModeSymlink != 0 {
			if st, err := os.Stat(file); err == nil && st.IsDir() {
				skipped = append(skipped, file)
				continue
			}
		}
		if prev, ok := byName[name]; ok {
			slots = append(slots, slot{errs: Errors{&Error{Pos: Pos{File: file}, Msg: fmt.Sprintf("allowlist %q is also defined by %s; keep one of the two files", name, prev),
				Fix: "remove or rename one of " + prev + " and " + file}}})
			continue
		}
		byName[name] = file
		data, err := w.readTrusted(file) // follows symlinks, as ConfigMap mounts need, checking each
		if err != nil {
			e := readError(file, err)
			if _, lerr := os.Lstat(file); errors.Is(err, fs.ErrNotExist) && errors.Is(lerr, fs.ErrNotExist) {
				// Listed a moment ago and gone now: being replaced (a removal
				// is listed no more at the next read). A dangling symlink is
				// still there: rejected, as before.
				e.cause = errVanished
			}
			slots = append(slots, slot{errs: Errors{e}})
			continue
		}
		slots = append(slots, slot{file: file, name: name, data: data, parse: true})
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(slots)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(slots); i = int(next.Add(1) - 1) {
				s := &slots[i]
				if !s.parse {
					continue
				}
				a, err := ParseAllowlist(s.file, s.name, s.data)
				if err != nil {
					s.errs = asErrors(s.file, err)
				}
				s.a = a
			}
		}()
	}
	wg.Wait()
	var errs Errors
	lists := make([]*Allowlist, 0, len(slots))
	for _, s := range slots {
		if len(s.errs) > 0 {
			errs = append(errs, s.errs...)
			continue
		}
		if s.a != nil {
			lists = append(lists, s.a)
		}
	}
	sort.Slice(lists, func(i, j int) bool { return lists[i].Name < lists[j].Name })
	errs = append(errs, duplicateUsers(lists)...)
	if len(errs) > 0 {
		return nil, nil, errs
	}
	return lists, skipped, nil
}

func duplicateUsers(lists []*Allowlist) Errors {
	var errs Errors
	first := map[string]*Allowlist{}
	units := map[string]*Allowlist{}
	for _, a := range lists {
		if a.Unit != "" {
			if prev, ok := units[a.Unit]; ok {
				errs = append(errs, &Error{Pos: a.UnitPos, Msg: fmt.Sprintf("unit %q already has an allowlist in %s (line %d); put all of a unit's destinations in one file", a.Unit, prev.File, prev.UnitPos.Line)})
			}
			units[a.Unit] = a
			continue
		}
		if prev, ok := first[a.User]; ok {
			errs = append(errs, &Error{Pos: a.UserPos, Msg: fmt.Sprintf("user %q already has an allowlist in %s (line %d); put all of a user's destinations in one file", a.User, prev.File, prev.UserPos.Line)})
			continue
		}
		first[a.User] = a
	}
	return errs
}

// resolvedOwners are the uids of the system users that own a generated
// resolv.conf (systemd-resolved's stub file), when they exist.
func resolvedOwners() []uint32 {
	var out []uint32
	for _, name := range []string{"systemd-resolve"} {
		if u, err := user.Lookup(name); err == nil {
			if n, err := strconv.ParseUint(u.Uid, 10, 32); err == nil {
				out = append(out, uint32(n))
			}
		}
	}
	return out
}

// asErrors is err as positioned errors: its own, or one naming the file.
func asErrors(file string, err error) Errors {
	var ce Errors
	if errors.As(err, &ce) {
		return ce
	}
	return Errors{{Pos: Pos{File: file}, Msg: err.Error()}}
}
