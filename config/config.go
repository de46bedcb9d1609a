// Package config owns egressd's configuration: the main file, the allowlist
// files in its allow directory, their validation, and watching them for change.
//
// Everything here is pure except Load (which reads files) and Watcher (which
// watches them); the rest takes bytes and returns values or errors that name
// file, line and column.
package config

import (
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// DefaultPath is where the main configuration file lives unless --config says otherwise.
const DefaultPath = "/etc/egressd/egressd.yaml"

// Proto is an IP protocol number as nftables matches it (meta l4proto).
type Proto uint8

const (
	TCP Proto = 6
	UDP Proto = 17
)

func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return strconv.Itoa(int(p))
}

// Mode says whether an allowlist is enforced or only audited.
type Mode string

const (
	ModeEnforce Mode = "enforce" // would-be denies are logged, then rejected (the default)
	ModeAudit   Mode = "audit"   // would-be denies are logged as deny events with "audit": true, then accepted
)

// DNSMode says whether an allowlist's user may reach the configured resolvers.
type DNSMode string

const (
	DNSResolvers DNSMode = "resolvers"
	DNSNone      DNSMode = "none"
	// DNSProxy: the user's DNS queries (UDP and TCP port 53, any address)
	// are redirected in the kernel to egressd's proxy, which answers only
	// allowlisted names and puts their addresses in the kernel first.
	DNSProxy DNSMode = "proxy"
)

// Unlisted says what the DNS proxy does with a query for a name that no
// entry of the allowlist matches.
type Unlisted string

const (
	UnlistedRefuse Unlisted = "refuse" // answered REFUSED, logged as dns_refused (the default)
	UnlistedAnswer Unlisted = "answer" // answered from the upstream resolvers; its addresses allow nothing
)

// Wildcard is the kind of a wildcard entry.
type Wildcard uint8

const (
	WildNone Wildcard = iota // an exact name (or a literal)
	WildOne                  // *.example.com: exactly one more label
	WildAny                  // **.example.com: one or more labels
)

// DefaultProxyPort is where the DNS proxy listens (127.0.0.1 and ::1) and
// where the kernel redirects protected users' queries. Below 1024, so that
// no unprivileged process can take it while egressd is not running.
const DefaultProxyPort = 153

// LogMode selects how denied packets are logged before they are rejected.
type LogMode string

const (
	LogNFLOG  LogMode = "nflog"
	LogKernel LogMode = "kernel"
	LogNone   LogMode = "none"
)

// Pos is a position in a configuration file, 1-based.
type Pos struct {
	File string
	Line int
	Col  int
}

func (p Pos) String() string { return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col) }

// Entry is one allowlist destination: either a DNS name or a literal prefix,
// with a protocol and an inclusive port range.
type Entry struct {
	Raw      string
	Host     string       // lower-case DNS name without trailing dot (a wildcard's suffix); empty for literals
	Wild     Wildcard     // a wildcard entry: Host is the suffix after "*." or "**."
	Prefix   netip.Prefix // literal address (as /32 or /128) or CIDR; valid only when Host == ""
	Proto    Proto
	PortFrom uint16
	PortTo   uint16
	Pos      Pos
}

// IsName reports whether the entry names hosts (a name or a wildcard)
// rather than a literal prefix.
func (e Entry) IsName() bool { return e.Host != "" }

// IsWildcard reports whether the entry is a wildcard: it allows only what the
// DNS proxy answered, egressd never resolves it itself.
func (e Entry) IsWildcard() bool { return e.Wild != WildNone }

// Resolvable reports whether egressd resolves the entry's name itself.
func (e Entry) Resolvable() bool { return e.Host != "" && e.Wild == WildNone }

// Pattern is the entry's host as written: the name, or the wildcard.
func (e Entry) Pattern() string {
	switch e.Wild {
	case WildOne:
		return "*." + e.Host
	case WildAny:
		return "**." + e.Host
	}
	return e.Host
}

// MatchesName reports whether the entry's host matches a normalized name
// (lower case, no trailing dot): the same name for an exact entry, one more
// label for *.suffix, one or more for **.suffix. Never the suffix itself.
func (e Entry) MatchesName(name string) bool {
	switch e.Wild {
	case WildNone:
		return e.Host != "" && name == e.Host
	case WildOne, WildAny:
		rest, ok := strings.CutSuffix(name, "."+e.Host)
		if !ok || rest == "" {
			return false
		}
		return e.Wild == WildAny || !strings.Contains(rest, ".")
	}
	return false
}

// Key identifies an entry for de-duplication: two entries with the same key
// allow exactly the same traffic.
func (e Entry) Key() string {
	h := e.Pattern()
	if h == "" {
		h = e.Prefix.String()
	}
	return fmt.Sprintf("%s|%d|%d-%d", h, e.Proto, e.PortFrom, e.PortTo)
}

// Ports renders the port range the way the config writes it.
func (e Entry) Ports() string {
	if e.PortFrom == e.PortTo {
		return strconv.Itoa(int(e.PortFrom))
	}
	return fmt.Sprintf("%d-%d", e.PortFrom, e.PortTo)
}

// Allowlist is one file of the allow directory.
type Allowlist struct {
	Name                string // file name without .yaml or .yml
	File                string
	User                string // as written: a name or a numeric uid; "" for a unit allowlist
	UserPos             Pos
	Unit                string // unit: a systemd service or slice (docs/units.md); "" for a user allowlist
	UnitPos             Pos
	Entries             []Entry // its own, then those of its includes (positions in the list files)
	Includes            []Include
	DNS                 DNSMode
	DNSUnlisted         Unlisted // with dns: proxy: refuse (default) or answer
	Mode                Mode     // enforce (default) or audit
	AllowPrivateAnswers bool
	Tests               []PolicyTest // tests: destinations that must be allowed or denied
	// Listen is the listen: key: nil when absent (listening unrestricted),
	// empty for listen: [] (no port), else the ports its service may bind.
	Listen []ListenPort
}

// NumericUID returns the uid when User is written as a number.
func (a *Allowlist) NumericUID() (uint32, bool) {
	n, err := strconv.ParseUint(a.User, 10, 32)
	if err != nil {
		return 0, false
	}
	return uint32(n), true
}

// Names returns the distinct DNS names egressd resolves for the allowlist
// (its exact names; wildcards are answered only through the proxy), sorted.
func (a *Allowlist) Names() []string {
	seen := make(map[string]bool, len(a.Entries))
	var out []string
	for _, e := range a.Entries {
		if e.Resolvable() && !seen[e.Host] {
			seen[e.Host] = true
			out = append(out, e.Host)
		}
	}
	sort.Strings(out)
	return out
}

// Rate is a packets-per-interval limit, as nftables' limit statement takes it.
type Rate struct {
	Count uint64
	Unit  string // second, minute, hour, day
}

func (r Rate) String() string { return fmt.Sprintf("%d/%s", r.Count, r.Unit) }

// DenyLog configures the log statement placed before every reject.
type DenyLog struct {
	Mode   LogMode
	Group  uint16
	Rate   Rate
	Prefix string
	// Interval is the daemon's aggregation window for deny events (nflog
	// mode): per allowlist, uid, protocol, destination and port, the first
	// packet is an event at once, the rest one summary with a count.
	Interval time.Duration
}

// Config is the whole, validated configuration.
type Config struct {
	File                string
	Resolvers           []netip.AddrPort
	AllowDir            string
	MinTTL              time.Duration
	MaxTTL              time.Duration
	Linger              time.Duration
	StaleGrace          time.Duration
	MaxAddressesPerName int
	DenyLog             DenyLog
	OnExit              string       // keep | remove
	MetricsListen       string       // host:port or unix:/path for Prometheus metrics; empty: off
	MetricsSocketMode   os.FileMode  // the unix socket's mode (who may connect); default 0600
	MetricsSocketGroup  string       // the unix socket's group (name or gid); empty: egressd's own
	StateMode           os.FileMode  // state.json's mode; default 0644
	StateGroup          string       // state.json's group (name or gid); empty: egressd's own
	HostsFile           string       // looked up before DNS; empty: DNS only
	ListsDir            string       // shared lists that allowlists include
	DNSProxyPort        uint16       // the DNS proxy's port on 127.0.0.1 and ::1
	DNSProxyMaxAnswers  int          // the DNS proxy's live answers per allowlist (kernel elements)
	Allowlists          []*Allowlist // sorted by Name
	// Skipped lists the files in the allow directory that are not
	// allowlists (neither NAME.yaml nor NAME.yml, nor hidden): a file
	// written as allowlist but named otherwise must not go unnoticed.
	Skipped []string
	// AllowDirMissing is set when the allow directory does not exist. At start
	// that means no allowlists; on a reload the daemon refuses it (a deleted
	// directory must not silently lift every restriction).
	AllowDirMissing bool
}

// Defaults returns the configuration an empty main file yields, without resolvers
// (those default to /etc/resolv.conf, read by Load).
func Defaults() Config {
	return Config{
		AllowDir:            "allow.d",
		MinTTL:              5 * time.Second,
		MaxTTL:              10 * time.Minute,
		Linger:              5 * time.Minute,
		StaleGrace:          time.Hour,
		MaxAddressesPerName: 256,
		DenyLog:             DenyLog{Mode: LogNFLOG, Group: 100, Rate: Rate{Count: 10, Unit: "second"}, Prefix: "egressd", Interval: 10 * time.Second},
		OnExit:              "keep",
		HostsFile:           "/etc/hosts",
		ListsDir:            "lists",
		DNSProxyPort:        DefaultProxyPort,
		DNSProxyMaxAnswers:  65536,
		MetricsSocketMode:   0o600,
		StateMode:           0o644,
	}
}

// MetricsUnix is the path of the metrics socket when metrics_listen is
// unix:PATH.
func (c *Config) MetricsUnix() (string, bool) { return strings.CutPrefix(c.MetricsListen, "unix:") }

// Names returns every distinct DNS name across allowlists, sorted.
func (c *Config) Names() []string {
	seen := map[string]bool{}
	var out []string
	for _, a := range c.Allowlists {
		for _, n := range a.Names() {
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	sort.Strings(out)
	return out
}

// Error is a configuration error at a position. Fix, when set, says what
// to do (otherwise: correct the file at Pos).
type Error struct {
	Pos Pos
	Msg string
	Fix string
	// cause is the system error behind a read that failed, for Transient.
	cause error
}

func (e *Error) Error() string {
	if e.Pos.Line == 0 {
		return e.Pos.File + ": " + e.Msg
	}
	return e.Pos.String() + ": " + e.Msg
}

// Errors is every problem found in one load; the load as a whole is rejected.
type Errors []*Error

func (es Errors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "\n")
}
