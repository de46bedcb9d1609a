//go:build linux

package ruleset

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/egressd/egressd/config"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

func proxySetElements(ks kernelSet, es []ProxyElement) []nftables.SetElement {
	out := make([]nftables.SetElement, len(es))
	for i, pe := range es {
		// A whole number of milliseconds, at least one: 0 means "the set's
		// default", which for these sets is forever.
		t := max(pe.Timeout.Round(time.Millisecond), time.Millisecond)
		out[i] = nftables.SetElement{Key: encode(ks, pe.UID, pe.Element, false), Timeout: t, Comment: CommentFor(pe.Name)}
		if ks.Range {
			out[i].KeyEnd = encode(ks, pe.UID, pe.Element, true)
		}
	}
	return out
}

// AddProxy implements ProxyKernel, in one transaction. Adding an element
// that is there renews its timeout on Linux 6.10 and later; on older
// kernels an element marked Renew is added (a no-op if it is there),
// deleted and added again, which renews it too, at a cost: a transaction
// that deletes waits for an RCU grace period (milliseconds).
func (k *Netlink) AddProxy(es []ProxyElement) error {
	if len(es) == 0 {
		return nil
	}
	k.own.mu.Lock()
	defer k.own.mu.Unlock()
	renews, err := k.addRenewsLocked()
	if err != nil {
		return err
	}
	return k.addProxy(es, !renews)
}

// addRenewsLocked says whether adding an element that is there renews its
// timeout, probing the kernel the first time. Called with own.mu held.
func (k *Netlink) addRenewsLocked() (bool, error) {
	if k.addRenews == 0 {
		ok, err := k.probeAddRenews()
		if err != nil {
			return false, err
		}
		k.addRenews = 2
		if ok {
			k.addRenews = 1
		}
	}
	return k.addRenews == 1, nil
}

// probeUID keys the probe's element: no socket has this uid (config
// refuses it), and readProxy skips it.
const probeUID = ^uint32(0)

// probeAddRenews adds an element (keyed by probeUID) with a 2 s timeout, adds it
// again with 3 s, and reads it back: the kernel renewed it if it says 3 s.
// The element expires by itself; nothing is deleted.
func (k *Netlink) probeAddRenews() (bool, error) {
	e := ElementFor(config.UDP, netip.MustParsePrefix("192.0.2.0/32"), 9, 9)
	for _, t := range []time.Duration{2 * time.Second, 3 * time.Second} {
		if err := k.addProxy([]ProxyElement{{UID: probeUID, Element: e, Timeout: t}}, false); err != nil {
			return false, fmt.Errorf("probe whether adding renews timeouts: %w", err)
		}
	}
	c, err := k.conn()
	if err != nil {
		return false, err
	}
	raw, err := c.GetSetElements(proxySetOf(e).nft())
	if err != nil {
		return false, fmt.Errorf("probe whether adding renews timeouts: %w", err)
	}
	for _, r := range raw {
		if uid, got, err := decode(proxySetOf(e), r.Key, r.Key); err == nil && uid == probeUID && got == e {
			return r.Timeout >= 3*time.Second, nil
		}
	}
	return false, errors.New("probe whether adding renews timeouts: the probe element is not in the set")
}

func (k *Netlink) addProxy(es []ProxyElement, deleteToRenew bool) error {
	c, _, err := k.writer()
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	type part struct{ all, renew []ProxyElement }
	by := map[kernelSet]*part{}
	for _, pe := range es {
		ks := proxySetOf(pe.Element)
		if by[ks] == nil {
			by[ks] = &part{}
		}
		by[ks].all = append(by[ks].all, pe)
		if pe.Renew && deleteToRenew {
			by[ks].renew = append(by[ks].renew, pe)
		}
	}
	for _, ks := range proxyKernelSets() {
		p := by[ks]
		if p == nil {
			continue
		}
		s := ks.nft()
		// Deleting needs the element to exist: add it first (a no-op if it
		// does), then delete it, then add everything with its timeout.
		steps := []struct {
			do func(*nftables.Set, []nftables.SetElement) error
			es []ProxyElement
		}{{c.SetAddElements, p.renew}, {c.SetDeleteElements, p.renew}, {c.SetAddElements, p.all}}
		for _, st := range steps {
			for i := 0; i < len(st.es); i += chunk {
				if err := st.do(s, proxySetElements(ks, st.es[i:min(i+chunk, len(st.es))])); err != nil {
					k.dropIf(c)
					return fmt.Errorf("build proxy update of %s: %w", s.Name, err)
				}
			}
		}
	}
	if err := c.Flush(); err != nil {
		k.dropIf(c)
		return fmt.Errorf("add %d DNS proxy elements: %w", len(es), err)
	}
	return nil
}

// DeleteProxy implements ProxyKernel, in one transaction. Deleting an
// element that is not there (it timed out) would fail the transaction: each
// is added first, with the shortest timeout (a no-op, or a renewal, if it
// is there), then deleted.
func (k *Netlink) DeleteProxy(es []ProxyElement) error {
	if len(es) == 0 {
		return nil
	}
	k.own.mu.Lock()
	defer k.own.mu.Unlock()
	c, _, err := k.writer()
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	by := map[kernelSet][]ProxyElement{}
	for _, pe := range es {
		pe.Timeout, pe.Name = time.Millisecond, ""
		by[proxySetOf(pe.Element)] = append(by[proxySetOf(pe.Element)], pe)
	}
	for _, ks := range proxyKernelSets() {
		s, part := ks.nft(), by[ks]
		for _, do := range []func(*nftables.Set, []nftables.SetElement) error{c.SetAddElements, c.SetDeleteElements} {
			for i := 0; i < len(part); i += chunk {
				if err := do(s, proxySetElements(ks, part[i:min(i+chunk, len(part))])); err != nil {
					k.dropIf(c)
					return fmt.Errorf("build proxy removal from %s: %w", s.Name, err)
				}
			}
		}
	}
	if err := c.Flush(); err != nil {
		k.dropIf(c)
		return fmt.Errorf("delete %d DNS proxy elements: %w", len(es), err)
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
			if uid == probeUID {
				continue
			}
			out = append(out, ProxyElement{UID: uid, Element: e, Timeout: r.Expires, Name: r.Comment})
		}
	}
	return out, nil
}
