package resolver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"reflect"
	"sort"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// Where an answer came from, as check reports it.
const (
	SourceHosts = "hosts"
	SourceDNS   = "dns"
)

// HostsTable maps a lower-case name (no trailing dot) to its addresses in
// file order, across every line that names it.
type HostsTable map[string][]netip.Addr

// ParseHosts reads a hosts(5) file the way glibc's files module does: an
// address, then the canonical name and aliases, separated by blanks; '#'
// starts a comment anywhere; lines whose address does not parse are
// skipped. Names are case-insensitive. Zoned IPv6 addresses (fe80::1%eth0)
// are skipped: nftables matches an address without its zone.
func ParseHosts(data []byte) HostsTable {
	t := HostsTable{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		a, err := netip.ParseAddr(f[0])
		if err != nil || a.Zone() != "" {
			continue
		}
		a = a.Unmap()
		for _, n := range f[1:] {
			n = strings.TrimSuffix(strings.ToLower(n), ".")
			if n == "" || contains(t[n], a) {
				continue
			}
			t[n] = append(t[n], a)
		}
	}
	return t
}

func contains(l []netip.Addr, a netip.Addr) bool {
	for _, b := range l {
		if a == b {
			return true
		}
	}
	return false
}

// Lookup returns the name's addresses of one type (A or AAAA) and whether
// the file names it at all.
func (t HostsTable) Lookup(name string, qtype uint16) ([]netip.Addr, bool) {
	all, ok := t[strings.TrimSuffix(strings.ToLower(name), ".")]
	if !ok {
		return nil, false
	}
	var out []netip.Addr
	for _, a := range all {
		if a.Is4() == (qtype == dns.TypeA) {
			out = append(out, a)
		}
	}
	return out, true
}

// Hosts is a hosts file, re-read on Load; safe for concurrent use (queries
// run in many goroutines, Load in the controller's).
type Hosts struct {
	mu    sync.RWMutex
	path  string
	table HostsTable
	read  func(string) ([]byte, error)
}

// NewHosts reads path ("" for none: every lookup goes to DNS). A missing
// file is an empty one, as for the system resolver.
func NewHosts(path string) (*Hosts, error) { return NewHostsWith(path, os.ReadFile) }

// NewHostsWith is NewHosts reading through read: the daemon passes its
// trusted reader, so that a hosts file another user could change (and so
// point an allowlisted name anywhere, unfiltered) is refused.
func NewHostsWith(path string, read func(string) ([]byte, error)) (*Hosts, error) {
	h := &Hosts{path: path, table: HostsTable{}, read: read}
	_, err := h.Load(path)
	return h, err
}

// Path is the file in use.
func (h *Hosts) Path() string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.path
}

// Load (re)reads path and returns the names whose addresses changed. On a
// read error other than "missing" the previous table stays: a transient
// failure must not send hosts names to DNS.
func (h *Hosts) Load(path string) ([]string, error) {
	t := HostsTable{}
	if path != "" {
		read := h.read
		if read == nil {
			read = os.ReadFile
		}
		data, err := read(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, err
		default:
			t = ParseHosts(data)
		}
	}
	h.mu.Lock()
	old := h.table
	h.path, h.table = path, t
	h.mu.Unlock()
	var changed []string
	for n, a := range t {
		if !reflect.DeepEqual(old[n], a) {
			changed = append(changed, n)
		}
	}
	for n := range old {
		if _, ok := t[n]; !ok {
			changed = append(changed, n)
		}
	}
	sort.Strings(changed)
	return changed, nil
}

// Lookup is HostsTable.Lookup on the current table.
func (h *Hosts) Lookup(name string, qtype uint16) ([]netip.Addr, bool) {
	if h == nil {
		return nil, false
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.table.Lookup(name, qtype)
}

// Has reports whether the hosts file gives name the address a.
func (h *Hosts) Has(name string, a netip.Addr) bool {
	if h == nil {
		return false
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	return contains(h.table[strings.TrimSuffix(strings.ToLower(name), ".")], a.Unmap())
}

// Names returns every name the file holds, sorted.
func (h *Hosts) Names() []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]string, 0, len(h.table))
	for n := range h.table {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// HostsFirst answers from the hosts file when it names the name, as
// "hosts: files dns" does, and asks Next otherwise. A name in the file is
// answered for both types from the file alone (an IPv4-only entry gives an
// empty AAAA answer, not a DNS lookup), as getaddrinfo does: the service
// connects to what the file says, so that is what must be allowed.
type HostsFirst struct {
	Hosts *Hosts
	Next  Querier
}

// Query implements Querier. Answers carry Source.
func (q *HostsFirst) Query(ctx context.Context, name string, qtype uint16) (Result, error) {
	if addrs, ok := q.Hosts.Lookup(name, qtype); ok {
		// TTL 0: the cache raises it to min_ttl; the file watch refreshes sooner.
		return Result{Addrs: addrs, Negative: len(addrs) == 0, Source: SourceHosts}, nil
	}
	r, err := q.Next.Query(ctx, name, qtype)
	if err == nil && r.Source == "" {
		r.Source = SourceDNS
	}
	return r, err
}

// QueryBoth implements BothQuerier: from the hosts file alone when it
// names the name, else from Next (both types at once when Next can).
func (q *HostsFirst) QueryBoth(ctx context.Context, name string) [2]Lookup {
	var out [2]Lookup
	if _, ok := q.Hosts.Lookup(name, dns.TypeA); ok {
		for i, t := range bothTypes {
			out[i].Res, out[i].Err = q.Query(ctx, name, t)
		}
		return out
	}
	if b, ok := q.Next.(BothQuerier); ok {
		out = b.QueryBoth(ctx, name)
	} else {
		for i, t := range bothTypes {
			out[i].Res, out[i].Err = q.Next.Query(ctx, name, t)
		}
	}
	for i := range out {
		if out[i].Err == nil && out[i].Res.Source == "" {
			out[i].Res.Source = SourceDNS
		}
	}
	return out
}
