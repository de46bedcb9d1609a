package controller

import (
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
)

// nameIndex maps addresses back to the names that resolved to them, now or
// earlier, so that a deny event can say "api.example.test, wrong port" rather
// than only an address. It is bounded: past maxEntries it starts over from
// the names' current addresses.
type nameIndex struct {
	mu    sync.RWMutex
	names map[netip.Addr][]string
}

const maxIndexEntries = 1 << 18

func (x *nameIndex) add(a netip.Addr, name string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.names == nil || len(x.names) >= maxIndexEntries {
		x.names = map[netip.Addr][]string{}
	}
	for _, n := range x.names[a] {
		if n == name {
			return
		}
	}
	ns := append(append([]string(nil), x.names[a]...), name)
	sort.Strings(ns)
	x.names[a] = ns
}

func (x *nameIndex) lookup(a netip.Addr) []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.names[a.Unmap()]
}

// NamesFor returns the names that resolve, or resolved, to a; safe for
// concurrent use (the deny event loop calls it).
func (c *Controller) NamesFor(a netip.Addr) []string { return c.index.lookup(a) }

// User returns the user an allowlist names, as written; safe for concurrent use.
func (c *Controller) User(allowlist string) (string, bool) {
	m := c.allowUsers.Load()
	if m == nil {
		return "", false
	}
	u, ok := (*m)[allowlist]
	return u, ok
}

// AllowlistOf returns the allowlist that restricts uid; safe for concurrent use.
func (c *Controller) AllowlistOf(uid uint32) (string, bool) {
	m := c.allowByUID.Load()
	if m == nil {
		return "", false
	}
	n, ok := (*m)[uid]
	return n, ok
}

type usersByAllowlist = atomic.Pointer[map[string]string]
