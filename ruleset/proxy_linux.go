//go:build linux

package ruleset

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

func proxySetElements(ks kernelSet, es []ProxyElement) []nftables.SetElement {
	out := make([]nftables.SetElement, len(es))
	for i, pe := range es {
		// A whole number of milliseconds, at least one: 0 means "the set's
		// default", which for these sets is forever.
		t := max(pe.Timeout.Round(time.Millisecond), time.Millisecond)
		out[i] = nftables.SetElement{Key: encode(ks, pe.UID, pe.Element, false), Timeout: t}
		if ks.Range {
			out[i].KeyEnd = encode(ks, pe.UID, pe.Element, true)
		}
	}
	return out
}

// AddProxy implements ProxyKernel. An element that is in the set already is
// deleted and added again in the same transaction, which renews its timeout
// on every kernel (a plain add renews it only on recent ones); packets see
// it there throughout. If one of those expired in the meantime (ENOENT), the
// transaction is sent again as adds only.
func (k *Netlink) AddProxy(es []ProxyElement) error {
	if len(es) == 0 {
		return nil
	}
	k.own.mu.Lock()
	defer k.own.mu.Unlock()
	err := k.addProxy(es, true)
	if errors.Is(err, unix.ENOENT) {
		err = k.addProxy(es, false)
	}
	return err
}

func (k *Netlink) addProxy(es []ProxyElement, renew bool) error {
	c, _, err := k.writer()
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	by := map[kernelSet][]ProxyElement{}
	for _, pe := range es {
		ks := proxySetOf(pe.Element)
		by[ks] = append(by[ks], pe)
	}
	for _, ks := range proxyKernelSets() {
		part := by[ks]
		if len(part) == 0 {
			continue
		}
		s := ks.nft()
		if renew {
			// Deleting needs the element to exist: add it first (a no-op if it
			// does), then delete and add it with the new timeout.
			for _, step := range []func(*nftables.Set, []nftables.SetElement) error{c.SetAddElements, c.SetDeleteElements} {
				for i := 0; i < len(part); i += chunk {
					if err := step(s, proxySetElements(ks, part[i:min(i+chunk, len(part))])); err != nil {
						k.dropIf(c)
						return fmt.Errorf("build proxy update of %s: %w", s.Name, err)
					}
				}
			}
		}
		for i := 0; i < len(part); i += chunk {
			if err := c.SetAddElements(s, proxySetElements(ks, part[i:min(i+chunk, len(part))])); err != nil {
				k.dropIf(c)
				return fmt.Errorf("build proxy update of %s: %w", s.Name, err)
			}
		}
	}
	if err := c.Flush(); err != nil {
		k.dropIf(c)
		return fmt.Errorf("add %d DNS proxy elements: %w", len(es), err)
	}
	return nil
}

// ReadProxy implements ProxyKernel.
func (k *Netlink) ReadProxy() ([]ProxyElement, error) {
	c, _, err := k.existing()
	if err != nil {
		return nil, err
	}
	return readProxy(c)
}

// readProxy reads the proxy sets; a set that does not exist (a table built
// by an older egressd) has no elements.
func readProxy(c *nftables.Conn) ([]ProxyElement, error) {
	var out []ProxyElement
	for _, ks := range proxyKernelSets() {
		raw, err := c.GetSetElements(ks.nft())
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list elements of %s: %w", ks.name(), err)
		}
		for _, r := range raw {
			if r.IntervalEnd {
				continue
			}
			end := r.KeyEnd
			if len(end) == 0 {
				end = r.Key
			}
			uid, e, err := decode(ks, r.Key, end)
			if err != nil {
				return nil, fmt.Errorf("set %s: %w", ks.name(), err)
			}
			out = append(out, ProxyElement{UID: uid, Element: e, Timeout: r.Expires})
		}
	}
	return out, nil
}
