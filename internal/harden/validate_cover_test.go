package harden

import (
	"strings"
	"testing"
	"time"
)

// Options that would write a broken or misleading drop-in are refused,
// each saying which option and why.
func TestValidateMessages(t *testing.T) {
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{GateUnit: "web"}, "unit: "},
		{Options{GateUnit: "web.service", OwnStartPre: []string{"/bin/true\nExecStart=/bin/sh"}}, "spans lines"},
		{Options{User: "a", Group: "bad group"}, `--group "bad group" is not a valid group name`},
		{Options{User: "a", Egressd: "egressd"}, `--egressd "egressd": want an absolute path without spaces`},
		{Options{User: "a", GateTimeout: -time.Second}, "--gate-timeout must not be negative"},
		{Options{User: "a", NProc: -1}, "--nproc must be positive"},
		{Options{User: "a", Writable: []string{"/usr/local/bin"}}, "would make system code or configuration writable"},
	} {
		err := c.o.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %v, want %q", c.o, err, c.want)
		}
	}
}
