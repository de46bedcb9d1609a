package systemd

import (
	"strings"
	"testing"
	"time"
)

// trixie is Debian 13: systemd 257, which has NFTSet= (systemd ≥ 255).
const trixie = "trixie"

// TestRootFSTrixie builds the cached Debian 13 root file system if it is
// missing (like TestRootFS, outside the other tests' deadlines).
func TestRootFSTrixie(t *testing.T) {
	require(t)
	t.Logf("root file system: %s", rootfsFor(t, trixie))
}

// TestSystemdNFTSet: unit allowlists on systemd 257 (Debian 13). harden
// adds NFTSet=, with which systemd puts a starting unit's new cgroup in
// egressd's NFTSet= table before the unit's first process: even without
// the start gate, and with egressd unable to follow (paused), the unit's
// ExecStartPre= reaches nothing; once egressd maps the cgroup the unit's
// allowlist applies. The control, a unit without NFTSet= and without the
// gate, shows the window NFTSet= closes.
func TestSystemdNFTSet(t *testing.T) {
	require(t)
	c := newContainerFrom(t, rootfsFor(t, trixie), binds(t)...)
	run := func(name string, f func(t *testing.T)) bool {
		return t.Run(name, func(t *testing.T) {
			parent := c.T
			c.T = t
			defer func() { c.T = parent }()
			f(t)
		})
	}
	c.Write("/etc/systemd/system/targets.service",
		"[Unit]\nDescription=test destinations (root)\nBefore=egressd.service\n\n[Service]\nExecStart=/usr/local/bin/egressd-probe serve "+
			allowedDst+" "+deniedDst+"\n\n[Install]\nWantedBy=multi-user.target\n", 0o644)
	c.boot()
	if v := c.Must("systemctl", "--version"); !strings.HasPrefix(v, "systemd 25") && !strings.HasPrefix(v, "systemd 26") {
		t.Fatalf("not systemd ≥ 255:\n%s", v)
	}
	c.Must("systemctl", "enable", "--now", "targets.service")
	c.Write("/etc/systemd/system/shop.service", unitService(8090, "www-data"), 0o644)
	c.Write("/etc/systemd/system/bare.service", unitService(8093, "www-data"), 0o644)
	c.Write("/etc/systemd/system/ctl.service", unitService(8094, "www-data"), 0o644)
	c.Must("install", "-m", "0644", "/src/egressd.service", "/etc/systemd/system/egressd.service")
	c.Must("install", "-d", "-m", "0755", "/etc/egressd", "/etc/egressd/allow.d")
	c.Must("install", "-m", "0644", "/src/egressd.yaml", "/etc/egressd/egressd.yaml")
	for _, u := range []string{"shop", "bare", "ctl"} {
		c.Write("/etc/egressd/allow.d/"+u+".yaml", unitAllowlist(u+".service"), 0o644)
	}
	c.Must("systemctl", "daemon-reload")
	c.Must("systemctl", "enable", "--now", "egressd.service")

	run("harden on systemd 257", func(t *testing.T) {
		dropIn, _ := c.harden(t, "shop.service", "--allowlist", "shop", "--user", "www-data", "--listen", "tcp:8090")
		if !strings.Contains(dropIn, "\nNFTSet=cgroup:inet:egressd_units:units\n") || !strings.Contains(dropIn, "wait --unit shop.service") {
			t.Fatalf("drop-in for systemd 257:\n%s", dropIn)
		}
		// bare: NFTSet= alone, no gate; ctl: neither.
		c.Write("/etc/systemd/system/bare.service.d/nftset.conf", "[Service]\nNFTSet=cgroup:inet:egressd_units:units\n", 0o644)
		c.Must("systemctl", "daemon-reload")
		if out, err := c.Run("systemctl", "start", "shop.service"); err != nil {
			t.Fatalf("start shop: %v\n%s", err, out)
		}
		c.restricted(t, 8090, "shop (gate and NFTSet=)")
		if got := c.preAttempts("shop.service"); len(got) != 1 || !strings.Contains(got[0], "connection refused") {
			t.Errorf("shop's ExecStartPre=: %v", got)
		}
	})
	run("NFTSet= closes the window without a gate", func(t *testing.T) {
		c.Must("systemctl", "kill", "--signal=SIGSTOP", "egressd.service")
		c.Must("systemctl", "start", "bare.service", "ctl.service")
		time.Sleep(500 * time.Millisecond)
		bare, ctl := c.preAttempts("bare.service"), c.preAttempts("ctl.service")
		held := c.ask(8093, "connect", allowedDst) // announced, not mapped: nothing
		c.Must("systemctl", "kill", "--signal=SIGCONT", "egressd.service")
		if len(bare) != 1 || !strings.Contains(bare[0], "connection refused") {
			t.Errorf("bare (NFTSet=, no gate), egressd paused: its ExecStartPre= reaching %s: %v, want refused", deniedDst, bare)
		}
		if !strings.Contains(held, "connection refused") {
			t.Errorf("bare, egressd paused: its agent reached the allowed %s (%s): an announced cgroup must reach nothing until mapped", allowedDst, held)
		}
		if len(ctl) != 1 || ctl[0] != "ok" {
			t.Errorf("ctl (neither), egressd paused: %v; want it to reach %s (the window NFTSet= closes)", ctl, deniedDst)
		}
		c.restricted(t, 8093, "bare once egressd mapped it")
		c.restricted(t, 8094, "ctl once egressd mapped it")
	})
	run("rebuilds keep systemd's elements", func(t *testing.T) {
		c.Must("systemctl", "restart", "egressd.service") // a full rebuild of egressd's table
		if out := c.Must("nft", "list", "set", "inet", "egressd_units", "units"); !strings.Contains(out, "elements") {
			t.Errorf("the NFTSet= set lost systemd's elements:\n%s", out)
		}
		c.Must("systemctl", "restart", "bare.service")
		// No gate: until egressd maps the new cgroup (within 100 ms) bare
		// reaches nothing, then its allowlist.
		eventually(t, "bare's new cgroup mapped", func() (bool, string) {
			got := c.ask(8093, "connect", allowedDst)
			return got == "ok", got
		})
		c.restricted(t, 8093, "bare after restarts")
		if got := c.preAttempts("bare.service"); len(got) != 2 || !strings.Contains(got[1], "connection refused") {
			t.Errorf("bare's ExecStartPre= after its restart: %v", got)
		}
	})
}
