package systemd

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSystemdListen: on Debian 12's systemd (built -BPF_FRAMEWORK, where
// SocketBindDeny= is a no-op) a hardened service whose allowlist has
// listen: [tcp:8080] serves on 8080 and cannot bind 9999, and so does a
// unit allowlist's service (listen: [tcp:8090], its start gate waiting for
// its new cgroup in the listen restriction): egressd enforces it, with
// egressd.service as shipped (no drop-in), across restarts of the services
// and of egressd, and while egressd is stopped. On Debian 13's
// (+BPF_FRAMEWORK) systemd's own SocketBind* run beside it.
func TestSystemdListen(t *testing.T) {
	require(t)
	for _, s := range []string{suite, trixie} {
		t.Run(s, func(t *testing.T) { testSystemdListen(t, s) })
	}
}

func testSystemdListen(t *testing.T, suite string) {
	// A Debian host has bpffs on /sys/fs/bpf (systemd mounts it at boot);
	// systemd-nspawn's /sys has none: the test gives the container one of
	// its own, gone (with every pin, and so every program) at the end.
	bpffs, err := os.MkdirTemp("/run", "egressd-systest-bpffs-")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", bpffs, "bpf", 0, "mode=0700"); err != nil {
		os.Remove(bpffs)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(bpffs, 0); err != nil {
			t.Errorf("unmount the container's bpffs: %v", err)
		}
		os.Remove(bpffs)
	})
	c := newContainerFrom(t, rootfsFor(t, suite), binds(t)...)
	c.rw = append(c.rw, bpffs+":/sys/fs/bpf")
	// A host's systemd holds every capability; systemd-nspawn's default set
	// lacks CAP_BPF, which egressd.service holds.
	c.caps = append(c.caps, "CAP_BPF")
	c.Write("/etc/systemd/system/targets.service",
		"[Unit]\nDescription=test destinations (root)\nBefore=egressd.service\n\n[Service]\nExecStart=/usr/local/bin/egressd-probe serve "+
			allowedDst+" "+deniedDst+"\n\n[Install]\nWantedBy=multi-user.target\n", 0o644)
	c.boot()
	bpf := strings.Contains(c.Must("systemctl", "--version"), "+BPF_FRAMEWORK")
	c.Must("systemctl", "enable", "--now", "targets.service")
	c.Must("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "billing")
	c.Write("/etc/systemd/system/billing.service", serviceUnit(8080), 0o644)
	c.Write("/etc/systemd/system/shop.service", unitService(8090, "www-data"), 0o644)
	c.Must("install", "-m", "0644", "/src/egressd.service", "/etc/systemd/system/egressd.service")
	c.Must("install", "-d", "-m", "0755", "/etc/egressd", "/etc/egressd/allow.d")
	c.Must("install", "-m", "0644", "/src/egressd.yaml", "/etc/egressd/egressd.yaml")
	c.Write("/etc/egressd/allow.d/billing.yaml", allowlistFor("billing")+"listen: [tcp:8080]\n", 0o644)
	c.Write("/etc/egressd/allow.d/shop.yaml", unitAllowlist("shop.service")+"listen: [tcp:8090]\n", 0o644)
	c.Write("/etc/systemd/system/vault.service", "[Unit]\nDescription=a unit that keeps a socket in the fd store\n\n[Service]\nUser=www-data\n"+
		"ExecStart=/usr/local/bin/egressd-probe fdstore -\nFileDescriptorStoreMax=1\nNotifyAccess=main\nRestart=always\nRestartSec=1s\n", 0o644)
	c.Write("/etc/egressd/allow.d/vault.yaml", unitAllowlist("vault.service")+"listen: [tcp:8095]\n", 0o644)
	c.Must("systemctl", "daemon-reload")
	c.Must("systemctl", "enable", "--now", "egressd.service")
	dropIn, _ := c.harden(t, "billing.service", "--user", "billing", "--listen", "tcp:8080")
	shopDropIn, _ := c.harden(t, "shop.service", "--allowlist", "shop", "--user", "www-data", "--listen", "tcp:8090")
	if !strings.Contains(shopDropIn, " wait --unit shop.service ") {
		t.Errorf("shop's drop-in has no unit gate:\n%s", shopDropIn)
	}
	c.Must("systemctl", "daemon-reload")
	c.Must("systemctl", "start", "billing.service", "shop.service")

	boundOn := func(name string, port int, when string) {
		t.Helper()
		c.restricted(t, port, when) // it serves on port (the agent answers there)
		got := c.ask(port, "listen", "127.0.0.1:9999")
		if !strings.Contains(got, "operation not permitted") {
			t.Errorf("%s: %s bound 127.0.0.1:9999: %s\n%s", when, name, got, c.Must("journalctl", "--no-pager", "-o", "cat", "-u", "egressd.service"))
		}
		if got := c.ask(port, "listen", "[::]:9999"); !strings.Contains(got, "operation not permitted") {
			t.Errorf("%s: %s bound [::]:9999: %s", when, name, got)
		}
		if got := strings.TrimSpace(c.Must("egressd-probe", "ask", fmt.Sprintf("127.0.0.1:%d", port), "pid", "-")); strings.HasPrefix(got, "error") {
			t.Errorf("%s: %s does not serve on %d: %s", when, name, port, got)
		}
	}
	bound := func(when string) {
		t.Helper()
		boundOn("billing", 8080, when)
		boundOn("shop.service (unit allowlist)", 8090, when)
	}
	if !bpf && !strings.Contains(dropIn, "NOT ENFORCED") {
		t.Errorf("-BPF_FRAMEWORK: the drop-in claims SocketBindDeny= is enforced:\n%s", dropIn)
	}
	if suite == "bookworm" && bpf {
		t.Errorf("Debian 12's systemd is built +BPF_FRAMEWORK here: the test proves nothing about egressd alone")
	}
	bound("started")
	if log := c.Must("journalctl", "--no-pager", "-o", "cat", "-u", "egressd.service"); !strings.Contains(log, `"event":"bind_denied"`) || !strings.Contains(log, `"port":9999`) {
		t.Errorf("no bind_denied event for port 9999 in egressd's journal:\n%s", log)
	}
	if log := c.Must("journalctl", "--no-pager", "-o", "cat", "-u", "egressd.service"); !strings.Contains(log, `"unit":"shop.service"`) {
		t.Errorf("no bind_denied event naming shop.service in egressd's journal:\n%s", log)
	}
	c.Must("systemctl", "restart", "billing.service", "shop.service")
	bound("services restarted")
	c.Must("systemctl", "restart", "egressd.service")
	bound("egressd restarted")
	c.Must("systemctl", "stop", "egressd.service")
	bound("egressd stopped")

	c.Must("systemctl", "start", "egressd.service")
	c.Must("systemctl", "restart", "shop.service")
	bound("egressd started again, shop restarted")
	if out, err := c.Run("egressd", "check"); err != nil {
		t.Errorf("egressd check: %v\n%s", err, out)
	}

	// A socket kept in systemd's fd store across a restart carries the old
	// run's cgroup, which egressd unmaps as it goes (the mechanism's limit,
	// docs/security.md). vault.service asks for the store
	// (FileDescriptorStoreMax=1): its first run stores an unbound TCP socket
	// and exits, the next would listen on it, on the kernel's port, though
	// listen: has only tcp:8095. harden's drop-in for a unit allowlist with
	// listen: turns the store off: systemd keeps nothing, so every run
	// stores again and none listens. (Without the drop-in's line the second
	// run printed "listening PORT" and accepted a connection there.)
	if out := c.audit("vault.service"); !strings.Contains(out, "fdstore_listen") {
		t.Errorf("harden --audit of vault.service (FileDescriptorStoreMax=1, listen:): no fdstore_listen\n%s", out)
	}
	vaultDropIn, _ := c.harden(t, "vault.service", "--allowlist", "vault", "--user", "www-data", "--listen", "tcp:8095")
	if !strings.Contains(vaultDropIn, "\nFileDescriptorStoreMax=0\n") {
		t.Errorf("vault's drop-in does not turn the fd store off:\n%s", vaultDropIn)
	}
	c.Must("systemctl", "daemon-reload")
	if show := c.Must("systemctl", "show", "vault.service", "-p", "FileDescriptorStoreMax"); strings.TrimSpace(show) != "FileDescriptorStoreMax=0" {
		t.Errorf("vault.service after the drop-in: %s", show)
	}
	c.Must("systemctl", "start", "vault.service")
	eventually(t, "vault.service's third run (two restarts with the store off)", func() (bool, string) {
		log, _ := c.Run("journalctl", "--no-pager", "-o", "cat", "-u", "vault.service")
		return strings.Count(log, "stored\n") >= 3, log
	})
	log := c.Must("journalctl", "--no-pager", "-o", "cat", "-u", "vault.service")
	if strings.Contains(log, "listening ") || strings.Contains(log, "accepted") {
		t.Errorf("vault.service listened on a socket kept in the fd store across a restart:\n%s", log)
	}
	if show := c.Must("systemctl", "show", "vault.service", "-p", "NFileDescriptorStore"); strings.TrimSpace(show) != "NFileDescriptorStore=0" {
		t.Errorf("vault.service holds stored descriptors: %s", show)
	}
	// harden --audit found the store on before the drop-in, and not after.
	if out := c.audit("vault.service"); strings.Contains(out, "fdstore_listen") {
		t.Errorf("harden --audit of the hardened vault.service: fdstore_listen\n%s", out)
	}
	c.Must("systemctl", "stop", "vault.service")
}
