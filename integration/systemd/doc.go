// Package systemd is the real-systemd test tier (tier 4 in STYLE.md):
// systemd 252 (Debian 12) as PID 1 of a systemd-nspawn container with a
// private network, booted from a cached debootstrap root filesystem under an
// overlay, with the freshly built egressd bind-mounted in. The tests install
// egressd as the README says, harden services with `egressd harden`, and
// check what systemd does with them: start, reload, stop, crash, restart,
// watchdog, boot order, and what each hardened service can and cannot do;
// and the DNS proxy (dns: proxy) under socket activation: egressd.socket
// adopted, no query lost through restarts, fail closed without it.
// TestSystemdUnits covers unit allowlists (docs/units.md) on systemd 252;
// TestSystemdNFTSet boots Debian 13 (systemd 257) for NFTSet=.
// TestSystemdPackage installs the Debian package instead, in a container
// without the bind-mounted egressd, and runs debpkg.InstallSteps: installed,
// enabled, enforcing, hardened, removed, purged. TestSystemdMetricsFlood
// floods the metrics port as nobody for 60 s under the real unit (watchdog,
// LimitNOFILE=): no restart, few descriptors held, an edit applied.
//
// The tests skip when not root or when systemd-nspawn, debootstrap or
// nsenter are missing, and fail instead when EGRESSD_REQUIRE_SYSTEM_TESTS=1.
// The root filesystem is built once (about 50 s) into
// /var/cache/egressd-systest/, keyed by suite and package list.
package systemd
