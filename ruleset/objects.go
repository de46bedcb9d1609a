package ruleset

import (
	"fmt"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
)

// The one model of the kernel ruleset (the knftables idea): the layout
// (rules.go) builds a Table of typed objects from a plan; the netlink
// encoder (kernel_linux.go), the nft text printer (Table.NFT), verification
// (verify_linux.go: the kernel's rules against the objects' lowering) and
// the golden tests all consume those objects. None of them knows the layout
// on its own: a rule is written once, as statements that each carry both
// their nft text and their lowering to netlink expressions.

// Stmt is one statement of a rule: what nft prints and parses, and the
// netlink expressions it lowers to. A statement whose expressions share a
// register with the next one is written as one Stmt.
type Stmt struct {
	Text  string
	Exprs []expr.Any
}

// Rule is a chain's rule: its statements in order, and a comment for people
// (printed after the rule as an nft comment, never sent to the kernel).
type Rule struct {
	Stmts   []Stmt
	Comment string
}

// rule builds a Rule from statements.
func rule(s ...Stmt) Rule { return Rule{Stmts: s} }

// because returns r with a comment.
func (r Rule) because(c string) Rule { r.Comment = c; return r }

// Text is the rule in nft syntax, without its comment.
func (r Rule) Text() string {
	parts := make([]string, 0, len(r.Stmts))
	for _, s := range r.Stmts {
		if s.Text != "" {
			parts = append(parts, s.Text)
		}
	}
	return strings.Join(parts, " ")
}

// Exprs is the rule's lowering: the statements' expressions in order.
func (r Rule) Exprs() []expr.Any {
	var out []expr.Any
	for _, s := range r.Stmts {
		out = append(out, s.Exprs...)
	}
	return out
}

// Hook is a base chain's hook: its type, hook and priority, in nft's words
// (the netlink values are derived from them).
type Hook struct {
	Type     nftables.ChainType
	Hook     string // output, input
	Priority string // raw, -100 (dstnat), filter
}

// Text is the hook line of the chain.
func (h Hook) Text() string {
	return fmt.Sprintf("type %s hook %s priority %s; policy accept;", h.Type, h.Hook, h.Priority)
}

func (h Hook) hooknum() *nftables.ChainHook {
	if h.Hook == "input" {
		return nftables.ChainHookInput
	}
	return nftables.ChainHookOutput
}

func (h Hook) priority() *nftables.ChainPriority {
	switch h.Priority {
	case "raw":
		return nftables.ChainPriorityRaw
	case "-100": // dstnat, a name nft takes only on the prerouting hook
		return nftables.ChainPriorityNATDest
	case InboundPriority:
		return nftables.ChainPriorityRef(2147483646)
	}
	return nftables.ChainPriorityFilter
}

// Chain is a chain of the table: a base chain (Hook non-nil) or a regular one.
type Chain struct {
	Name  string
	Hook  *Hook
	Rules []Rule
}

// kernel is the chain's netlink declaration.
func (c Chain) kernel() *nftables.Chain {
	ch := &nftables.Chain{Name: c.Name, Table: table}
	if c.Hook != nil {
		ch.Type, ch.Hooknum, ch.Priority = c.Hook.Type, c.Hook.hooknum(), c.Hook.priority()
	}
	return ch
}

// Set is a set or map of the table: its declaration and its elements. The
// elements are kept in the form they come in (plan elements by kernel set,
// uids, cgroups) and encoded or printed on demand: a full apply of 100,000
// elements formats no text.
type Set struct {
	Name    string
	Comment string
	Map     bool   // a verdict map (printed "map")
	Type    string // nft's type, e.g. "uid", "mark . uid", "cgroupsv2 : verdict"
	Flags   []string
	Kernel  *nftables.Set
	// The elements, one kind per set.
	keyed  []keyed // plan elements of a kernel set (ks)
	ks     kernelSet
	values []value // uid, mark or (mark . uid) keys
	jumps  []jump  // cgroup id -> jump to the unit key's chain
	proxy  []ProxyElement
	// Broken, when non-empty, says why the elements could not be placed
	// (printed as a comment; the encoder never sees such a table).
	Broken string
}

// value is one element of a set of 32-bit keys: v (v . v when pair), with
// an optional comment.
type value struct {
	v       uint32
	pair    bool
	comment string
	hex     bool // printed as a mark (0x%08x)
	data    bool // a map's element v : v (the value a mark)
}

// jump is one element of the verdict map unitchains.
type jump struct {
	id  uint64
	key uint32
}

// Elements encodes the set's elements for netlink; now sets the timeouts of
// elements with a lifetime.
func (s Set) Elements(now time.Time) []nftables.SetElement {
	switch {
	case s.proxy != nil:
		return proxySetElements(s.ks, s.proxy)
	case s.keyed != nil:
		return toSetElementsAt(s.ks, s.keyed, now)
	case s.jumps != nil:
		out := make([]nftables.SetElement, len(s.jumps))
		for i, j := range s.jumps {
			out[i] = cgroupElement(j.id, j.key)
		}
		return out
	}
	out := make([]nftables.SetElement, len(s.values))
	for i, v := range s.values {
		k := binaryutil.NativeEndian.PutUint32(v.v)
		if v.pair {
			k = append(k, k...)
		}
		out[i] = nftables.SetElement{Key: k, Comment: v.comment}
		if v.data {
			out[i].Val = k
		}
	}
	return out
}

// ElementText prints the set's elements as nft takes them.
func (s Set) ElementText() []string {
	switch {
	case s.keyed != nil:
		return keyedText(s.ks, s.keyed)
	case s.proxy != nil:
		return nil // the proxy's answers: not part of a plan
	case s.jumps != nil:
		return nil // cgroup ids: printed as comments (Table.NFT), nft takes a cgroup's path
	}
	out := make([]string, len(s.values))
	for i, v := range s.values {
		t := fmt.Sprint(v.v)
		if v.hex {
			t = unitKeyText(v.v)
		}
		if v.pair {
			t += " . " + t
		}
		if v.data {
			t += " : " + unitKeyText(v.v)
		}
		if v.comment != "" {
			t += fmt.Sprintf(" comment %q", v.comment)
		}
		out[i] = t
	}
	return out
}

// Table is the whole table inet egressd: sets first, then chains (the order
// nft declares them in: a rule names its sets and chains, which exist).
type Table struct {
	Sets   []Set
	Chains []Chain
}

// NFT prints the table in nft's syntax: `nft -f` loads it (a test checks
// that with the distribution's nft).
func (t Table) NFT() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", TableName)
	for _, s := range t.Sets {
		kind := "set"
		if s.Map {
			kind = "map"
		}
		fmt.Fprintf(&b, "\t%s %s {", kind, s.Name)
		if s.Comment != "" {
			fmt.Fprintf(&b, " # %s", s.Comment)
		}
		fmt.Fprintf(&b, "\n\t\ttype %s\n", s.Type)
		if len(s.Flags) > 0 {
			fmt.Fprintf(&b, "\t\tflags %s\n", strings.Join(s.Flags, ","))
		}
		for _, j := range s.jumps {
			fmt.Fprintf(&b, "\t\t# element: cgroup id %d : jump %s (nft takes a cgroup path, not an id)\n", j.id, unitChain(j.key))
		}
		if s.Broken != "" {
			fmt.Fprintf(&b, "\t\t# cannot place the elements: %s\n", s.Broken)
		}
		if es := s.ElementText(); len(es) > 0 {
			b.WriteString("\t\telements = {")
			for i, e := range es {
				if i > 0 {
					b.WriteString(",")
				}
				fmt.Fprintf(&b, "\n\t\t\t%s", e)
			}
			b.WriteString(" }\n")
		}
		b.WriteString("\t}\n")
	}
	for _, c := range t.Chains {
		fmt.Fprintf(&b, "\tchain %s {\n", c.Name)
		if c.Hook != nil {
			fmt.Fprintf(&b, "\t\t%s\n", c.Hook.Text())
		}
		for _, r := range c.Rules {
			b.WriteString("\t\t" + r.Text())
			if r.Comment != "" {
				b.WriteString(" # " + r.Comment)
			}
			b.WriteString("\n")
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}
