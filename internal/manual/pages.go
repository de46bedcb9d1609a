package manual

import (
	"strings"

	"github.com/egressd/egressd/internal/event"
)

// Egressd is egressd(8): the commands. `egressd help egressd` prints it;
// the short help of each command (usage.go) comes from it too.
var Egressd = &Page{Name: "egressd", Section: "8", Title: "System Administration", Sections: []Section{
	{"NAME", []Block{P(`egressd - per-service egress allowlists, kept current from DNS, enforced by nftables`)}},
	{"SYNOPSIS", []Block{Pre(`
egressd run [--config FILE] [--once] [--log-level LEVEL]
            [--runtime-dir DIR] [--bpf-dir DIR] [--listen-cgroup DIR]
egressd check [--config FILE] [--json] [--runtime-dir DIR]
              [--textfile FILE]
egressd check [--config FILE] [--json] --explain USER HOST:PORT[/udp]
egressd validate [--config FILE] [--as DEST] PATH...
egressd check [--config FILE] [--json] --explain USER listen tcp|udp:PORT
egressd harden --user USER [--group GROUP] [--writable PATH]...
               [--listen tcp:PORT|udp:PORT]... [--jit] [--nproc N]
               [--fsize SIZE] [--apparmor PROFILE | --selinux CONTEXT]
               [--loopback-only] [--no-private-users]
               [--systemd-version N] [--target-features FEATURES]
               [--egressd PATH] [--gate-timeout D]
               [--allowlist NAME [--keep-system-bus]] [--unit NAME]
               [--config FILE] [--unit-file FILE]
egressd harden --audit UNIT_FILE [--json]
egressd wait (--user USER | --unit UNIT | --allowlist NAME) [--timeout 30s]
             [--config FILE] [--bpf-dir DIR]
egressd remove [--runtime-dir DIR] [--bpf-dir DIR]
egressd plan [--config FILE] [--runtime-dir DIR]
egressd denies [--follow] [--allowlist NAME] [--json] [--runtime-dir DIR]
egressd learn ALLOWLIST|USER [--since D] [--config FILE] [--state-dir DIR]
              [--runtime-dir DIR]
egressd demo
egressd version
egressd completion bash|zsh
egressd man 8|5
egressd help [COMMAND | egressd | egressd.yaml]
egressd COMMAND --help`)}},
	{"DESCRIPTION", []Block{P(`For each protected service user, egressd allows outgoing connections to
the host:port destinations of that user's allowlist, and logs, then
rejects, everything else that user sends. Names are looked up in the hosts
file (/etc/hosts) first, then with egressd's own DNS client, honouring
TTLs, and the nftables table "inet egressd" is kept current in atomic netlink
transactions. Users without an allowlist, and root, are not affected.`),
		P(`The configuration is described in egressd.yaml(5) (egressd help egressd.yaml).`)}},
	{"COMMANDS", []Block{
		Item("run", `Run the daemon in the foreground (systemd Type=notify). It
applies the whole ruleset, signals READY=1, then follows DNS TTLs, hosts
file and allowlist edits. SIGHUP reloads the configuration (the deny log
reader, the metrics endpoint and the watch are restarted with changed
settings); SIGTERM stops, leaving the rules in place (on_exit: keep) or
removing them (on_exit: remove).`),
		Item("run --once", `Resolve everything once, apply, exit.`),
		Item("check", `Validate the configuration, resolve every name once, and
compare with the live kernel table (through netlink). When the daemon runs,
the kernel is compared with the daemon's published view (DIR/state.json), so
lingering and stale-served addresses are not drift. Prints one line per
allowlist, the names the hosts file answers, how long the kernel's elements
from DNS have left (the kernel removes each when its time runs out, whether or
not egressd runs), then each problem with what to do, then notes that do not fail the check (nft_cannot_print: the nft on PATH,
run as nft list table inet egressd, cannot print the table in full, or
prints a unit key as [invalid type]; legacy_raw_unread: a legacy iptables
raw table it cannot read). While an allowlist has listen:, another table's
rule that exempts more than TCP from connection tracking (notrack) is a
problem (listen_untracked): it lets peers' datagrams past listen:. --json
prints the document described in docs/check.md. Changes nothing.`),
		Item("check --explain USER|UNIT HOST:PORT[/udp]", `Would USER (or the unit
UNIT, NAME.service or NAME.slice, of a unit allowlist) be allowed to
reach HOST:PORT right now, according to the live kernel, and by which
allowlist entry; which source answered for the name (hosts or dns); for an
address from DNS, the kernel lifetime its element has left; when denied, the nearest entries (same host other port, same name other address).`),
		Item("validate PATH...", `Check candidate files (allowlists, shared lists,
the main file) offline: no root, kernel, daemon or DNS; and run their
allowlists' tests:. The hook of configuration management: Ansible's
validate:, Puppet's validate_cmd, Salt's check_cmd, which pass a copy under a
temporary name. A candidate is read where it is; the trust rules apply to
where it goes. --as DEST says where the one candidate will be installed (the
allowlist's name comes from it). --config FILE checks the candidates
together with the installed configuration FILE names, read under the trust
rules as the daemon reads it (its other allowlists, a second allowlist for the
same user or unit, the shared lists it includes), and refuses a target
directory the daemon would refuse. Without --config, a kind is told by
where it goes or by its keys, and the lists an allowlist includes are those
given beside it. Errors go to stderr with file:line:col. See docs/fleet.md.`),
		Item("check --explain USER listen tcp|udp:PORT", `May USER listen on PORT
right now, according to the listen restriction the kernel holds (an
allowlist's listen:), and by which entry.`),
		Item("harden", `Print a systemd drop-in that hardens one protected service:
its own user, no new privileges, private /tmp, read-only system with explicit
writable paths, no W+X memory, resource limits, port binding limits, LSM
profile, and ordering after egressd.service (Wants=, never Requires=) with a
start gate (egressd wait). Every line says which exploit behaviour it blocks;
options the target systemd lacks are left out, and what it does not enforce
is said (SocketBind* without BPF_FRAMEWORK). For a dns: proxy allowlist it hides
the local resolvers' sockets and the D-Bus system bus (resolved's D-Bus API),
unless --keep-system-bus (check then notes it). Warnings on stderr.`),
		Item("harden --audit UNIT_FILE", `Report the unit's exposure score
(systemd-analyze security), each missing protection with the line to add, and
every code or configuration path the service user could modify (walking up
to /), with the fix, and a start gate whose egressd binary does not exist
(gate_missing), and a unit allowlist with listen: whose unit keeps a file
descriptor store (fdstore_listen: a stored socket keeps the old run's cgroup
and listens on any port; harden writes FileDescriptorStoreMax=0 for such a
unit). Exit 1 when anything is found.`),
		Item("wait", `The start gate of a protected service (ExecStartPre=+,
written by harden): wait until egressd restricts USER (or the user of
allowlist NAME) in the kernel, then exit 0; exit 1 when the timeout passes
first, so the service does not start. Needs CAP_NET_ADMIN to read nf_tables
(the + prefix runs it as root). When the user's allowlist (read from
--config) has listen:, it waits until the listen restriction pinned in
--bpf-dir holds the user's rule too (a configuration it cannot read: while
any user's listen: is in force). With --unit (or a unit allowlist's NAME) it
must run inside that unit, as its first ExecStartPre=: it waits until the
kernel restricts the unit's current cgroup and, when the unit's allowlist
has listen:, until the listen restriction holds that cgroup too (a
configuration it cannot read: while any unit allowlist's listen: is in
force). A listen restriction that is not loaded fails the gate.`),
		Item("remove", `Delete the table inet egressd and detach the listen
restriction (the BPF programs pinned in --bpf-dir): every restriction is
lifted. For uninstalling and emergencies. Refused while the daemon runs (it
would restore the table at once): stop it first (systemctl stop egressd).
"nothing to remove" when there is no table.`),
		Item("plan", `Print the ruleset that run would apply now, as nft text
(the table inet egressd with its sets, keyed by uid, and its chains), with
names resolved just now as check does and the uids the daemon keeps
enforcing (DIR/state.json); then how the kernel differs from it, as nft
commands: users and elements to delete and add, and any other difference
(chains, rules, sets) as a comment. Changes nothing. Reading the kernel
needs root or CAP_NET_ADMIN; without it the plan is printed alone, and
stderr says so. The table's text is nft syntax, what egressd sends the
kernel (nft -c -f takes it; with unit allowlists nftables 1.1 or later, and
the cgroup map's elements are comments; loaded from it, an audited unit's
log rule does not restore the packet's mark, docs/units.md); the difference
after it is for people.`),
		Item("denies", `Recent denied and audited attempts (mode: audit), aggregated
by allowlist, destination and port, with their count, names and when last
seen, most recent first; --allowlist keeps one allowlist's; --json prints
them as JSON; --follow keeps printing each attempt as it happens (one line,
or one JSON object, per update) until interrupted. Read from the daemon's
runtime directory (denies.json, readable by root only); needs deny_log.mode:
nflog. Exit 2 when there is nothing to read.`),
		Item("learn ALLOWLIST|USER", `Print a proposed allowlist (YAML that loads as
it is) from what the daemon observed for it: every destination it denied or,
in mode: audit, let through, as a literal address (or as the allowlist's own
name where that name answered with it) with its count and first and last
time seen as comments; the entries already in the allowlist marked as such;
--since keeps the recent ones. With dns: proxy, an address is proposed as the
name the proxy answered the service with when that name alone led to it (an
address several names led to stays a literal, marked REVIEW, every name
listed beneath; a name that is no valid entry appears only in a comment,
escaped), three or more sibling names as one *.parent wildcard (never under
a public suffix such as co.uk or github.io), and the names the proxy refused
are listed as comments.
The observations are kept under the state directory (observed.json, bounded)
and survive restarts. Exit 2 when there is nothing to learn from.`),
		Item("demo", `Run the real daemon on example allowlists inside a throwaway
network namespace, with its own DNS server and example services; prints what
is allowed, what is denied and a DNS change taking effect. Never touches the
host's firewall.`),
		Item("version", `Print the version, commit and Go version of this build.
The same is exported as the metric egressd_build_info.`),
		Item("completion bash|zsh", `Print the shell completion script.`),
		Item("man 8|5", `Print egressd(8) or egressd.yaml(5) in roff, for man -l - (the
package installs both).`),
		Item("help [COMMAND | egressd | egressd.yaml]", `Print the commands, one line each;
a command's short help (as COMMAND --help does: its synopsis, what it does,
its options); this manual (egressd); or the configuration's (egressd.yaml).
Every command takes -h or --help, prints its short help on standard output
and exits 0; a wrong option or argument prints the error and a pointer to
--help on standard error and exits 2.`),
	}},
	{"OPTIONS", []Block{
		Item("--config FILE", `Main configuration file (default
/etc/egressd/egressd.yaml; when not given and missing, every key takes its
default).`),
		Item("--once", `With run: apply once and exit.`),
		Item("--log-level L", `debug, info (default), warn or error.`),
		Item("--runtime-dir D", `Where the daemon publishes its state for check
(default /run/egressd).`),
		Item("--bpf-dir D", `With run and remove: where the listen restriction's
BPF programs, maps and links are pinned, on bpffs (default: $RUNTIME_DIRECTORY/bpf
when that is a bpffs, as egressd.service binds it; else /sys/fs/bpf/egressd).
With wait: where to find them (default /sys/fs/bpf/egressd).`),
		Item("--listen-cgroup D", `With run: the cgroup the listen restriction
attaches to (default: the cgroup2 root, every process; tests use their own).`),
		Item("--json", `With check: machine-readable output.`),
		Item("--textfile FILE", `With check: also write the result in the Prometheus
text format to FILE, atomically, for node_exporter's textfile collector
(egressd-check.timer: /var/lib/prometheus/node-exporter/egressd.prom); the
report is printed only when check finds something.`),
		Item("--as DEST", `With validate: where the one candidate will be installed.`),
	}},
	{"FILES", []Block{
		Item("/etc/egressd/egressd.yaml", `Main configuration.`),
		Item("/etc/egressd/allow.d/NAME.yaml", `One allowlist per service user (or NAME.yml).`),
		Item("/etc/egressd/lists/NAME.yaml", `Shared lists that allowlists include.`),
		Item("/etc/hosts", `Looked up before DNS (hosts_file).`),
		Item("/run/egressd/state.json", `The daemon's published view, for check.`),
		P(`Every configuration path (main file, allow directory, allowlists, shared
lists, the hosts file, symlinks and their targets, and their parent
directories up to /) must be writable by root (or egressd's own user) alone;
anything else is refused like a bad file.`),
	}},
	{"EXIT STATUS", []Block{
		Item("run", `0 on a clean stop; 1 on a runtime failure; 2 if the configuration
is invalid at start.`),
		Item("run --once", `0 applied; 1 applied, but some names failed to resolve;
2 configuration invalid (nothing was changed).`),
		Item("check", `0 in sync, no problems; 1 drift or problems; 2 configuration
invalid, or check cannot run (not root, no nf_tables).`),
		Item("validate", `0 every candidate is valid; 2 invalid (or bad options).`),
		Item("check --explain", `0 allowed (or the user is not restricted);
1 denied; 2 cannot answer.`),
		Item("harden", `0 printed; 2 invalid options. With --audit: 0 nothing found,
1 findings, 2 cannot read the unit.`),
		Item("learn", `0 printed; 2 no such allowlist, or nothing to learn from.`),
		Item("denies", `0 printed; 2 nothing to read (no daemon, or another deny_log.mode).`),
		Item("wait", `0 the user is restricted; 1 not by the timeout; 2 bad arguments.`),
		Item("plan", `0 printed (the difference with the kernel too when it could
be read); 2 configuration invalid, or bad options.`),
		Item("remove", `0 removed (or nothing to remove); 1 refused (a daemon runs,
or not root) or failed.`),
	}},
	{"EVENTS", []Block{P(`Logs are JSON lines on stderr with a stable "event" key: ` +
		strings.Join(event.All, ", ") + `. docs/events.md says when each is logged, with its fields.`)}},
	{"SEE ALSO", []Block{P(`egressd.yaml(5), nft(8), systemd.exec(5), hosts(5);
/usr/share/doc/egressd/README.md.gz; the documents named docs/NAME.md here and
in the README are installed as /usr/share/doc/egressd/docs/NAME.md.gz (check.md:
the check --json document; events.md: every event; hardening.md: harden);
/usr/share/doc/egressd/changelog.gz`)}},
}}

// Config is egressd.yaml(5): the main file, allowlists and shared lists.
var Config = &Page{Name: "egressd.yaml", Section: "5", Title: "File Formats", Sections: []Section{
	{"NAME", []Block{P(`egressd.yaml - egressd configuration, allowlists and shared lists`)}},
	{"SYNOPSIS", []Block{Pre(`
/etc/egressd/egressd.yaml
/etc/egressd/allow.d/NAME.yaml
/etc/egressd/lists/NAME.yaml`)}},
	{"DESCRIPTION", []Block{P(`The main file is optional: every key has a default. Each file
in the allow directory is one allowlist: the outgoing destinations one
service user may reach. Every error names the file, line and column; a load
with any error changes nothing, and the daemon keeps enforcing the last good
configuration.`),
		P(`Every configuration path must be writable by root alone: a service must
never be able to edit the allowlist it is restricted by.`)}},
	{"MAIN FILE", []Block{
		Item("resolvers", `List of ADDR or ADDR:PORT ([V6]:PORT). Default: the
nameservers of /etc/resolv.conf.`),
		Item("allow_dir", `Directory of allowlists, relative to the main file's
directory. Default: allow.d.`),
		Item("lists_dir", `Directory of shared lists, relative to the main file's
directory. Default: lists.`),
		Item("hosts_file", `A hosts(5) file consulted before DNS, as "hosts: files
dns" does. Default: /etc/hosts. Empty: DNS only.`),
		Item("min_ttl", `A shorter TTL is raised to this (and to 1s at least, also
with 0). Default: 5s.`),
		Item("max_ttl", `A longer TTL is lowered to this. Default: 10m.`),
		Item("linger", `An address that left the answers stays allowed this long
after its TTL ran out. Default: 5m.`),
		Item("stale_grace", `While DNS fails, last-known addresses stay allowed this
long. Default: 1h.`),
		Item("max_addresses_per_name", `Answers are capped per name. Default: 256.`),
		Item("deny_log", `mode (nflog, kernel or none; default nflog), group
(default 100), rate (default 10/second, per protected uid), prefix (default
egressd), interval (the deny event aggregation window; default 10s).`),
		Item("on_exit", `keep (default: the rules stay when the daemon stops; fail
closed: each address from DNS closes when its kernel lifetime, TTL + linger
or stale_grace, runs out) or remove.`),
		Item("metrics_listen", `HOST:PORT of the Prometheus endpoint, which every local user
can read (which services are denied, and when), or unix:PATH, a unix socket
with metrics_socket_mode and metrics_socket_group, in a directory that only
root or egressd may write, as may every directory above it. At most 16 connections at
once. Default: off. The shipped egressd.service lets the daemon bind TCP port
9464 only (SocketBindAllow=tcp:9464, SocketBindDeny=any): for another port add
SocketBindAllow=tcp:PORT in a drop-in (systemctl edit egressd), or where systemd
enforces SocketBind* the bind fails (metrics_failed; enforcement is
unaffected).`),
		Item("metrics_socket_mode", `The metrics socket's mode, in octal: who may connect
(connecting needs write). Only with metrics_listen: unix:PATH. Default: 0600.`),
		Item("metrics_socket_group", `The metrics socket's group (name or gid); egressd must
be a member (SupplementaryGroups= under the unit). Default: egressd's own.`),
		Item("state_mode", `The mode of the state file (RUNTIME_DIR/state.json), which
lists every allowlist; never writable by group or others. Default: 0644.`),
		Item("state_group", `The state file's group (name or gid), as metrics_socket_group.
Default: egressd's own.`),
		Item("dns_proxy_port", `The DNS proxy's port on 127.0.0.1 and ::1, where the
kernel redirects the queries of dns: proxy allowlists (egressd.socket opens
it: change both). Default: 153.`),
		Item("dns_proxy_max_answers", `The DNS proxy's live answers per allowlist (kernel
elements, each expiring after its TTL + linger, or at once when an edit no longer
allows it); answers on their way to the kernel count, so the bound holds under
concurrent queries; past it, answers with new addresses get SERVFAIL
(dns_proxy_failed). Default: 65536.`),
	}},
	{"ALLOWLISTS", []Block{P(`One allowlist per file in allow_dir, NAME.yaml, where NAME
(letters, digits, '-', '_', at most 48) names the allowlist in the kernel and
in logs. Hidden files are ignored.`),
		Item("user", `The service user: a name or a numeric uid (required unless unit: is given; not root).`),
		Item("unit", `Instead of user: a systemd service or slice (NAME.service,
NAME.slice): every socket created in its cgroup (cgroup v2, Linux 5.13 or
later) is restricted, whatever its uid; other processes of the same user are
not. See docs/units.md.`),
		Item("allow", `List of destinations, HOST:PORT or HOST:FROM-TO, optionally
followed by /tcp (default) or /udp. HOST is a DNS name, an IPv4 address or
CIDR, an IPv6 address or CIDR in brackets, or with dns: proxy a wildcard:
*.example.com (exactly one more label) or **.example.com (any depth; neither
matches example.com itself).`),
		Item("include", `List of shared list names (files NAME.yaml in lists_dir)
whose destinations this allowlist also allows, under this allowlist's dns and
allow_private_answers settings.`),
		Item("dns", `resolvers (default): the user may reach the configured resolvers
on port 53; none: it may not; proxy: every DNS query of the user (UDP and TCP
port 53, any address) is redirected to egressd's proxy, which answers only
names an entry matches and puts their addresses in the kernel before the
answer is released; other names are answered REFUSED (dns_refused). Needed
for wildcard entries.`),
		Item("dns_unlisted", `With dns: proxy: refuse (default) or answer names no
entry matches (their addresses allow nothing; mode: audit answers them too).`),
		Item("mode", `enforce (default): everything outside the allowlist is logged,
then rejected; audit: it is logged as a deny event with "audit": true, then
let through (roll out without breaking the service; switching back is a
reload).`),
		Item("allow_private_answers", `Accept DNS answers in loopback, private,
link-local, CGNAT, unspecified or multicast ranges, or other ranges that are
not globally reachable (192.0.0.0/24, 198.18.0.0/15, 240.0.0.0/4, fec0::/10)
(default false: DNS
rebinding must not open the metadata service or the LAN). Literal entries and
hosts file answers are always taken as written.`),
		Item("tests", `Policy tests: allow: and deny: lists of destinations
(HOST:PORT[/udp], one host and one port) the allowlist must allow and must
deny, checked from its entries (includes too) with no DNS: a name by an
entry for it or a matching wildcard, an address by a literal entry containing
it. A failing test is an error at its line: validate and check exit 2, the
daemon keeps its last good configuration.`),
		Item("listen", `The ports the user's processes may bind and listen on:
[tcp:8080, udp:5353, tcp:8000-8010]. Absent: unrestricted; listen: []: no
port. Any other bind() fails with EPERM (bind_denied); a TCP listener on a
port the kernel picked (port 0, or listen() unbound) gets no connection,
and a UDP, UDP-Lite or ping socket there no datagram of a flow a peer opened
(replies to what it sent arrive). Setting IP_RECVERR or IPV6_RECVERR
succeeds and does nothing (ICMP errors quote bytes a peer chose; glibc's
resolver needs the call to succeed; no event), for a 64-bit program: the
kernel runs no setsockopt hook for a 32-bit one's call. Enforced with cgroup BPF, pinned on bpffs (needs CAP_BPF, which
egressd.service holds); without it, reported as not enforced
(listen_unenforced, check). In a unit allowlist, every process of the unit
is held to it, whatever its uid, and its start gate waits for the unit's new
cgroup in the restriction. Not stopped (docs/security.md): datagrams
another tool exempts from conntrack (notrack); a unit's socket kept across a
restart in systemd's file descriptor store listens unrestricted; IP_RECVERR
from a 32-bit program (harden's SystemCallArchitectures=native refuses its
calls in a unit; elsewhere boot with ia32_emulation=0), or turned on before
the restriction (restart the service after adding listen:), stays on. ICMP
errors about a non-TCP flow the user opened, or a peer opened, and those
about no flow are dropped in the inbound chain whatever the option: a
restricted UDP client sees a closed port as a timeout, not ECONNREFUSED;
TCP keeps its errors.`),
	}},
	{"SHARED LISTS", []Block{P(`A file lists_dir/NAME.yaml holds destinations kept once and
used by many allowlists. Its only key is allow, with the same syntax and
validation as an allowlist's; errors name the list file's line and column. An
include of a list that does not exist is an error at the include line of the
allowlist.`)}},
	{"NAMES", []Block{P(`Names are looked up in the hosts file first: when it holds the
name, its addresses are the answer (A and AAAA alike, as getaddrinfo does)
and DNS is not asked. The file is watched; an edit takes effect at once.
Hosts answers are treated like literals: the administrator wrote them, so a
loopback or private address there is allowed. Otherwise a name allows only
the addresses it currently resolves to in DNS, each for its own lifetime:
last seen + TTL (clamped to [min_ttl, max_ttl]) + linger, or, while DNS
fails, the last answer + stale_grace. The kernel element carries that
lifetime as its timeout and ends by itself if egressd is not running to
renew it; literal entries never end.`)}},
	{"EXAMPLE", []Block{Pre(`
# /etc/egressd/allow.d/billing.yaml
user: billing
include: [os-updates]
allow:
  - db.internal.example.com:3306
  - api.payments.example:443
  - 127.0.0.1:3306
  - "[2001:db8::1]:53/udp"
  - 198.51.100.0/24:8000-8100
dns: resolvers

# /etc/egressd/lists/os-updates.yaml
allow:
  - deb.debian.org:443
  - security.debian.org:443`)}},
	{"SEE ALSO", []Block{P(`egressd(8) (where the docs/NAME.md named here are installed), hosts(5)`)}},
}}

// Pages are every man page, by section.
var Pages = map[string]*Page{"8": Egressd, "5": Config}
