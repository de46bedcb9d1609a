// Package lastgood keeps a copy of the last configuration that took effect
// (under systemd's StateDirectory=), so that a daemon starting on invalid
// files enforces that instead of nothing: one typo must not leave every
// protected service of the host down at boot.
package lastgood

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/egressd/egressd/config"
)

// Store keeps snapshots in Dir: Dir/snap-*/{egressd.yaml,allow.d/*,lists/*},
// and the symlink Dir/current names the last good one. A snapshot is
// complete before current points to it (a rename), so a crash leaves the
// previous one in force.
type Store struct {
	Dir   string
	Trust config.Trust // the trust rules the copies are loaded under (tests: Above)
}

const mainName = "egressd.yaml"

// Owns reports whether a file belongs to a snapshot (a configuration
// loaded from the store is not saved again).
func (s *Store) Owns(file string) bool {
	rel, err := filepath.Rel(s.Dir, file)
	return err == nil && !strings.HasPrefix(rel, "..")
}

// Save copies the files of cfg into a new snapshot and makes it current.
// The copies are loaded back before they count: a file edited since cfg
// was loaded must not become the "last good" one unchecked.
func (s *Store) Save(cfg *config.Config) error {
	if s.Owns(cfg.File) {
		return nil
	}
	tmp, err := os.MkdirTemp(s.Dir, "snap-")
	if err != nil {
		return fmt.Errorf("save the last good configuration: %w", err)
	}
	keep := false
	defer func() {
		if !keep {
			os.RemoveAll(tmp) //nolint:errcheck
		}
	}()
	main, err := os.ReadFile(cfg.File)
	if errors.Is(err, os.ErrNotExist) {
		main, err = nil, nil // no main file: every key defaulted
	}
	if err != nil {
		return fmt.Errorf("save the last good configuration: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, mainName), main, 0o600); err != nil {
		return fmt.Errorf("save the last good configuration: %w", err)
	}
	if err := os.Mkdir(filepath.Join(tmp, "allow.d"), 0o700); err != nil {
		return fmt.Errorf("save the last good configuration: %w", err)
	}
	for _, a := range cfg.Allowlists {
		b, err := os.ReadFile(a.File)
		if err != nil {
			return fmt.Errorf("save the last good configuration: %w", err)
		}
		if err := os.WriteFile(filepath.Join(tmp, "allow.d", filepath.Base(a.File)), b, 0o600); err != nil {
			return fmt.Errorf("save the last good configuration: %w", err)
		}
	}
	if err := os.Mkdir(filepath.Join(tmp, "lists"), 0o700); err != nil {
		return fmt.Errorf("save the last good configuration: %w", err)
	}
	copied := map[string]bool{}
	for _, a := range cfg.Allowlists {
		for _, inc := range a.Includes {
			if copied[inc.Name] {
				continue
			}
			copied[inc.Name] = true
			b, err := os.ReadFile(filepath.Join(cfg.ListsDir, inc.Name+".yaml"))
			if err != nil {
				return fmt.Errorf("save the last good configuration: %w", err)
			}
			if err := os.WriteFile(filepath.Join(tmp, "lists", inc.Name+".yaml"), b, 0o600); err != nil {
				return fmt.Errorf("save the last good configuration: %w", err)
			}
		}
	}
	got, err := s.load(tmp)
	if err != nil {
		return fmt.Errorf("save the last good configuration: the files changed since they were loaded: %w", err)
	}
	if len(got.Allowlists) != len(cfg.Allowlists) {
		return fmt.Errorf("save the last good configuration: the files changed since they were loaded")
	}
	link := filepath.Join(s.Dir, ".current-new")
	os.Remove(link) //nolint:errcheck
	if err := os.Symlink(filepath.Base(tmp), link); err != nil {
		return fmt.Errorf("save the last good configuration: %w", err)
	}
	if err := os.Rename(link, filepath.Join(s.Dir, "current")); err != nil {
		return fmt.Errorf("save the last good configuration: %w", err)
	}
	keep = true
	old, _ := filepath.Glob(filepath.Join(s.Dir, "snap-*"))
	for _, o := range old {
		if o != tmp {
			os.RemoveAll(o) //nolint:errcheck
		}
	}
	return nil
}

// Load returns the last good configuration; an error when there is none.
func (s *Store) Load() (*config.Config, error) {
	cur := filepath.Join(s.Dir, "current")
	if _, err := os.Stat(cur); err != nil {
		return nil, fmt.Errorf("no last good configuration in %s", s.Dir)
	}
	// Through the link, not resolved: Dir itself may be a symlink
	// (DynamicUser= makes /var/lib/egressd one), and Owns compares with Dir.
	return s.load(cur)
}

func (s *Store) load(dir string) (*config.Config, error) {
	return config.LoadSnapshot(filepath.Join(dir, mainName), filepath.Join(dir, "allow.d"), filepath.Join(dir, "lists"), s.Trust)
}
