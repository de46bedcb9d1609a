package config

import (
	"path/filepath"
)

// LoadSnapshot loads a configuration egressd saved as its last good one:
// the main file at path, with the allowlists of allowDir and the shared
// lists of listsDir whatever the file's allow_dir and lists_dir say (the
// saved copies, not the live directories). The copies pass the same trust
// rules as the originals: they are egressd's own files.
func LoadSnapshot(path, allowDir, listsDir string, t Trust) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	w := t.walker()
	data, err := w.readTrusted(abs)
	if err != nil {
		return nil, Errors{readError(abs, err)}
	}
	c, err := parseMain(abs, data, t)
	if err != nil {
		return nil, err
	}
	c.AllowDir, c.ListsDir = allowDir, listsDir
	lists, _, err := loadAllowDir(w, allowDir)
	if err != nil {
		return nil, err
	}
	if err := resolveIncludes(lists, listsDir, w.readTrusted); err != nil {
		return nil, err
	}
	c.Allowlists = lists
	return c, nil
}
