package systemd

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// A unit whose ExecStartPre= tries to connect out (to the denied
// destination), then runs the probe agent on port as User=user (or as a
// dynamic user when user is "").
func unitService(port int, user string) string {
	who := "DynamicUser=yes\n"
	if user != "" {
		who = "User=" + user + "\n"
	}
	return fmt.Sprintf("[Unit]\nDescription=unit-restricted test service\n\n[Service]\n%sExecStartPre=/usr/local/bin/egressd-probe connect %s\nExecStart=/usr/local/bin/egressd-probe agent 127.0.0.1:%d\n\n[Install]\nWantedBy=multi-user.target\n", who, deniedDst, port)
}

func unitAllowlist(unit string) string {
	return fmt.Sprintf("unit: %s\ndns: none\nallow: [%s]\n", unit, allowedDst)
}

// preAttempts is what the unit's ExecStartPre= probe printed, one line per
// start: "ok" when it reached the denied destination.
func (c *container) preAttempts(unit string) []string {
	log := c.Must("journalctl", "--no-pager", "-o", "cat", "-u", unit)
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if l == "ok" || strings.HasPrefix(l, "error") {
			out = append(out, l)
		}
	}
	return out
}

// TestSystemdUnits: unit allowlists on systemd 252 (no NFTSet=), with the
// start gate `egressd harden --allowlist` writes. Two units share a user,
// one restricted; a DynamicUser= unit; each restricted unit's ExecStartPre=
// connects out at start and must be refused; a restart gives the unit a new
// cgroup, restricted again from its first packet.
func TestSystemdUnits(t *testing.T) {
	require(t)
	c := newContainer(t, binds(t)...)
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
	c.Must("systemctl", "enable", "--now", "targets.service")
	// After the boot: the first boot enables every unit (Debian's presets),
	// and these must not run before egressd and their drop-ins exist.
	c.Write("/etc/systemd/system/shop.service", unitService(8090, "www-data"), 0o644)
	c.Write("/etc/systemd/system/neighbour.service", unitService(8091, "www-data"), 0o644)
	c.Write("/etc/systemd/system/dyn.service", unitService(8092, ""), 0o644)
	c.Must("install", "-m", "0644", "/src/egressd.service", "/etc/systemd/system/egressd.service")
	c.Must("install", "-d", "-m", "0755", "/etc/egressd", "/etc/egressd/allow.d")
	c.Must("install", "-m", "0644", "/src/egressd.yaml", "/etc/egressd/egressd.yaml")
	c.Write("/etc/egressd/allow.d/shop.yaml", unitAllowlist("shop.service"), 0o644)
	c.Write("/etc/egressd/allow.d/dyn.yaml", unitAllowlist("dyn.service"), 0o644)
	c.Must("systemctl", "daemon-reload")
	c.Must("systemctl", "enable", "--now", "egressd.service")

	run("harden writes the gate first", func(t *testing.T) {
		dropIn, _ := c.harden(t, "shop.service", "--allowlist", "shop", "--user", "www-data", "--listen", "tcp:8090")
		want := "ExecStartPre=\n# "
		i := strings.Index(dropIn, "ExecStartPre=\n")
		j := strings.Index(dropIn, "ExecStartPre=+/usr/local/bin/egressd wait --unit shop.service")
		k := strings.Index(dropIn, "ExecStartPre=/usr/local/bin/egressd-probe connect")
		if i < 0 || j < i || k < j || !strings.Contains(dropIn, want) {
			t.Fatalf("drop-in: reset %d, gate %d, own line %d:\n%s", i, j, k, dropIn)
		}
		if !strings.Contains(dropIn, "\nUser=www-data\n") {
			t.Errorf("drop-in without User=www-data:\n%s", dropIn)
		}
		dyn, _ := c.harden(t, "dyn.service", "--allowlist", "dyn", "--listen", "tcp:8092")
		if strings.Contains(dyn, "\nUser=") {
			t.Errorf("the DynamicUser= unit got a User= line:\n%s", dyn)
		}
		c.Must("systemctl", "daemon-reload")
	})
	if t.Failed() {
		return
	}
	run("restricted units, unrestricted neighbour of the same user", func(t *testing.T) {
		for _, u := range []string{"shop.service", "neighbour.service", "dyn.service"} {
			if out, err := c.Run("systemctl", "start", u); err != nil {
				log, _ := c.Run("journalctl", "--no-pager", "-o", "cat", "-u", u)
				t.Fatalf("start %s: %v\n%s\n%s", u, err, out, log)
			}
		}
		c.restricted(t, 8090, "shop (www-data, unit allowlist)")
		c.restricted(t, 8092, "dyn (DynamicUser=)")
		eventually(t, "neighbour's agent", func() (bool, string) {
			got := c.ask(8091, "pid", "-")
			return !strings.HasPrefix(got, "error"), got
		})
		if got := c.ask(8091, "connect", deniedDst); got != "ok" {
			t.Errorf("neighbour.service (www-data, no allowlist) cannot reach %s: %s", deniedDst, got)
		}
		if got := c.preAttempts("neighbour.service"); len(got) != 1 || got[0] != "ok" {
			t.Errorf("neighbour's ExecStartPre= (the control): %v", got)
		}
		for _, u := range []string{"shop.service", "dyn.service"} {
			if got := c.preAttempts(u); len(got) != 1 || !strings.Contains(got[0], "connection refused") {
				t.Errorf("%s's ExecStartPre= reaching %s: %v, want refused", u, deniedDst, got)
			}
		}
		if out, err := c.Run("egressd", "check"); err != nil || !strings.Contains(out, "shop.service") {
			t.Errorf("egressd check: %v\n%s", err, out)
		}
	})
	run("restart", func(t *testing.T) {
		for i := 0; i < 3; i++ {
			c.Must("systemctl", "restart", "shop.service")
			c.restricted(t, 8090, fmt.Sprintf("shop after restart %d", i+1))
		}
		got := c.preAttempts("shop.service")
		for _, g := range got {
			if !strings.Contains(g, "connection refused") {
				t.Errorf("an ExecStartPre= of shop reached %s: %v", deniedDst, got)
			}
		}
		if len(got) != 4 {
			t.Errorf("%d ExecStartPre= attempts, want 4: %v", len(got), got)
		}
		c.Must("systemctl", "restart", "dyn.service")
		c.restricted(t, 8092, "dyn after restart")
	})
	// The gate runs first: while egressd cannot map the new cgroup (paused
	// here, so the window is seconds instead of at most 100 ms), nothing of
	// the unit runs, its own ExecStartPre= included.
	run("restart while egressd is paused", func(t *testing.T) {
		before := len(c.preAttempts("shop.service"))
		c.Must("systemctl", "kill", "--signal=SIGSTOP", "egressd.service")
		c.Must("systemctl", "restart", "--no-block", "shop.service")
		eventually(t, "shop in its start gate", func() (bool, string) {
			sub := c.Show("shop.service", "SubState")
			return sub == "start-pre", sub
		})
		time.Sleep(time.Second)
		got := c.preAttempts("shop.service")
		c.Must("systemctl", "kill", "--signal=SIGCONT", "egressd.service")
		if len(got) != before {
			t.Errorf("shop's ExecStartPre= ran before the gate let it: %v", got[before:])
		}
		eventually(t, "shop started", func() (bool, string) {
			st := c.Show("shop.service", "ActiveState")
			return st == "active", st
		})
		c.restricted(t, 8090, "shop after a restart held by its gate")
		if got := c.preAttempts("shop.service"); len(got) != before+1 || !strings.Contains(got[before], "connection refused") {
			t.Errorf("shop's ExecStartPre= after the gate: %v", got[before:])
		}
	})
	run("egressd restarts; the units stay restricted", func(t *testing.T) {
		c.Must("systemctl", "restart", "egressd.service")
		c.restricted(t, 8090, "shop after egressd's restart")
		c.restricted(t, 8092, "dyn after egressd's restart")
	})
}
