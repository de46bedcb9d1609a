//go:build linux

package config

// Red-team findings (second round) on the trust rules: each test FAILS
// while the hole is open. go test -tags redteam ./config -run TestRedteam -v

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A main file without resolvers: takes its resolvers from /etc/resolv.conf
// (ResolvConf). They are configuration like any allowlist: a `dns:
// resolvers` allowlist may send to them (port 53, UDP and TCP), and their
// answers decide which addresses every allowlisted name opens. Yet the file
// is read with dns.ClientConfigFromFile, outside the trust walk: whoever can
// write it (here: a world-writable directory; on a real host the owner of
// the file, e.g. a service user that manages it) points every protected
// user's DNS, and so its egress, at a server of their choosing.
func TestRedteamResolvConfOutsideTrustWalk(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "allow.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "shared"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "shared"), 0o777); err != nil { // anyone may replace what is in it
		t.Fatal(err)
	}
	resolv := filepath.Join(dir, "shared/resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 203.0.113.66\n"), 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chmod(resolv, 0o666) //nolint:errcheck
	main := filepath.Join(dir, "egressd.yaml")
	os.WriteFile(main, []byte("min_ttl: 5s\n"), 0o644)                                                              //nolint:errcheck
	os.WriteFile(filepath.Join(dir, "allow.d/billing.yaml"), []byte("user: 1001\nallow: [b.example:443]\n"), 0o644) //nolint:errcheck
	old := ResolvConf
	ResolvConf = resolv
	t.Cleanup(func() { ResolvConf = old })

	// Control: in a directory only root may write, the file is used.
	os.Chmod(filepath.Join(dir, "shared"), 0o755) //nolint:errcheck
	os.Chmod(resolv, 0o644)                       //nolint:errcheck
	if c, err := LoadTrusted(main, true, Trust{Above: dir}); err != nil || len(c.Resolvers) != 1 || c.Resolvers[0].String() != "203.0.113.66:53" {
		t.Fatalf("trusted resolv.conf: %v, %v", c, err)
	}
	os.Chmod(filepath.Join(dir, "shared"), 0o777) //nolint:errcheck
	os.Chmod(resolv, 0o666)                       //nolint:errcheck
	c, err := LoadTrusted(main, true, Trust{Above: dir})
	if err != nil && !strings.Contains(err.Error(), resolv) {
		t.Fatalf("load: %v", err)
	}
	if err == nil {
		got := ""
		for _, r := range c.Resolvers {
			got += r.String() + " "
		}
		t.Errorf("resolvers %staken from %s, which every user may rewrite (mode 0666 in a 0777 directory); want a refusal naming it, as for allowlists", got, resolv)
	}
	var ce Errors
	if err != nil && !errors.As(err, &ce) {
		t.Errorf("not a configuration error: %v", err)
	}
}

// Blocked (a guard): an ACL too large for aclWriter's 1024-byte buffer
// (more than 127 entries) makes Lgetxattr fail with ERANGE, and checkOne
// then skips the ACL check altogether. It still cannot open the file: an
// entry's write is effective only through the mask, and the kernel mirrors
// the mask in the group mode bits, which the mode check refuses. The test
// keeps that true.
func TestRedteamLargeACLStillRefused(t *testing.T) {
	dir, main, file := billingFixture(t)
	ents := [][3]uint32{{aclUserObj, 6, 0}}
	for i := uint32(0); i < 140; i++ {
		ents = append(ents, [3]uint32{aclUser, 4, 70000 + i})
	}
	ents = append(ents, [3]uint32{aclUser, 6, 61001}, [3]uint32{aclGroupObj, 4, 0}, [3]uint32{aclMask, 6, 0}, [3]uint32{aclOther, 4, 0})
	b := acl(ents...)
	if len(b) <= 1024 {
		t.Fatalf("ACL of %d bytes fits the buffer", len(b))
	}
	if err := unixSetxattr(file, b); err != nil {
		t.Skipf("no large POSIX ACLs here: %v", err)
	}
	if _, err := xattrACL(file)(); err == nil {
		t.Fatalf("the ACL was read whole: the premise (ERANGE) does not hold")
	}
	_, err := LoadTrusted(main, true, Trust{Above: dir})
	if err == nil || !strings.Contains(err.Error(), "refused: "+file) {
		t.Fatalf("a %d-entry ACL granting uid 61001 write: error %v", len(ents), err)
	}
	t.Logf("refused: %v", err)
}
