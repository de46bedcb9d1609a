package config

import (
	"fmt"
	"regexp"
	"strings"
)

// unitRE is a systemd unit name egressd restricts: a service or a slice
// (systemd.unit(5): letters, digits, ":-_.\" and "@" between a template and
// its instance; at most 255 characters).
var unitRE = regexp.MustCompile(`^[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]+)?\.(service|slice)$`)

// ValidUnit checks a unit: value. Units that hold egressd itself, or the
// whole system, cannot be restricted: egressd would cut off its own DNS.
func ValidUnit(s string) error {
	switch {
	case len(s) > 255:
		return fmt.Errorf("%q is longer than 255 characters", s)
	case strings.Contains(s, "@.") || strings.HasSuffix(s, "@"):
		return fmt.Errorf("%q is a template: name an instance (NAME@INSTANCE.service)", s)
	case !unitRE.MatchString(s):
		return fmt.Errorf("%q is not a service or slice unit name (NAME.service or NAME.slice)", s)
	}
	switch s {
	case "-.slice", "system.slice", "egressd.service", "init.scope":
		return fmt.Errorf("%s cannot be restricted: egressd itself and the system run in it", s)
	}
	return nil
}

// IsUnit reports whether the allowlist restricts a unit rather than a user.
func (a *Allowlist) IsUnit() bool { return a.Unit != "" }
