//go:build linux

package ruleset

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The NFTSet= table (docs/units.md). systemd ≥ 255 can add a unit's new
// cgroup to an nftables set before any process of the unit runs
// (NFTSet=cgroup:inet:egressd_units:units), but egressd's own table is owned
// by the daemon (Linux ≥ 6.9): the kernel refuses systemd's write. So the
// set lives in a second, unowned table that egressd creates beside its own
// while unit allowlists exist, and never deletes while they do (a rebuild of
// egressd's table keeps systemd's elements):
//
//	table inet egressd_units {
//	  set units  { type cgroupsv2 }     # systemd's (NFTSet=)
//	  set mapped { type cgroupsv2 }     # egressd's: the cgroups its table maps (unitchains)
//	  chain output { type filter hook output priority filter - 1; policy accept;
//	    ct direction reply accept      # replies on others' flows: on to egressd's table
//	    socket cgroupv2 level N @units socket cgroupv2 level N != @mapped reject   (N = 1..UnitLevels)
//	  }
//	}
//
// A unit's cgroup that systemd announced and egressd has not mapped yet is
// refused everything; once mapped, egressd's table judges it. Being
// unowned, any process with CAP_NET_ADMIN can change this table, as it can
// an unowned egressd table on kernels before 6.9; egressd's own table still
// restricts every cgroup it has mapped.
const kMapped = "mapped"

var helperTable = &nftables.Table{Family: nftables.TableFamilyINet, Name: HelperTableName}

func cgroupSet(name string) *nftables.Set {
	return &nftables.Set{Table: helperTable, Name: name, KeyType: nftables.TypeCGroupV2}
}

// buildHelper brings the NFTSet= table to the plan inside a transaction:
// created or updated, its mapped set replaced, while the plan has unit
// allowlists; deleted (if it exists) otherwise.
func buildHelper(c *nftables.Conn, p Plan) error {
	c.AddTable(helperTable) // a no-op if it exists
	if len(p.Of(SubjectUnit)) == 0 {
		c.DelTable(helperTable)
		return nil
	}
	units, mapped := cgroupSet(NFTSetUnits), cgroupSet(kMapped)
	for _, s := range []*nftables.Set{units, mapped} {
		if err := c.AddSet(s, nil); err != nil { // keeps an existing set's elements
			return fmt.Errorf("add set %s %s: %w", HelperTableName, s.Name, err)
		}
	}
	c.FlushSet(mapped)
	if err := addCgroupIDs(c, mapped, p.Cgroups); err != nil {
		return err
	}
	prio := nftables.ChainPriorityRef(*nftables.ChainPriorityFilter - 1)
	ch := c.AddChain(&nftables.Chain{Name: chainOut, Table: helperTable, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: prio})
	c.FlushChain(ch)
	for _, r := range helperRules(ch) {
		c.AddRule(r)
	}
	return nil
}

func addCgroupIDs(c *nftables.Conn, s *nftables.Set, cgs []Cgroup) error {
	var es []nftables.SetElement
	for _, cg := range cgs {
		es = append(es, nftables.SetElement{Key: cgroupKey(cg.ID)})
	}
	for i := 0; i < len(es); i += chunk {
		if err := c.SetAddElements(s, es[i:min(i+chunk, len(es))]); err != nil {
			return fmt.Errorf("add %d elements to %s %s: %w", len(es), HelperTableName, s.Name, err)
		}
	}
	return nil
}

// helperRules: a cgroup systemd announced that egressd has not mapped is
// refused everything (TCP reset, ICMP admin-prohibited).
func helperRules(ch *nftables.Chain) []*nftables.Rule {
	// Replies on flows someone else opened (a client of the unit's server)
	// pass on to egressd's table; accept ends this chain only.
	rules := []*nftables.Rule{{Table: helperTable, Chain: ch, Exprs: []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeyDIRECTION},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{1}},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}}}
	for l := 1; l <= UnitLevels; l++ {
		rules = append(rules, &nftables.Rule{Table: helperTable, Chain: ch, Exprs: []expr.Any{
			&expr.Socket{Key: expr.SocketKeyCgroupv2, Level: uint32(l), Register: reg1},
			&expr.Lookup{SourceRegister: reg1, SetName: NFTSetUnits},
			&expr.Lookup{SourceRegister: reg1, SetName: kMapped, Invert: true},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Reject{Type: unix.NFT_REJECT_TCP_RST},
		}}, &nftables.Rule{Table: helperTable, Chain: ch, Exprs: []expr.Any{
			&expr.Socket{Key: expr.SocketKeyCgroupv2, Level: uint32(l), Register: reg1},
			&expr.Lookup{SourceRegister: reg1, SetName: NFTSetUnits},
			&expr.Lookup{SourceRegister: reg1, SetName: kMapped, Invert: true},
			&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED},
		}})
	}
	return rules
}

// helperCgroups adds the cgroup change to the NFTSet= table's mapped set,
// in the caller's transaction.
func helperCgroups(c *nftables.Conn, p Plan, add, del []Cgroup) error {
	if len(p.Of(SubjectUnit)) == 0 {
		return nil
	}
	mapped := cgroupSet(kMapped)
	if len(del) > 0 {
		var es []nftables.SetElement
		for _, cg := range del {
			es = append(es, nftables.SetElement{Key: cgroupKey(cg.ID)})
		}
		if err := c.SetDeleteElements(mapped, es); err != nil {
			return err
		}
	}
	return addCgroupIDs(c, mapped, add)
}

// ReadNFTSetUnits reads the cgroup ids systemd put in the NFTSet= table
// (tests, reports).
func (k *Netlink) ReadNFTSetUnits() ([]uint64, error) {
	c, err := k.conn()
	if err != nil {
		return nil, err
	}
	s, err := c.GetSetByName(helperTable, NFTSetUnits)
	if err != nil {
		return nil, err
	}
	raw, err := c.GetSetElements(s)
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, r := range raw {
		if len(r.Key) == 8 {
			out = append(out, nativeUint64(r.Key))
		}
	}
	return out, nil
}
