//go:build linux

package ruleset

import (
	"fmt"
	"strings"
	"time"

	"github.com/google/nftables"
)

// Verify reads the table back through netlink and compares it with the plan:
// table, chains and hooks, every rule in order (a reject without its log rule
// before it shows as rules_differ), every set's elements and the users map.
func (k *Netlink) Verify(p Plan) ([]Finding, error) {
	c, t, err := k.existing()
	if err == ErrNoTable {
		return []Finding{{Kind: "table_missing", Object: "inet " + TableName, Detail: "the table does not exist"}}, nil
	}
	if err != nil {
		return nil, err
	}
	var fs []Finding
	add := func(kind, obj, format string, a ...any) {
		fs = append(fs, Finding{Kind: kind, Object: obj, Detail: fmt.Sprintf(format, a...)})
	}
	if t.Flags&tableFlagDormant != 0 {
		add("table_dormant", "inet "+TableName, "the table is dormant: none of its chains sees a packet")
	}

	// The plan's objects (an inconsistent plan's missing elements are
	// reported by elementFindings below) and the kernel's, in the same
	// form: chains with their hooks and the signatures of their rules.
	wt, _ := layout(p, nil)
	have, err := kernelChains(c, t)
	if err != nil {
		return nil, err
	}
	fs = append(fs, diffChains(wt.Chains, have)...)

	kset, err := c.GetSets(t)
	if err != nil {
		return nil, fmt.Errorf("list sets: %w", err)
	}
	haveSet := map[string]bool{}
	for _, s := range kset {
		haveSet[s.Name] = true
	}
	fs = append(fs, setDeclFindings(wt.Sets, kset)...)

	kernelSets, err := k.ReadSets()
	if err != nil {
		return nil, err
	}
	fs = append(fs, elementFindings(p, kernelSets, time.Now())...)
	fs = append(fs, proxyFindings(c, t, p)...)
	gotUsers, err := readUsers(c, t)
	if err != nil {
		add("users_differ", kUsers, "cannot read the users set: %v", err)
	} else {
		fs = append(fs, usersFindings(p, gotUsers)...)
	}
	for _, name := range []string{kOwners, kOpeners, kListenMarks, kUIDMarks, kDNSUsers, kProxyUsers, kAudit} {
		if !haveSet[name] {
			continue
		}
		got, err := readUIDSet(c, t, name)
		if err != nil {
			add("users_differ", name, "cannot read: %v", err)
			continue
		}
		fs = append(fs, uidSetFindings(name, p, got)...)
	}
	return append(fs, unitFindings(c, t, p)...), nil
}

// kernelChains reads the table's chains and their rules.
func kernelChains(c *nftables.Conn, t *nftables.Table) (map[string]kernelChain, error) {
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	out := map[string]kernelChain{}
	for _, ch := range chains {
		if ch.Table.Name != TableName {
			continue
		}
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return nil, fmt.Errorf("list rules of %s: %w", ch.Name, err)
		}
		got := make([]string, len(rules))
		for i, r := range rules {
			got[i] = sig(r.Exprs)
		}
		out[ch.Name] = kernelChain{ch: ch, rules: got}
	}
	return out, nil
}

// proxyFindings checks the DNS proxy's sets, whose elements the proxy writes
// as it answers (the plan does not hold them) and which every protected
// user's allow rules look up: an element keyed by a uid without dns: proxy
// in the plan, or without a timeout (the proxy gives each TTL + linger), is
// not the proxy's, and opens a destination (element_extra).
func proxyFindings(c *nftables.Conn, t *nftables.Table, p Plan) []Finding {
	proxy := map[uint32]bool{}
	for _, a := range p.Of(SubjectUser) {
		if a.Proxy {
			proxy[a.Subject.ID] = true
		}
	}
	var fs []Finding
	for _, ks := range proxyKernelSets() {
		raw, err := setElements(c, t, ks.name())
		if err != nil {
			continue // set_missing
		}
		var bad []string
		for _, r := range raw {
			if r.IntervalEnd {
				continue
			}
			end := r.KeyEnd
			if len(end) == 0 {
				end = r.Key
			}
			uid, e, err := decode(ks, r.Key, end)
			switch {
			case err != nil:
				bad = append(bad, err.Error())
			case uid == probeUID:
				// the renewal probe's: no socket has this uid
			case !proxy[uid]:
				bad = append(bad, fmt.Sprintf("uid %d %s (no dns: proxy)", uid, e))
			case r.Timeout == 0:
				bad = append(bad, fmt.Sprintf("uid %d %s (no timeout)", uid, e))
			}
		}
		if len(bad) > 0 {
			if len(bad) > maxDetails {
				bad = append(bad[:maxDetails], fmt.Sprintf("and %d more", len(bad)-maxDetails))
			}
			fs = append(fs, Finding{Kind: "element_extra", Object: ks.name(), Detail: fmt.Sprintf("not the DNS proxy's: %s", strings.Join(bad, ", "))})
		}
	}
	return fs
}
