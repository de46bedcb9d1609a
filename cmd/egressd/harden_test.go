package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/harden"
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

// harden --audit's listen: rules for a unit run by a protected user: the
// unit allowlist's and the user's both hold its processes. A unit allowlist
// without listen: picked over the user's with one made the audit say the
// service "may listen on any port" while the user's rule was enforced.
func TestListenRulesUnitAndUser(t *testing.T) {
	tcp := func(p uint16) []config.ListenPort { return []config.ListenPort{{Proto: "tcp", From: p, To: p}} }
	lookup := func(name string) (uint32, error) {
		if name == "billing" {
			return 64101, nil
		}
		return 0, errors.New("no such user")
	}
	cfg := &config.Config{Allowlists: []*config.Allowlist{
		{Name: "billing", User: "billing", Listen: tcp(8080)},
		{Name: "other", User: "64102", Listen: tcp(7000)},
		{Name: "shop", Unit: "shop.service"},
		{Name: "vault", Unit: "vault.service", Listen: tcp(8095)},
	}}
	str := func(rs []harden.ListenRule) string {
		var s []string
		for _, r := range rs {
			s = append(s, fmt.Sprintf("%s/%v%v", r.Allowlist, r.Unit, r.Listen))
		}
		return strings.Join(s, " ")
	}
	for _, c := range []struct{ unit, user, want string }{
		{"shop.service", "billing", "billing/false[tcp:8080]"}, // the unit's allowlist has no listen:
		{"vault.service", "billing", "vault/true[tcp:8095] billing/false[tcp:8080]"},
		{"vault.service", "nobody", "vault/true[tcp:8095]"},
		{"web.service", "64102", "other/false[tcp:7000]"}, // a user named by uid
		{"web.service", "", ""},
	} {
		if got := str(listenRules(cfg, c.unit, c.user, lookup)); got != c.want {
			t.Errorf("listenRules(%s, %s) = %q, want %q", c.unit, c.user, got, c.want)
		}
	}
}
