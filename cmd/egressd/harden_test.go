package main

import (
	"bytes"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egressd/egressd/config"
)

// An allowlist may name its user by uid; harden --allowlist takes it from
// there (issue 25: it refused "--user 64101", a flag never given).
func TestHardenAllowlistNumericUser(t *testing.T) {
	dir, err := config.TrustedTempDir("egressd-harden-")
	if err != nil {
		t.Skipf("a trusted directory under /run: %v", err)
	}
	defer os.RemoveAll(dir)
	if err := os.MkdirAll(filepath.Join(dir, "allow.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	uid := "64101"
	if _, err := user.LookupId(uid); err == nil {
		t.Skipf("uid %s has a name here", uid)
	}
	main := filepath.Join(dir, "egressd.yaml")
	for p, body := range map[string]string{main: "", filepath.Join(dir, "allow.d/web.yaml"): "user: " + uid + "\nallow: [192.0.2.1:443]\n"} {
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var out, errb bytes.Buffer
	code := cmdHarden([]string{"--allowlist", "web", "--config", main, "--systemd-version", "252"}, &out, &errb)
	if code != 0 || !strings.Contains(out.String(), "\nUser="+uid+"\n") || !strings.Contains(out.String(), " wait --user "+uid+" ") {
		t.Errorf("harden --allowlist web (user: %s): exit %d\n%s\n%s", uid, code, errb.String(), out.String())
	}
	// The control: --user naming the same uid agrees; another does not.
	if code := cmdHarden([]string{"--allowlist", "web", "--user", uid, "--config", main, "--systemd-version", "252"}, &out, &errb); code != 0 {
		t.Errorf("--user %s with allowlist user %s: exit %d\n%s", uid, uid, code, errb.String())
	}
	errb.Reset()
	if code := cmdHarden([]string{"--allowlist", "web", "--user", "64102", "--config", main, "--systemd-version", "252"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "restricts user "+uid) {
		t.Errorf("--user 64102 with allowlist user %s: exit %d\n%s", uid, code, errb.String())
	}
}
