package config

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// parser collects errors for one file so that an operator sees all of them at once.
type parser struct {
	file string
	errs Errors
}

func (p *parser) errorf(n *yaml.Node, format string, args ...any) {
	pos := Pos{File: p.file}
	if n != nil {
		pos.Line, pos.Col = n.Line, n.Column
	}
	p.errs = append(p.errs, &Error{Pos: pos, Msg: fmt.Sprintf(format, args...)})
}

// document decodes data and returns its top-level mapping, or nil for an empty file.
func (p *parser) document(data []byte) *yaml.Node {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		p.errs = append(p.errs, yamlError(p.file, data, err))
		return nil
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		p.errorf(root, "expected a mapping of keys to values at the top level")
		return nil
	}
	return root
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// unquotedBracketRE is a list item starting with '[' (an IPv6 entry), which
// YAML reads as the start of a list.
var unquotedBracketRE = regexp.MustCompile(`^\s*-\s+\[`)

// unquotedIndicatorRE is a list item starting with a YAML indicator that an
// allowlist entry may start with: '*' (a wildcard), '&' or '!'.
var unquotedIndicatorRE = regexp.MustCompile(`^\s*-\s+([*&!])`)

// yamlError turns the YAML library's syntax error into one that names the
// file, with a hint for the mistakes people make in allowlists.
func yamlError(file string, data []byte, err error) *Error {
	msg := err.Error()
	pos := Pos{File: file}
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		pos.Line, _ = strconv.Atoi(m[1])
		pos.Col = 1
		msg = m[2]
	}
	msg = "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")
	lines := strings.Split(string(data), "\n")
	// A tab in the indentation: YAML indents with spaces only.
	for i, line := range lines {
		if ws := line[:len(line)-len(strings.TrimLeft(line, " \t"))]; strings.Contains(ws, "\t") && strings.TrimSpace(line) != "" {
			return &Error{Pos: Pos{File: file, Line: i + 1, Col: strings.Index(line, "\t") + 1},
				Msg: "a tab indents this line: YAML indents with spaces only", Fix: "replace the tab with spaces"}
		}
	}
	// An entry that starts with '*' (a wildcard), '&' or '!': YAML reads an
	// alias, an anchor or a tag. The error's own line first.
	order := make([]int, 0, len(lines))
	if pos.Line > 0 && pos.Line <= len(lines) {
		order = append(order, pos.Line-1)
	}
	for i := range lines {
		order = append(order, i)
	}
	for _, i := range order {
		if m := unquotedIndicatorRE.FindStringSubmatchIndex(lines[i]); m != nil {
			item := strings.TrimSpace(lines[i][m[2]:])
			what := map[byte]string{'*': "an alias", '&': "an anchor", '!': "a tag"}[lines[i][m[2]]]
			return &Error{Pos: Pos{File: file, Line: i + 1, Col: m[2] + 1},
				Msg: fmt.Sprintf("%s; an entry that starts with %q must be quoted, or YAML reads it as %s", msg, lines[i][m[2]], what),
				Fix: fmt.Sprintf("quote it: - %q", item)}
		}
	}
	for i, line := range lines {
		if unquotedBracketRE.MatchString(line) {
			item := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "-"))
			pos.Line, pos.Col = i+1, strings.Index(line, "[")+1
			return &Error{Pos: pos, Msg: fmt.Sprintf("%s; an entry that starts with '[' must be quoted, or YAML reads it as a list: - %q", msg, item)}
		}
	}
	if strings.Contains(msg, "did not find expected key") || strings.Contains(msg, "did not find expected '-' indicator") {
		msg += " (is a line indented differently from the one above it? every \"- \" of a list must start in the same column)"
	}
	return &Error{Pos: pos, Msg: msg}
}

// fields walks a mapping, rejecting unknown and repeated keys, and calls fn for
// each known one.
func (p *parser) fields(m *yaml.Node, known []string, fn func(key string, k, v *yaml.Node)) {
	seen := map[string]bool{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.errorf(k, "keys must be plain strings")
			continue
		}
		ok := false
		for _, kn := range known {
			if k.Value == kn {
				ok = true
			}
		}
		if !ok {
			if near := nearest(k.Value, known); near != "" {
				p.errorf(k, "unknown key %q: did you mean %q? (known keys: %s)", k.Value, near, strings.Join(known, ", "))
			} else {
				p.errorf(k, "unknown key %q (known keys: %s)", k.Value, strings.Join(known, ", "))
			}
			continue
		}
		if seen[k.Value] {
			p.errorf(k, "key %q appears twice", k.Value)
			continue
		}
		seen[k.Value] = true
		fn(k.Value, k, v)
	}
}

// nearest is the known key within two edits of key (a typo), or "".
func nearest(key string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(strings.ToLower(key), k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

func (p *parser) scalar(v *yaml.Node, key string) (string, bool) {
	if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
		p.errorf(v, "%s: expected a single value", key)
		return "", false
	}
	return v.Value, true
}

func (p *parser) duration(v *yaml.Node, key string, min time.Duration) (time.Duration, bool) {
	s, ok := p.scalar(v, key)
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		p.errorf(v, "%s: %q is not a duration (examples: 30s, 5m, 1h)", key, s)
		return 0, false
	}
	if d < min {
		p.errorf(v, "%s: %s is below the minimum of %s", key, d, min)
		return 0, false
	}
	return d, true
}

func (p *parser) integer(v *yaml.Node, key string, min, max int64) (int64, bool) {
	s, ok := p.scalar(v, key)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < min || n > max {
		p.errorf(v, "%s: %q is not a whole number from %d to %d", key, s, min, max)
		return 0, false
	}
	return n, true
}

func (p *parser) boolean(v *yaml.Node, key string) (bool, bool) {
	s, ok := p.scalar(v, key)
	if !ok {
		return false, false
	}
	switch s {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	p.errorf(v, "%s: %q is not true or false", key, s)
	return false, false
}

func (p *parser) sequence(v *yaml.Node, key string) []*yaml.Node {
	if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
		return nil
	}
	if v.Kind != yaml.SequenceNode {
		p.errorf(v, "%s: expected a list", key)
		return nil
	}
	return v.Content
}

var mainKeys = []string{"resolvers", "allow_dir", "min_ttl", "max_ttl", "linger", "stale_grace",
	"max_addresses_per_name", "deny_log", "on_exit", "metrics_listen",
	"metrics_socket_mode", "metrics_socket_group", "state_mode", "state_group", "hosts_file", "lists_dir", "dns_proxy_port", "dns_proxy_max_answers"}

// MainKeys returns the keys of the main file (for documentation checks).
func MainKeys() []string { return append([]string(nil), mainKeys...) }

// ParseMain parses the main configuration file. Resolvers stay empty when the
// file does not name any; Load fills them from /etc/resolv.conf.
// AllowDir is made absolute relative to the file's directory.
func ParseMain(file string, data []byte) (*Config, error) {
	c := Defaults()
	c.File = file
	p := &parser{file: file}
	var socketKey, socketGroupKey, stateGroupKey *yaml.Node
	if root := p.document(data); root != nil {
		p.fields(root, mainKeys, func(key string, k, v *yaml.Node) {
			switch key {
			case "resolvers":
				for _, n := range p.sequence(v, key) {
					s, ok := p.scalar(n, key)
					if !ok {
						continue
					}
					ap, err := ParseResolver(s)
					if err != nil {
						p.errorf(n, "resolvers: %v", err)
						continue
					}
					c.Resolvers = append(c.Resolvers, ap)
				}
			case "allow_dir":
				if s, ok := p.nonEmpty(v, key); ok {
					c.AllowDir = s
				}
			case "min_ttl":
				if d, ok := p.duration(v, key, 0); ok {
					c.MinTTL = d
				}
			case "max_ttl":
				if d, ok := p.duration(v, key, time.Second); ok {
					c.MaxTTL = d
				}
			case "linger":
				if d, ok := p.duration(v, key, 0); ok {
					c.Linger = d
				}
			case "stale_grace":
				if d, ok := p.duration(v, key, 0); ok {
					c.StaleGrace = d
				}
			case "max_addresses_per_name":
				if n, ok := p.integer(v, key, 1, 65536); ok {
					c.MaxAddressesPerName = int(n)
				}
			case "deny_log":
				p.denyLog(v, &c.DenyLog)
			case "metrics_listen":
				if s, ok := p.scalar(v, key); ok {
					if path, unix := strings.CutPrefix(s, "unix:"); unix {
						if !filepath.IsAbs(path) || filepath.Clean(path) != path || path == "/" {
							p.errorf(v, "metrics_listen: %q: the socket's path must be absolute and clean (for example unix:/run/egressd/metrics.sock)", s)
							return
						}
					} else if _, err := netip.ParseAddrPort(s); err != nil && !hostPortRE.MatchString(s) {
						p.errorf(v, "metrics_listen: %q is not host:port (for example 127.0.0.1:9464) or unix:PATH", s)
						return
					}
					c.MetricsListen = s
				}
			case "metrics_socket_mode":
				if m, ok := p.mode(v, key); ok {
					c.MetricsSocketMode = m
					socketKey = k
				}
			case "metrics_socket_group":
				if s, ok := p.nonEmpty(v, key); ok {
					c.MetricsSocketGroup = s
					socketKey, socketGroupKey = k, k
				}
			case "state_mode":
				if m, ok := p.mode(v, key); ok {
					if m&0o022 != 0 {
						p.errorf(v, "state_mode: %s lets other users write the state file (egressd check would refuse it); for example 0640", v.Value)
						return
					}
					c.StateMode = m
				}
			case "state_group":
				if s, ok := p.nonEmpty(v, key); ok {
					c.StateGroup = s
					stateGroupKey = k
				}
			case "hosts_file":
				if s, ok := p.scalar(v, key); ok {
					if s != "" && !filepath.IsAbs(s) {
						p.errorf(v, "hosts_file: %q must be an absolute path (or empty for DNS only)", s)
						return
					}
					c.HostsFile = s
				}
			case "lists_dir":
				if s, ok := p.nonEmpty(v, key); ok {
					c.ListsDir = s
				}
			case "dns_proxy_port":
				if n, ok := p.integer(v, key, 1, 65535); ok {
					if n == 53 {
						p.errorf(v, "dns_proxy_port: 53 is the port the kernel redirects from; choose another (default %d)", DefaultProxyPort)
						return
					}
					c.DNSProxyPort = uint16(n)
				}
			case "dns_proxy_max_answers":
				if n, ok := p.integer(v, key, 16, 1<<24); ok {
					c.DNSProxyMaxAnswers = int(n)
				}
			case "on_exit":
				if s, ok := p.scalar(v, key); ok {
					if s != "keep" && s != "remove" {
						p.errorf(v, "on_exit: %q is not keep or remove", s)
					}
					c.OnExit = s
				}
			}
		})
	}
	if _, unix := c.MetricsUnix(); socketKey != nil && !unix {
		// Nothing lies: a mode on a TCP port would protect nothing.
		p.errorf(socketKey, "%s: applies to a unix socket only (metrics_listen: unix:/run/egressd/metrics.sock); "+
			"a TCP port on loopback is open to every local user", socketKey.Value)
	}
	// A group that the mode shuts out would be a promise nobody keeps.
	if socketGroupKey != nil && c.MetricsSocketMode&0o020 == 0 {
		p.errorf(socketGroupKey, "metrics_socket_group: the group cannot connect with metrics_socket_mode %04o (connecting needs write); for example \"0660\"", c.MetricsSocketMode)
	}
	if stateGroupKey != nil && c.StateMode&0o040 == 0 {
		p.errorf(stateGroupKey, "state_group: the group cannot read the state file with state_mode %04o; for example \"0640\"", c.StateMode)
	}
	if c.MinTTL > c.MaxTTL {
		p.errs = append(p.errs, &Error{Pos: Pos{File: file}, Msg: fmt.Sprintf("min_ttl (%s) is above max_ttl (%s)", c.MinTTL, c.MaxTTL)})
	}
	if !filepath.IsAbs(c.AllowDir) {
		c.AllowDir = filepath.Join(filepath.Dir(file), c.AllowDir)
	}
	if !filepath.IsAbs(c.ListsDir) {
		c.ListsDir = filepath.Join(filepath.Dir(file), c.ListsDir)
	}
	if len(p.errs) > 0 {
		return nil, p.errs
	}
	return &c, nil
}

var hostPortRE = regexp.MustCompile(`^[A-Za-z0-9.-]*:[0-9]{1,5}$`)

var rateRE = regexp.MustCompile(`^([0-9]+)/(second|minute|hour|day)$`)

func (p *parser) denyLog(v *yaml.Node, d *DenyLog) {
	if v.Kind != yaml.MappingNode {
		p.errorf(v, "deny_log: expected a mapping with mode, group, rate, prefix, interval")
		return
	}
	p.fields(v, []string{"mode", "group", "rate", "prefix", "interval"}, func(key string, k, v *yaml.Node) {
		switch key {
		case "mode":
			if s, ok := p.scalar(v, "deny_log.mode"); ok {
				switch LogMode(s) {
				case LogNFLOG, LogKernel, LogNone:
					d.Mode = LogMode(s)
				default:
					p.errorf(v, "deny_log.mode: %q is not nflog, kernel or none", s)
				}
			}
		case "group":
			if n, ok := p.integer(v, "deny_log.group", 0, 65535); ok {
				d.Group = uint16(n)
			}
		case "rate":
			if s, ok := p.scalar(v, "deny_log.rate"); ok {
				m := rateRE.FindStringSubmatch(s)
				n := uint64(0)
				if m != nil {
					n, _ = strconv.ParseUint(m[1], 10, 32)
				}
				if m == nil || n == 0 {
					p.errorf(v, "deny_log.rate: %q is not COUNT/UNIT with COUNT ≥ 1 and UNIT second, minute, hour or day", s)
					return
				}
				d.Rate = Rate{Count: n, Unit: m[2]}
			}
		case "interval":
			if iv, ok := p.duration(v, "deny_log.interval", time.Second); ok {
				d.Interval = iv
			}
		case "prefix":
			if s, ok := p.scalar(v, "deny_log.prefix"); ok {
				if !prefixRE.MatchString(s) {
					p.errorf(v, "deny_log.prefix: %q must be 1 to 32 characters of letters, digits, '-', '_' or '.'", s)
					return
				}
				d.Prefix = s
			}
		}
	})
}

var prefixRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,32}$`)

// ParseResolver parses "ADDR", "ADDR:PORT" or "[V6]:PORT"; the port defaults to 53.
func ParseResolver(s string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return netip.AddrPortFrom(a.Unmap(), 53), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Addr().Zone() != "" || ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("%q is not an address or address:port (write IPv6 as [2001:db8::53]:53)", s)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

var allowKeys = []string{"user", "unit", "allow", "include", "dns", "dns_unlisted", "mode", "allow_private_answers", "tests", "listen"}

// NameRE is what an allowlist's name (its file name without .yaml) may be:
// it becomes part of nftables chain and set names and of log prefixes.
var NameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$`)

// ParseAllowlist parses one allowlist file. name is the file name without .yaml.
func ParseAllowlist(file, name string, data []byte) (*Allowlist, error) {
	p := &parser{file: file}
	a := &Allowlist{Name: name, File: file, DNS: DNSResolvers, DNSUnlisted: UnlistedRefuse, Mode: ModeEnforce}
	var unlistedAt *yaml.Node
	if !NameRE.MatchString(name) {
		p.errs = append(p.errs, &Error{Pos: Pos{File: file}, Msg: fmt.Sprintf("allowlist name %q (the file name without .yaml) must be 1 to 48 letters, digits, '-' or '_', starting with a letter or digit", name)})
	}
	root := p.document(data)
	if root == nil && len(p.errs) == 0 {
		p.errs = append(p.errs, &Error{Pos: Pos{File: file}, Msg: "empty allowlist: it needs at least \"user:\" (write allow: [] to allow nothing)"})
	}
	haveUser := false
	if root != nil {
		p.fields(root, allowKeys, func(key string, k, v *yaml.Node) {
			switch key {
			case "user":
				if s, ok := p.scalar(v, key); ok {
					if err := validUser(s); err != nil {
						p.errorf(v, "user: %v", err)
						return
					}
					a.User, a.UserPos, haveUser = s, Pos{File: file, Line: v.Line, Col: v.Column}, true
				}
			case "unit":
				if s, ok := p.scalar(v, key); ok {
					if err := ValidUnit(s); err != nil {
						p.errorf(v, "unit: %v", err)
						return
					}
					a.Unit, a.UnitPos = s, Pos{File: file, Line: v.Line, Col: v.Column}
				}
			case "allow":
				a.Entries = p.entries(v, key)
			case "include":
				a.Includes = p.includes(v, key)
			case "tests":
				a.Tests = p.tests(v)
			case "dns":
				if s, ok := p.oneOf(v, key, string(DNSResolvers), string(DNSNone), string(DNSProxy)); ok {
					a.DNS = DNSMode(s)
				}
			case "dns_unlisted":
				if s, ok := p.oneOf(v, key, string(UnlistedRefuse), string(UnlistedAnswer)); ok {
					a.DNSUnlisted, unlistedAt = Unlisted(s), v
				}
			case "mode":
				if s, ok := p.oneOf(v, key, string(ModeEnforce), string(ModeAudit)); ok {
					a.Mode = Mode(s)
				}
			case "allow_private_answers":
				if b, ok := p.boolean(v, key); ok {
					a.AllowPrivateAnswers = b
				}
			case "listen":
				if l := p.listen(v, key); l != nil {
					a.Listen = l
				}
			}
		})
		if !haveUser && a.Unit == "" && len(p.errs) == 0 {
			p.errorf(root, "missing required key \"user\" (the service user: a name or a numeric uid) or \"unit\" (a systemd unit)")
		}
		if haveUser && a.Unit != "" {
			p.errs = append(p.errs, &Error{Pos: a.UnitPos, Msg: fmt.Sprintf("unit: an allowlist restricts a user or a unit, not both (user: %s is on line %d); write two allowlists", a.User, a.UserPos.Line)})
		}
		if a.Unit != "" && a.DNS == DNSProxy {
			p.errs = append(p.errs, &Error{Pos: a.UnitPos, Msg: "dns: proxy is not available for a unit allowlist yet: the kernel redirects DNS queries by the socket's uid; use dns: resolvers, or a user allowlist"})
		}
		if unlistedAt != nil && a.DNS != DNSProxy {
			p.errorf(unlistedAt, "dns_unlisted: applies only with dns: proxy (this allowlist has dns: %s)", a.DNS)
		}
		if a.DNS != DNSProxy {
			for _, e := range a.Entries {
				if e.IsWildcard() {
					p.errs = append(p.errs, wildcardError(e, a))
				}
			}
		}
	}
	if len(p.errs) > 0 {
		return nil, p.errs
	}
	return a, nil
}

// runTogether is a plain scalar that YAML folded from two list items,
// the second mis-indented ("a:443\n   - b:443" reads as "a:443 - b:443"):
// `\s-\s` anywhere, checked by hand (a regexp per entry was a fifth of
// the parse of 10,000 entries).
func runTogether(s string) bool {
	for i := 1; i+1 < len(s); i++ {
		if s[i] == '-' && isSpace(s[i-1]) && isSpace(s[i+1]) {
			return true
		}
	}
	return false
}

// isSpace is regexp's \s.
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r' }

var userRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$`)

func validUser(s string) error {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		if n == 0 {
			return fmt.Errorf("uid 0 (root) cannot be restricted: egressd itself and the system need it")
		}
		if n == 4294967295 {
			return fmt.Errorf("uid 4294967295 is not a valid uid")
		}
		return nil
	}
	if s == "root" {
		return fmt.Errorf("root cannot be restricted: egressd itself and the system need it")
	}
	if !userRE.MatchString(s) {
		return fmt.Errorf("%q is neither a numeric uid nor a valid user name", s)
	}
	return nil
}

// ParseEntry parses one allow entry: HOST:PORT[-PORT][/tcp|/udp], where HOST is
// a DNS name, an IPv4 address or CIDR, or a bracketed IPv6 address or CIDR.
func ParseEntry(s string) (Entry, error) {
	e := Entry{Raw: s, Proto: TCP}
	rest := strings.TrimSpace(s)
	if rest != s || rest == "" {
		return e, fmt.Errorf("%q: empty or surrounded by spaces", s)
	}
	if strings.ContainsAny(rest, " \t") {
		return e, fmt.Errorf("%q: contains spaces; write one HOST:PORT per list item", s)
	}
	if i := strings.LastIndexByte(rest, '/'); i >= 0 {
		switch strings.ToLower(rest[i+1:]) {
		case "tcp":
			rest = rest[:i]
		case "udp":
			e.Proto = UDP
			rest = rest[:i]
		}
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return e, fmt.Errorf("%q: missing :PORT (write host:443, or host:8000-8100 for a range)", s)
	}
	host, port := rest[:i], rest[i+1:]
	from, to, err := parsePorts(port)
	if err != nil {
		return e, fmt.Errorf("%q: %v", s, err)
	}
	e.PortFrom, e.PortTo = from, to
	bracketed := strings.HasPrefix(host, "[")
	if bracketed {
		if !strings.HasSuffix(host, "]") {
			return e, fmt.Errorf("%q: missing ']' after the IPv6 address", s)
		}
		host = host[1 : len(host)-1]
	} else if strings.Contains(host, ":") {
		return e, fmt.Errorf("%q: an IPv6 address must be written in brackets, as [2001:db8::1]:443", s)
	}
	if strings.Contains(host, "/") {
		pfx, err := netip.ParsePrefix(host)
		if err != nil || pfx.Addr().Zone() != "" {
			return e, fmt.Errorf("%q: %q is not a CIDR prefix", s, host)
		}
		if pfx.Addr().Is4In6() {
			return e, fmt.Errorf("%q: write IPv4-mapped prefixes as plain IPv4", s)
		}
		if pfx.Masked() != pfx {
			return e, fmt.Errorf("%q: %s has host bits set; did you mean %s?", s, pfx, pfx.Masked())
		}
		if bracketed != pfx.Addr().Is6() {
			return e, fmt.Errorf("%q: only IPv6 goes in brackets", s)
		}
		e.Prefix = pfx
		return e, nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return e, fmt.Errorf("%q: zoned IPv6 addresses are not supported", s)
		}
		a = a.Unmap()
		if bracketed != a.Is6() {
			return e, fmt.Errorf("%q: only IPv6 goes in brackets", s)
		}
		e.Prefix = netip.PrefixFrom(a, a.BitLen())
		return e, nil
	}
	if bracketed {
		return e, fmt.Errorf("%q: %q is not an IPv6 address", s, host)
	}
	name, wild, err := parseHost(host)
	if err != nil {
		return e, fmt.Errorf("%q: %v", s, err)
	}
	e.Host, e.Wild = name, wild
	return e, nil
}

func parsePorts(s string) (uint16, uint16, error) {
	a, b, isRange := strings.Cut(s, "-")
	from, err := parsePort(a)
	if err != nil {
		return 0, 0, err
	}
	to := from
	if isRange {
		if to, err = parsePort(b); err != nil {
			return 0, 0, err
		}
		if to < from {
			return 0, 0, fmt.Errorf("port range %s runs backwards", s)
		}
	}
	return from, to, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	return uint16(n), nil
}

// validLabel is `^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$`, checked by hand:
// every label of every entry goes through it.
func validLabel(l string) bool {
	if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// wildcardError is a wildcard entry in an allowlist without dns: proxy.
func wildcardError(e Entry, a *Allowlist) *Error {
	return &Error{Pos: e.Pos, Msg: fmt.Sprintf("%q: a wildcard entry needs dns: proxy in allowlist %s (egressd learns the names a wildcard allows only by answering the service's DNS queries); add \"dns: proxy\" to %s, or list each name", e.Raw, a.Name, a.File)}
}

// parseHost parses an entry's host: a name, "*.suffix" (one label) or
// "**.suffix" (any depth).
func parseHost(h string) (string, Wildcard, error) {
	w := WildNone
	switch {
	case strings.HasPrefix(h, "**."):
		w, h = WildAny, h[3:]
	case strings.HasPrefix(h, "*."):
		w, h = WildOne, h[2:]
	}
	if strings.Contains(h, "*") {
		return "", w, fmt.Errorf("%q: a wildcard is written *.example.com (one label) or **.example.com (any depth), the star alone and first", h)
	}
	n, err := normalizeName(h)
	if err != nil {
		return "", w, err
	}
	if w != WildNone && !strings.Contains(n, ".") {
		return "", w, fmt.Errorf("a wildcard over a top-level domain (%q) allows too much; name at least two labels", n)
	}
	return n, w, nil
}

// normalizeName lower-cases a DNS name, strips one trailing dot and checks its syntax.
func normalizeName(h string) (string, error) {
	n := strings.TrimSuffix(strings.ToLower(h), ".")
	if n == "" || len(n) > 253 {
		return "", fmt.Errorf("%q is not a valid host name", h)
	}
	labels := strings.Split(n, ".")
	for _, l := range labels {
		if !validLabel(l) {
			return "", fmt.Errorf("%q is not a valid host name (label %q)", h, l)
		}
	}
	if _, err := strconv.Atoi(labels[len(labels)-1]); err == nil {
		return "", fmt.Errorf("%q is neither an IP address nor a host name", h)
	}
	return n, nil
}

// oneOf reads a scalar that must be one of the words given.
func (p *parser) oneOf(v *yaml.Node, key string, words ...string) (string, bool) {
	s, ok := p.scalar(v, key)
	if !ok {
		return "", false
	}
	for _, w := range words {
		if s == w {
			return s, true
		}
	}
	p.errorf(v, "%s: %q is not %s", key, s, strings.Join(words, " or "))
	return "", false
}

// nonEmpty reads a scalar that must not be empty.
// mode parses a file mode written in octal ("0640", 0640 or 0o640).
func (p *parser) mode(v *yaml.Node, key string) (os.FileMode, bool) {
	s, ok := p.scalar(v, key)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(s, "0o"), 8, 32)
	if err != nil || n > 0o777 || s == "" {
		p.errorf(v, "%s: %q is not a file mode in octal (for example \"0640\")", key, s)
		return 0, false
	}
	return os.FileMode(n), true
}

func (p *parser) nonEmpty(v *yaml.Node, key string) (string, bool) {
	s, ok := p.scalar(v, key)
	if ok && s == "" {
		p.errorf(v, "%s: must not be empty", key)
		return "", false
	}
	return s, ok
}
