package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// What Validate refuses before judging any content: --as with several
// candidates, a candidate it cannot read (named), a shared list the daemon
// would not read by its name; a candidate that goes nowhere the daemon
// reads is checked by its keys, and said so.
func TestValidateRefusalsAndNotes(t *testing.T) {
	base := map[string]string{
		"etc/egressd.yaml":         "resolvers: [\"192.0.2.53\"]\n",
		"etc/allow.d/billing.yaml": "user: billing\nallow: [api.example.com:443]\n",
	}
	etc, tmp := installed(t, base)
	src := write(t, filepath.Join(tmp, "source"), "allow: [deb.debian.org:443]\n")
	o := ValidateOptions{Trust: Trust{Above: filepath.Dir(etc)}, ConfigPath: filepath.Join(etc, "egressd.yaml")}

	two := o
	two.As = filepath.Join(etc, "lists/os.yaml")
	if _, err := Validate([]string{src, src}, two); err == nil || !strings.Contains(err.Error(), "--as names where one candidate goes; 2 were given") {
		t.Errorf("--as with two candidates: %v", err)
	}
	missing := filepath.Join(tmp, "missing.yaml")
	if _, err := Validate([]string{missing}, o); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("an unreadable candidate: %v", err)
	}
	bad := o
	bad.As = filepath.Join(etc, "lists", "os updates.yaml")
	if _, err := Validate([]string{src}, bad); err == nil || !strings.Contains(err.Error(), "shared lists are named NAME.yaml") {
		t.Errorf("a list name the daemon would not read: %v", err)
	}
	elsewhere := o
	if err := os.Mkdir(filepath.Join(etc, "other"), 0o755); err != nil {
		t.Fatal(err)
	}
	elsewhere.As = filepath.Join(etc, "other", "elsewhere.yaml")
	vs, err := Validate([]string{src}, elsewhere)
	if err != nil {
		t.Fatal(err)
	}
	if vs[0].Kind != KindList || !strings.Contains(strings.Join(vs[0].Notes, "\n"), "checked by its keys") {
		t.Errorf("a candidate that goes elsewhere: %+v", vs[0])
	}
}
