package systemd

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSystemdMetricsFlood: under the real unit (WatchdogSec=30s,
// LimitNOFILE=), a local user (nobody) keeps 9,000 idle connections open to
// the metrics port for 60 s, more than the unit's descriptor limit,
// reconnecting as they close. egressd holds few descriptors, systemd's
// watchdog never fires (no restart, the same main PID), nothing fails in
// its journal, and an allowlist edit made during the flood is in the kernel
// within 2 s.
func TestSystemdMetricsFlood(t *testing.T) {
	require(t)
	c := newContainer(t, binds(t)...)
	c.Write("/etc/systemd/system/targets.service",
		"[Unit]\nDescription=test destinations (root)\nBefore=egressd.service\n\n[Service]\nExecStart=/usr/local/bin/egressd-probe serve "+
			allowedDst+" "+deniedDst+"\n\n[Install]\nWantedBy=multi-user.target\n", 0o644)
	c.boot()
	c.Must("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "billing")
	// After boot: a unit with User= of a user that does not exist yet fails at boot.
	c.Write("/etc/systemd/system/billing.service", strings.Replace(serviceUnit(8080), "[Service]\n", "[Service]\nUser=billing\n", 1), 0o644)
	c.Must("systemctl", "enable", "--now", "targets.service")
	c.Must("install", "-m", "0644", "/src/egressd.service", "/src/egressd.socket", "/etc/systemd/system/")
	c.Must("install", "-d", "-m", "0755", "/etc/egressd", "/etc/egressd/allow.d")
	c.Write("/etc/egressd/egressd.yaml", "metrics_listen: 127.0.0.1:9464\n", 0o644)
	c.Write("/etc/egressd/allow.d/billing.yaml", allowlistFor("billing", deniedDst), 0o644)
	c.Must("systemctl", "daemon-reload")
	c.Must("systemctl", "enable", "--now", "egressd.service")
	c.Must("systemctl", "start", "billing.service")
	eventually(t, "billing's agent", func() (bool, string) {
		got := c.ask(8080, "connect", deniedDst)
		return got == "ok", got
	})
	// The control: the same edit, back and forth, without a flood.
	// enforced makes the edit and returns how long after the write the
	// kernel held it: the ts of the ruleset_applied event that followed
	// (one transaction; the container shares the host's clock), then
	// billing's connect is refused. (Asking billing in a loop would measure
	// nsenter, not egressd.)
	enforced := func(when string) time.Duration {
		t.Helper()
		edited := time.Now()
		c.Write("/etc/egressd/allow.d/billing.yaml", allowlistFor("billing"), 0o644)
		var at time.Time
		eventually(t, when+": ruleset_applied after the edit", func() (bool, string) {
			at = appliedAfter(c, edited)
			return !at.IsZero(), ""
		})
		took := at.Sub(edited)
		if took > 2*time.Second {
			t.Errorf("%s: the edit took %v to reach the kernel", when, took)
		}
		if got := c.ask(8080, "connect", deniedDst); !strings.Contains(got, "connection refused") {
			t.Errorf("%s: after the edit was applied billing still reaches %s: %s", when, deniedDst, got)
		}
		return took
	}
	t.Logf("without a flood, an edit was in the kernel %v after the write", enforced("without a flood").Round(time.Millisecond))
	c.Write("/etc/egressd/allow.d/billing.yaml", allowlistFor("billing", deniedDst), 0o644)
	eventually(t, "the edit back", func() (bool, string) {
		got := c.ask(8080, "connect", deniedDst)
		return got == "ok", got
	})
	pid, restarts := c.Show("egressd.service", "MainPID"), c.Show("egressd.service", "NRestarts")
	watchdog := c.Show("egressd.service", "WatchdogUSec")
	limit := c.Show("egressd.service", "LimitNOFILE")
	fds := func() int {
		out, _ := c.Run("sh", "-c", "ls /proc/"+pid+"/fd | wc -l")
		n, _ := strconv.Atoi(strings.TrimSpace(out))
		return n
	}
	t.Logf("egressd pid %s, watchdog %s, LimitNOFILE %s, %d descriptors before the flood", pid, watchdog, limit, fds())

	const conns = 9000
	start := time.Now()
	c.Must("systemd-run", "--unit=flood", "--uid=nobody", "-p", "LimitNOFILE=20000",
		"/usr/local/bin/egressd-probe", "flood", "127.0.0.1:9464", strconv.Itoa(conns))
	defer c.Run("systemctl", "stop", "flood.service") //nolint:errcheck
	flooding := func() string {
		out, _ := c.Run("journalctl", "--no-pager", "-o", "cat", "-n", "1", "-u", "flood.service")
		return strings.TrimSpace(out)
	}
	time.Sleep(10 * time.Second)
	t.Logf("after 10 s: flood %q; egressd holds %d descriptors", flooding(), fds())

	// The edit lands during the flood.
	t.Logf("during the flood, the edit was in the kernel %v after the write", enforced("during the flood").Round(time.Millisecond))

	maxFDs := 0
	for time.Since(start) < 60*time.Second {
		maxFDs = max(maxFDs, fds())
		time.Sleep(5 * time.Second)
	}
	t.Logf("after %v: flood %q; egressd held at most %d descriptors", time.Since(start).Round(time.Second), flooding(), maxFDs)
	c.Must("systemctl", "stop", "flood.service")
	if maxFDs > 256 {
		t.Errorf("egressd held %d descriptors during the flood: what a local user can make it hold is not bounded", maxFDs)
	}

	if now, n := c.Show("egressd.service", "MainPID"), c.Show("egressd.service", "NRestarts"); now != pid || n != restarts {
		t.Errorf("during the flood egressd was restarted: main PID %s → %s, NRestarts %s → %s", pid, now, restarts, n)
	}
	journal := c.Must("journalctl", "--no-pager", "-o", "cat", "-u", "egressd.service")
	for _, bad := range []string{"Watchdog timeout", "notify_failed", "config_rejected", "too many open files"} {
		if strings.Contains(journal, bad) {
			t.Errorf("egressd's journal during the flood has %q:\n%s", bad, tailLines(journal, 30))
		}
	}
	if got := c.ask(8080, "connect", allowedDst); got != "ok" {
		t.Errorf("after the flood, billing cannot reach its allowed %s: %s", allowedDst, got)
	}
	if got := c.ask(8080, "connect", deniedDst); !strings.Contains(got, "connection refused") {
		t.Errorf("after the flood, billing reaches %s, which its allowlist no longer allows: %s", deniedDst, got)
	}
}

// appliedAfter is the time of the first ruleset_applied event of
// egressd.service logged after since; zero when there is none yet.
func appliedAfter(c *container, since time.Time) time.Time {
	out, _ := c.Run("journalctl", "--no-pager", "-o", "cat", "-u", "egressd.service")
	for _, l := range strings.Split(out, "\n") {
		var e struct {
			Event string    `json:"event"`
			TS    time.Time `json:"ts"`
		}
		if json.Unmarshal([]byte(l), &e) == nil && e.Event == "ruleset_applied" && e.TS.After(since) {
			return e.TS
		}
	}
	return time.Time{}
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
