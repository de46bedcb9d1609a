package config

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ListenPort is one entry of an allowlist's listen: list: a protocol and a
// port (or range) its service may bind and listen on.
type ListenPort struct {
	Proto    string // "tcp" or "udp"
	From, To uint16 // To == From for a single port
	Pos      Pos
}

// String is the entry as written in canonical form: tcp:8080 or udp:6000-6010.
func (l ListenPort) String() string {
	if l.From == l.To {
		return fmt.Sprintf("%s:%d", l.Proto, l.From)
	}
	return fmt.Sprintf("%s:%d-%d", l.Proto, l.From, l.To)
}

// Contains reports whether proto/port falls in the entry.
func (l ListenPort) Contains(proto string, port uint16) bool {
	return l.Proto == proto && l.From <= port && port <= l.To
}

// MaxListenPorts bounds the ports one allowlist's listen: list expands to (the
// kernel keeps one map element per port).
const MaxListenPorts = 4096

// ParseListen parses one listen: entry, "tcp:PORT" or "udp:PORT[-PORT]".
func ParseListen(s string) (ListenPort, error) {
	proto, ports, ok := strings.Cut(s, ":")
	if !ok {
		return ListenPort{}, fmt.Errorf("%q: expected PROTO:PORT, e.g. tcp:8080 or udp:5353", s)
	}
	if proto != "tcp" && proto != "udp" {
		return ListenPort{}, fmt.Errorf("%q: protocol %q is not tcp or udp", s, proto)
	}
	from, to, err := parsePorts(ports)
	if err != nil {
		return ListenPort{}, fmt.Errorf("%q: %v", s, err)
	}
	return ListenPort{Proto: proto, From: from, To: to}, nil
}

// listen parses the listen: key. An explicit empty list (listen: []) means the
// service may listen on no port; the caller records that the key was present.
func (p *parser) listen(v *yaml.Node, key string) []ListenPort {
	if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
		p.errorf(v, "listen: expected a list (write listen: [] to allow no listening port, or leave the key out to leave listening unrestricted)")
		return nil
	}
	out := []ListenPort{}
	total := 0
	for _, n := range p.sequence(v, key) {
		s, ok := p.scalar(n, "listen entry")
		if !ok {
			continue
		}
		l, err := ParseListen(s)
		if err != nil {
			p.errorf(n, "listen: %v", err)
			continue
		}
		l.Pos = Pos{File: p.file, Line: n.Line, Col: n.Column}
		dup := false
		for _, o := range out {
			if o.Proto == l.Proto && o.From <= l.To && l.From <= o.To {
				p.errorf(n, "listen: %s overlaps %s (line %d)", l, o, o.Pos.Line)
				dup = true
				break
			}
		}
		if dup {
			continue
		}
		total += int(l.To-l.From) + 1
		if total > MaxListenPorts {
			p.errorf(n, "listen: more than %d ports in all; list the ports the service really listens on", MaxListenPorts)
			return out
		}
		out = append(out, l)
	}
	return out
}

// ListenAllowed reports whether the allowlist lets its service listen on
// proto/port: always when it has no listen: key.
func (a *Allowlist) ListenAllowed(proto string, port uint16) (ListenPort, bool) {
	if a.Listen == nil {
		return ListenPort{}, true
	}
	for _, l := range a.Listen {
		if l.Contains(proto, port) {
			return l, true
		}
	}
	return ListenPort{}, false
}
