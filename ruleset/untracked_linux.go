//go:build linux

package ruleset

import (
	"fmt"

	"github.com/google/nftables"
)

// Untracked implements UntrackedReader: it reads every other table's chains
// that can exempt packets from connection tracking and returns the rules
// that do so for more than TCP. It only reads.
func (k *Netlink) Untracked() ([]Untracked, error) {
	c, err := k.conn()
	if err != nil {
		return nil, err
	}
	chains, err := c.ListChains()
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	var out []Untracked
	for _, ch := range chains {
		if ch.Table.Family == nftables.TableFamilyINet && (ch.Table.Name == TableName || ch.Table.Name == HelperTableName) {
			continue
		}
		if !chainMayUntrack(ch) {
			continue
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return nil, fmt.Errorf("list rules of table %s %s chain %s: %w", familyName(ch.Table.Family), ch.Table.Name, ch.Name, err)
		}
		for _, r := range rules {
			if untrackedRule(ch.Table.Family, r.Exprs) {
				out = append(out, Untracked{Table: familyName(ch.Table.Family) + " " + ch.Table.Name, Chain: ch.Name, Handle: r.Handle, Hook: hookName(ch.Hooknum)})
			}
		}
	}
	return out, nil
}
