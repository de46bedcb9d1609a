// Package harden is `egressd harden`: it writes the systemd hardening that
// complements egress filtering for a protected service (a drop-in), and
// audits a unit: exposure score, missing protections, and whether the
// service user can modify its own code or configuration.
package harden

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/egressd/egressd/ruleset"
)

// Options describe the protected service.
type Options struct {
	Unit           string   // the unit the drop-in is for, for the header comment
	User           string   // service user (required)
	Group          string   // default: User
	Writable       []string // ReadWritePaths
	Listen         []Listen // ports the service binds
	JIT            bool     // needs writable+executable memory (JVM, V8, LuaJIT, PCRE JIT)
	NProc          int      // LimitNPROC; default 64
	FSize          string   // LimitFSIZE; default 1G
	AppArmor       string
	SELinux        string
	LoopbackOnly   bool // may only talk to localhost
	PrivateUsers   bool // PrivateUsers=yes (default on; off for daemons that need real uids of other users)
	SystemdVersion int  // target systemd; options it does not know are left out
	Allowlist      string
	AllowlistInfo  string // one line describing the allowlist, for the header
	// AllowlistListen is the allowlist's listen: key as written ("tcp:8080,
	// udp:5353"; "" for listen: []), when known and present: egressd then
	// enforces the listening ports itself, whatever the systemd.
	AllowlistListen *string
	// DNSProxy says the allowlist has dns: proxy: the service's lookups
	// must reach port 53 (where the kernel redirects them to the proxy), not
	// a local resolver's UNIX socket.
	DNSProxy bool
	// KeepSystemBus, with DNSProxy, leaves the D-Bus system bus reachable
	// (a service that needs it: polkit, logind, NetworkManager); through
	// it resolved's D-Bus API resolves any name out of the proxy's sight.
	KeepSystemBus bool
	// Egressd is the egressd binary the start gate runs; default
	// /usr/local/bin/egressd (where egressd.service runs it from).
	Egressd string
	// GateTimeout is how long the start gate waits for the user's
	// allowlist in the kernel before the start fails; default 30s.
	GateTimeout time.Duration
	// GateUnit, for a unit allowlist (docs/units.md), is the unit whose new
	// cgroup the start gate waits for (egressd wait --unit); User may then
	// be empty (the unit's own User= or DynamicUser= stays).
	GateUnit string
	// OwnStartPre are the unit's own ExecStartPre= lines: with GateUnit the
	// drop-in resets the list and lists them again after the gate, which
	// must run first (drop-in lines run after the unit's own).
	OwnStartPre []string
	// BPF says whether the target systemd is built with BPF_FRAMEWORK,
	// without which SocketBindAllow=/SocketBindDeny= are ignored.
	BPF Feature
}

// Feature is a build-time feature of the target systemd: known present,
// known absent, or unknown (another host, no systemctl).
type Feature int

// Feature values.
const (
	FeatureUnknown Feature = iota
	FeatureYes
	FeatureNo
)

// DefaultEgressd is where egressd.service runs egressd from.
const DefaultEgressd = "/usr/local/bin/egressd"

// DefaultGateTimeout bounds the start gate's wait.
const DefaultGateTimeout = 30 * time.Second

// Directories systemd creates for a service, owned by its user, before it
// starts: a --writable path below one of them becomes that setting instead
// of ReadWritePaths=, which needs the path to exist (226/NAMESPACE if not).
var managedDirs = []struct{ base, key string }{
	{"/var/lib", "StateDirectory"},
	{"/var/cache", "CacheDirectory"},
	{"/var/log", "LogsDirectory"},
}

// splitWritable sorts --writable paths into systemd-managed directories
// (key -> names relative to the base) and plain ReadWritePaths.
func splitWritable(paths []string) (managed map[string][]string, plain []string) {
	managed = map[string][]string{}
	for _, p := range paths {
		done := false
		for _, m := range managedDirs {
			if rel, ok := strings.CutPrefix(p, m.base+"/"); ok && rel != "" {
				managed[m.key] = append(managed[m.key], rel)
				done = true
				break
			}
		}
		if !done {
			plain = append(plain, p)
		}
	}
	return managed, plain
}

// lowPort reports whether the service binds a port below 1024.
func (o *Options) lowPort() (Listen, bool) {
	for _, l := range o.Listen {
		if l.Port < 1024 {
			return l, true
		}
	}
	return Listen{}, false
}

// Listen is one port the service binds.
type Listen struct {
	Proto string // tcp | udp
	Port  uint16
}

func (l Listen) String() string { return fmt.Sprintf("%s:%d", l.Proto, l.Port) }

// ParseListen parses tcp:PORT or udp:PORT.
func ParseListen(s string) (Listen, error) {
	proto, port, ok := strings.Cut(s, ":")
	var n uint16
	if _, err := fmt.Sscanf(port, "%d", &n); err != nil || !ok || (proto != "tcp" && proto != "udp") || n == 0 || fmt.Sprint(n) != port {
		return Listen{}, fmt.Errorf("--listen %q: want tcp:PORT or udp:PORT", s)
	}
	return Listen{Proto: proto, Port: n}, nil
}

// A line of the drop-in: a directive, its value, why (the exploit behaviour
// it blocks), and the first systemd release that knows it.
type line struct {
	section string // Unit | Service
	key     string
	value   string
	why     string
	since   int
}

// Sources for "since": systemd's NEWS file, the release that introduced each
// setting (https://github.com/systemd/systemd/blob/main/NEWS):
//
//	183 PrivateTmp; 187 NoNewPrivileges; 209 PrivateDevices, SystemCallArchitectures,
//	SystemCallErrorNumber, SELinuxContext; 210 AppArmorProfile; 211 RestrictAddressFamilies;
//	214 ProtectHome; 231 ReadWritePaths, MemoryDenyWriteExecute, RestrictRealtime,
//	SystemCallFilter=@system-service groups; 232 ProtectSystem=strict, ProtectKernelTunables,
//	ProtectKernelModules, ProtectControlGroups, RemoveIPC, PrivateUsers; 233 RestrictNamespaces;
//	235 LockPersonality, IPAddressAllow/IPAddressDeny, KeyringMode; 239 PrivateMounts;
//	242 ProtectHostname, RestrictSUIDSGID; 244 ProtectKernelLogs; 245 ProtectClock;
//	247 ProtectProc, ProcSubset; 249 SocketBindAllow/SocketBindDeny;
//	231 InaccessiblePaths (with the "-" prefix).
//
// Older settings (User, Group, UMask, CapabilityBoundingSet, Limit*) predate
// every release this tool targets (≥ 239 in practice).

// DefaultSystemdVersion is assumed when --systemd-version is not given: the
// version of Debian 12's systemd, which this tool is tested against.
const DefaultSystemdVersion = 252

func (o *Options) lines() []line {
	group := o.Group
	if group == "" {
		group = o.User
	}
	nproc := o.NProc
	if nproc == 0 {
		nproc = 64
	}
	fsize := o.FSize
	if fsize == "" {
		fsize = "1G"
	}
	egressd := o.Egressd
	if egressd == "" {
		egressd = DefaultEgressd
	}
	gate := o.GateTimeout
	if gate == 0 {
		gate = DefaultGateTimeout
	}
	ls := []line{
		{"Unit", "After", "egressd.service", "start after egressd: at boot, once egressd has put every allowlist in the kernel (connect out)", 0},
		{"Unit", "Wants", "egressd.service", "starting this service starts egressd; Wants, not Requires: an egressd restart, crash or upgrade never stops or restarts this service (the kernel keeps enforcing meanwhile)", 0},
	}
	if o.GateUnit != "" {
		ls = append(ls,
			line{"Service", "ExecStartPre", "", "reset the unit's own ExecStartPre= lines: a drop-in's run after them, and the gate must run first", 0},
			line{"Service", "ExecStartPre", "+" + egressd + " wait --unit " + o.GateUnit + " --timeout " + gate.String(),
				"start gate: runs in the unit's new cgroup (a new one at every start) and waits until egressd restricts that cgroup in the kernel; the start fails after " + gate.String() + " otherwise, and nothing of the unit runs before it (connect out); + runs it as root, as reading nf_tables needs CAP_NET_ADMIN", 0})
		ls = append(ls, line{"Service", "NFTSet", ruleset.NFTSetDirective,
			"systemd puts the unit's new cgroup in egressd's NFTSet= table before any process of it runs: until egressd restricts that cgroup, the unit reaches nothing (connect out)", 255})
		for _, v := range o.OwnStartPre {
			ls = append(ls, line{"Service", "ExecStartPre", v, "the unit's own ExecStartPre=, again, after the gate: restricted from its first packet (connect out)", 0})
		}
	} else {
		ls = append(ls, line{"Service", "ExecStartPre", "+" + egressd + " wait --user " + o.User + " --timeout " + gate.String(),
			"start gate: never run unprotected; waits until egressd restricts " + o.User + " in the kernel, and the start fails after " + gate.String() + " otherwise (connect out); + runs it as root, as reading nf_tables needs CAP_NET_ADMIN", 0})
	}
	if o.User != "" {
		ls = append(ls,
			line{"Service", "User", o.User, "a user of its own, whose files it cannot modify (modify files others read)", 0},
			line{"Service", "Group", group, "a group of its own (modify files others read)", 0})
	}
	ls = append(ls,
		line{"Service", "NoNewPrivileges", "yes", "setuid binaries and file capabilities grant nothing (gain privileges)", 187},
		line{"Service", "PrivateTmp", "yes", "no shared /tmp to drop or swap files in (modify files others read)", 183},
		line{"Service", "ProtectSystem", "strict", "the whole file system is read-only but the paths below (modify files others read, run another program)", 232},
	)
	managed, plain := splitWritable(o.Writable)
	if v := o.SystemdVersion; v != 0 && v < 235 { // StateDirectory= and the others came in 235
		managed, plain = nil, o.Writable
	}
	for _, m := range managedDirs {
		if names := managed[m.key]; len(names) > 0 {
			ls = append(ls, line{"Service", m.key, strings.Join(names, " "),
				"writable: " + m.base + "/" + strings.Join(names, ", "+m.base+"/") + ", created by systemd for the service user before it starts (modify files others read)", 235})
		}
	}
	if len(plain) > 0 {
		ls = append(ls, line{"Service", "ReadWritePaths", strings.Join(plain, " "), "the only other writable paths; they must exist before the service starts (modify files others read)", 231})
	}
	ls = append(ls,
		line{"Service", "ProtectHome", "yes", "no access to /home, /root, /run/user (modify files others read)", 214},
		line{"Service", "PrivateDevices", "yes", "no raw devices, only /dev/null, zero, random… (gain privileges)", 209},
		line{"Service", "DevicePolicy", "closed", "no device nodes beyond those (gain privileges)", 0},
		line{"Service", "ProtectKernelTunables", "yes", "/proc/sys and /sys read-only (gain privileges)", 232},
		line{"Service", "ProtectKernelModules", "yes", "cannot load kernel modules (gain privileges)", 232},
		line{"Service", "ProtectKernelLogs", "yes", "cannot read or write the kernel log (gain privileges)", 244},
		line{"Service", "ProtectControlGroups", "yes", "cgroup tree read-only (gain privileges)", 232},
		line{"Service", "ProtectClock", "yes", "cannot change the clock (gain privileges)", 245},
		line{"Service", "ProtectHostname", "yes", "cannot change the host name (gain privileges)", 242},
		line{"Service", "ProtectProc", "invisible", "cannot see other users' processes (gain privileges)", 247},
		line{"Service", "ProcSubset", "pid", "sees only process entries in /proc (gain privileges)", 247},
		line{"Service", "LockPersonality", "yes", "cannot switch execution domain (run another program)", 235},
	)
	if !o.JIT {
		ls = append(ls, line{"Service", "MemoryDenyWriteExecute", "yes", "no writable+executable memory: injected code cannot run (run another program)", 231})
	}
	ls = append(ls,
		line{"Service", "RestrictRealtime", "yes", "cannot take real-time scheduling to starve the host", 231},
		line{"Service", "RestrictSUIDSGID", "yes", "cannot create setuid/setgid files (gain privileges)", 242},
		line{"Service", "RestrictNamespaces", "yes", "cannot create namespaces to escape the sandbox (gain privileges)", 233},
		line{"Service", "RemoveIPC", "yes", "its System V / POSIX IPC objects go when it stops (modify files others read)", 232},
		line{"Service", "UMask", "0077", "files it creates are its own only (modify files others read)", 0},
		line{"Service", "KeyringMode", "private", "no access to other services' kernel keys (gain privileges)", 235},
		line{"Service", "SystemCallArchitectures", "native", "no 32-bit syscall ABI to dodge the filter (gain privileges)", 209},
		line{"Service", "SystemCallFilter", "@system-service", "only the system calls ordinary services use (gain privileges, run another program)", 231},
		line{"Service", "SystemCallFilter", "~@privileged @resources", "no privileged or resource-control calls (gain privileges)", 231},
		line{"Service", "SystemCallErrorNumber", "EPERM", "a refused call fails instead of killing the service", 209},
	)
	caps := ""
	for _, l := range o.Listen {
		if l.Port < 1024 {
			caps = "CAP_NET_BIND_SERVICE"
		}
	}
	capWhy := "no capabilities at all (gain privileges)"
	if caps != "" {
		capWhy = "only binding ports below 1024, nothing else (gain privileges)"
	}
	ls = append(ls,
		line{"Service", "CapabilityBoundingSet", caps, capWhy, 0},
		line{"Service", "AmbientCapabilities", caps, "no capabilities passed to the process beyond that", 0},
		line{"Service", "RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6", "no raw, packet or netlink sockets (connect out, bind a shell)", 211},
		line{"Service", "PrivateMounts", "yes", "its mounts stay its own (gain privileges)", 239},
	)
	if o.DNSProxy {
		// Directories, not the sockets: a resolved or nscd restart unlinks
		// and recreates its socket, which drops a mount over the old one in
		// every namespace; their directories stay (RuntimeDirectoryPreserve=).
		ls = append(ls, line{"Service", "InaccessiblePaths", "-/run/systemd/resolve -/run/nscd",
			"dns: proxy sees queries to port 53 only: systemd-resolved's varlink socket (nss-resolve) and nscd's would resolve any name for the service out of its sight (a DNS tunnel; wildcard entries would allow nothing). Without them glibc falls back to DNS on port 53, which the kernel redirects to the proxy; an /etc/resolv.conf linked into /run/systemd/resolve goes too, and resolvers then ask 127.0.0.1:53, redirected alike (connect out)", 231})
		if o.KeepSystemBus {
			ls = append(ls, line{"Service", "#InaccessiblePaths", "-/run/dbus",
				"left open (--keep-system-bus): the service uses the D-Bus system bus, and through it resolved's D-Bus API (org.freedesktop.resolve1) resolves any name out of the DNS proxy's sight (a DNS tunnel); egressd check says so for this allowlist", 231})
		} else {
			ls = append(ls, line{"Service", "InaccessiblePaths", "-/run/dbus",
				"the D-Bus system bus: resolved's D-Bus API (org.freedesktop.resolve1) would resolve any name for the service out of the DNS proxy's sight (a DNS tunnel). The directory, not the socket, which a bus restart recreates. A service that needs the system bus (polkit, logind, NetworkManager): --keep-system-bus (connect out)", 231})
		}
	}
	if low, ok := o.lowPort(); ok && o.PrivateUsers {
		ls = append(ls, line{"Service", "PrivateUsers", "no", fmt.Sprintf("not yes: in a user namespace of its own, CAP_NET_BIND_SERVICE would hold only there, not in the one owning the network namespace, and binding %s would fail (EACCES)", low), 232})
	} else if o.PrivateUsers {
		ls = append(ls, line{"Service", "PrivateUsers", "yes", "sees only root and itself as users; no capabilities on the host (gain privileges)", 232})
	}
	ls = append(ls,
		line{"Service", "LimitNPROC", fmt.Sprint(nproc), "bounds fork bombs and spawned shells (run another program)", 0},
		line{"Service", "LimitFSIZE", fsize, "bounds files it can write (modify files others read)", 0},
		line{"Service", "LimitCORE", "0", "no core dumps of its memory and secrets", 0},
	)
	// SocketBind* are enforced by a BPF program: a systemd built without
	// BPF_FRAMEWORK (Debian 12's) accepts the lines and ignores them.
	denyWhy, allowWhy := "cannot listen on any port (bind a shell, listen)", "may listen on its own port only (bind a shell, listen)"
	if len(o.Listen) > 0 {
		denyWhy = "no other port (bind a shell, listen)"
	}
	switch o.BPF {
	case FeatureNo:
		denyWhy = "NOT ENFORCED by the target systemd (built -BPF_FRAMEWORK: it ignores this line); kept for one that enforces it"
		if o.AllowlistListen != nil {
			denyWhy += "; egressd enforces the allowlist's listen: instead"
		} else {
			denyWhy += "; write listen: in the service's allowlist to have egressd enforce it"
		}
		allowWhy = denyWhy
	case FeatureUnknown:
		denyWhy = "enforced only by a systemd built +BPF_FRAMEWORK (systemctl --version): " + denyWhy
		allowWhy = "enforced only by a systemd built +BPF_FRAMEWORK (systemctl --version): " + allowWhy
	}
	for _, l := range o.Listen {
		ls = append(ls, line{"Service", "SocketBindAllow", l.String(), allowWhy, 249})
	}
	ls = append(ls, line{"Service", "SocketBindDeny", "any", denyWhy, 249})
	if o.GateUnit != "" && (len(o.Listen) > 0 || o.AllowlistListen != nil) {
		// A listener is judged by the cgroup its socket was made in: a socket
		// kept in the fd store across a restart carries the old run's cgroup,
		// which is no longer restricted (docs/security.md).
		ls = append(ls, line{"Service", "FileDescriptorStoreMax", "0",
			"no file descriptor store: a socket kept across a restart keeps the old run's cgroup, which the unit's listen restriction no longer holds, and would listen on any port (bind a shell, listen)", 0})
	}
	if o.LoopbackOnly {
		ls = append(ls,
			line{"Service", "IPAddressDeny", "any", "no IP traffic at all… (connect out)", 235},
			line{"Service", "IPAddressAllow", "localhost", "…but to and from this host (connect out)", 235})
	}
	if o.AppArmor != "" {
		ls = append(ls, line{"Service", "AppArmorProfile", o.AppArmor, "confined by this AppArmor profile (run another program, modify files others read)", 210})
	}
	if o.SELinux != "" {
		ls = append(ls, line{"Service", "SELinuxContext", o.SELinux, "runs in this SELinux context (run another program, modify files others read)", 209})
	}
	return ls
}

// Keys lists every directive the generator may write, sorted (for the audit).
func Keys() []string {
	o := &Options{User: "x", Writable: []string{"/x"}, Listen: []Listen{{"tcp", 1}}, LoopbackOnly: true, PrivateUsers: true, AppArmor: "x"}
	seen := map[string]bool{}
	var out []string
	for _, l := range o.lines() {
		if !seen[l.key] {
			seen[l.key] = true
			out = append(out, l.key)
		}
	}
	sort.Strings(out)
	return out
}
