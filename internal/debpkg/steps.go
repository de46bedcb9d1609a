package debpkg

import "time"

// Step is one command of the package's life cycle, run as root inside a
// booted Debian container (systemd as PID 1), with what it must do.
type Step struct {
	Why        string
	Argv       []string
	Exit       int           // the exit status it must have
	Want       string        // a substring its output (stdout and stderr) must hold; "" for any
	Eventually time.Duration // retry until it holds, at most this long (0: once)
}

// InstallSteps is the real-systemd tier's test of the package (issue 17):
// install (enabled, started, restricting nobody), an allowlist enforced,
// removal (the daemon stopped and its table deleted, the conffile kept),
// purge (the conffile gone, the administrator's allowlist kept). deb is the
// package's path inside the container; user is a service user to create.
// The tier runs each Step in order and fails at the first that does not hold.
func InstallSteps(deb, user string) []Step {
	allowlist := "/etc/egressd/allow.d/" + user + ".yaml"
	return []Step{
		{Why: "install", Argv: []string{"dpkg", "-i", deb}},
		{Why: "enabled on install", Argv: []string{"systemctl", "is-enabled", "egressd.service"}, Want: "enabled"},
		{Why: "started on install", Argv: []string{"systemctl", "is-active", "egressd.service"}, Want: "active", Eventually: 20 * time.Second},
		// Wanted by egressd.service: it holds the DNS proxy's sockets.
		{Why: "egressd.socket installed", Argv: []string{"test", "-s", "/lib/systemd/system/egressd.socket"}},
		{Why: "egressd.socket active with egressd (Wants=)", Argv: []string{"systemctl", "is-active", "egressd.socket"}, Want: "active"},
		{Why: "an empty allow.d restricts nobody, and check agrees with the kernel", Argv: []string{"egressd", "check"}, Want: "OK: in sync", Eventually: 10 * time.Second},
		{Why: "the packaged version", Argv: []string{"egressd", "version"}, Want: "egressd "},
		{Why: "the man page is installed", Argv: []string{"test", "-s", "/usr/share/man/man8/egressd.8.gz"}},
		{Why: "a service user", Argv: []string{"useradd", "--system", "--no-create-home", user}},
		{Why: "an allowlist", Argv: []string{"sh", "-c", `printf 'user: %s\nallow:\n  - 192.0.2.1:443\n' "$1" > "$2"`, "sh", user, allowlist}},
		{Why: "the allowlist is enforced: its destination allowed", Argv: []string{"egressd", "check", "--explain", user, "192.0.2.1:443"}, Want: "ALLOWED", Eventually: 10 * time.Second},
		{Why: "the allowlist is enforced: anything else denied", Argv: []string{"egressd", "check", "--explain", user, "192.0.2.2:443"}, Exit: 1, Want: "DENIED"},
		// Eventually: the daemon publishes its view (state.json) at most once
		// a second, so for up to a second after an apply check reports
		// drift and a pending reload.
		{Why: "check is clean with an allowlist", Argv: []string{"egressd", "check"}, Want: "OK: in sync", Eventually: 5 * time.Second},
		// A removal whose table cannot be deleted fails and keeps the package
		// (a second daemon holds the lock, so egressd remove refuses), naming
		// the services whose start gate runs /usr/bin/egressd (the tier hardens
		// pkgweb.service before the first dpkg -r).
		{Why: "stop the packaged daemon", Argv: []string{"systemctl", "stop", "egressd.service"}},
		{Why: "a second daemon holds the lock", Argv: []string{"systemd-run", "--unit=egressd-second", "/usr/bin/egressd", "run"}},
		{Why: "the second daemon runs", Argv: []string{"egressd", "remove"}, Exit: 1, Want: "is running", Eventually: 10 * time.Second},
		{Why: "a removal that cannot delete the table fails", Argv: []string{"dpkg", "-r", "egressd"}, Exit: 1, Want: "the package stays installed"},
		{Why: "and names the hardened services that will not start without egressd", Argv: []string{"dpkg", "-r", "egressd"}, Exit: 1, Want: "  pkgweb.service\n"},
		{Why: "the package is still installed after the failed removal", Argv: []string{"dpkg-query", "-W", "-f=${Status}", "egressd"}, Want: "install ok installed"},
		{Why: "the binary that can delete the table is still there", Argv: []string{"test", "-x", "/usr/bin/egressd"}},
		{Why: "stop the second daemon", Argv: []string{"systemctl", "stop", "egressd-second.service"}},
		{Why: "remove", Argv: []string{"dpkg", "-r", "egressd"}},
		{Why: "the daemon is stopped", Argv: []string{"systemctl", "is-active", "egressd.service"}, Exit: 3, Want: "inactive"},
		{Why: "egressd.socket is stopped (its sockets closed)", Argv: []string{"systemctl", "is-active", "egressd.socket"}, Exit: 3, Want: "inactive"},
		{Why: "the binary is gone", Argv: []string{"test", "!", "-e", "/usr/bin/egressd"}},
		{Why: "the table is gone with it (prerm: egressd remove)", Argv: []string{"sh", "-c", "! command -v nft >/dev/null || ! nft list table inet egressd"}},
		{Why: "the conffile stays after remove", Argv: []string{"test", "-e", "/etc/egressd/egressd.yaml"}},
		{Why: "purge", Argv: []string{"dpkg", "-P", "egressd"}},
		{Why: "the conffile is gone after purge", Argv: []string{"test", "!", "-e", "/etc/egressd/egressd.yaml"}},
		{Why: "the administrator's allowlist is kept", Argv: []string{"test", "-e", allowlist}},
		{Why: "no unit is left enabled", Argv: []string{"test", "!", "-e", "/etc/systemd/system/multi-user.target.wants/egressd.service"}},
		{Why: "egressd.socket is gone after purge", Argv: []string{"sh", "-c", "test ! -e /lib/systemd/system/egressd.socket && test ! -e /etc/systemd/system/sockets.target.wants/egressd.socket && ! systemctl is-active egressd.socket"}},
		{Why: "nothing listens on the DNS proxy's port after purge", Argv: []string{"sh", "-c", "! grep -q ':0099 ' /proc/net/udp /proc/net/tcp /proc/net/udp6 /proc/net/tcp6"}},
	}
}
