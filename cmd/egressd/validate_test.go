package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// egressd validate as a configuration management hook: exit 0 and 2, the
// errors on stderr with file:line:col. No root needed.
func TestValidateExitCodes(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "source")
	bad := filepath.Join(dir, "bad")
	os.WriteFile(good, []byte("user: billing\nallow: [api.example.com:443]\ntests:\n  allow: [api.example.com:443]\n"), 0o644) //nolint:errcheck
	os.WriteFile(bad, []byte("user: billing\nallow:\n  - api.example.com\n"), 0o644)                                           //nolint:errcheck
	cases := []struct {
		args        []string
		code        int
		out, errOut string
	}{
		{[]string{"validate", good}, 0, good + ": valid allowlist candidate (1 test passed)", ""},
		{[]string{"validate", "--as", filepath.Join(dir, "billing.yaml"), good}, 2, "", "writable by every user"},
		{[]string{"validate", bad}, 2, "", bad + ":3:5: allow: \"api.example.com\": missing :PORT"},
		{[]string{"validate", good, bad}, 2, "", "invalid; nothing was changed"},
		{[]string{"validate", filepath.Join(dir, "missing")}, 2, "", "cannot read"},
		{[]string{"validate"}, 2, "", "usage: egressd validate"},
	}
	// The --as target directory is one every user may write: refused.
	os.Chmod(dir, 0o777) //nolint:errcheck
	for _, tc := range cases {
		var out, errOut bytes.Buffer
		code := run(tc.args, &out, &errOut)
		if code != tc.code || !strings.Contains(out.String(), tc.out) || !strings.Contains(errOut.String(), tc.errOut) {
			t.Errorf("egressd %s = %d\nstdout: %s\nstderr: %s\nwant %d, %q, %q", strings.Join(tc.args, " "), code, out.String(), errOut.String(), tc.code, tc.out, tc.errOut)
		}
	}
}
