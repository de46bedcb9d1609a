//go:build linux

package ruleset

import (
	"fmt"
	"strings"
	"testing"

	"github.com/egressd/egressd/config"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// exprShape and textShape are what the text and the netlink rules must agree on: the sets
// a rule looks up or updates, in order (! for a negated lookup), and its
// verdict.
func exprShape(es []expr.Any) string {
	var refs []string
	verdict := ""
	for _, e := range es {
		switch v := e.(type) {
		case *expr.Lookup:
			n := "@" + v.SetName
			if v.Invert {
				n = "!" + n
			}
			refs = append(refs, n)
		case *expr.Dynset:
			refs = append(refs, "@"+v.SetName)
		case *expr.Verdict:
			switch v.Kind {
			case expr.VerdictAccept:
				verdict = "accept"
			case expr.VerdictDrop:
				verdict = "drop"
			case expr.VerdictGoto:
				verdict = "goto " + v.Chain
			case expr.VerdictJump:
				verdict = "jump " + v.Chain
			case expr.VerdictReturn:
				verdict = "return"
			default:
				verdict = fmt.Sprint(v.Kind)
			}
		case *expr.Reject:
			verdict = "reject"
		}
	}
	return strings.Join(refs, " ") + " -> " + verdict
}

func textShape(r string) string {
	r, _, _ = strings.Cut(r, " # ")
	f := strings.Fields(r)
	var refs []string
	verdict := ""
	for i, w := range f {
		switch {
		case strings.HasPrefix(w, "@") && len(w) > 1 && w[1] != '1':
			n := w
			if i > 0 && f[i-1] == "!=" {
				n = "!" + n
			}
			refs = append(refs, n)
		case w == "accept", w == "reject", w == "return", w == "drop":
			verdict = w
		case (w == "goto" || w == "jump") && i+1 < len(f):
			verdict = w + " " + f[i+1]
		}
	}
	return strings.Join(refs, " ") + " -> " + verdict
}

// The text rendering has the netlink adapter's rules: as many, in the same
// order, naming the same sets, with the same verdicts, in every log mode.
func TestNFTRulesMatchNetlink(t *testing.T) {
	for _, dl := range []config.DenyLog{
		{Mode: config.LogNFLOG, Group: 3, Rate: config.Rate{Count: 10, Unit: "second"}, Prefix: "egressd"},
		{Mode: config.LogKernel, Rate: config.Rate{Count: 5, Unit: "minute"}, Prefix: "egressd"},
		{Mode: config.LogNone},
	} {
		chain := func(name string) *nftables.Chain { return &nftables.Chain{Name: name, Table: table} }
		for _, c := range []struct {
			name string
			nl   []*nftables.Rule
			text []string
		}{
			{chainOut, outputRules(outputChain()), outputRuleText()},
			{chainRestr, restrictedRules(chain(chainRestr), 153), restrictedRuleText(153)},
			{chainNAT, natRules(chain(chainNAT), 153), natRuleText(153)},
			{chainZone, zoneRules(chain(chainZone), 153), zoneRuleText(153)},
			{chainIn, inputRules(chain(chainIn), 153, true), inputRuleText(153, true)},
			{chainIn, inputRules(chain(chainIn), 153, false), inputRuleText(153, false)},
			{chainDeny, denyRules(chain(chainDeny), dl), denyRuleText(dl)},
		} {
			if len(c.nl) != len(c.text) {
				t.Errorf("%s (%s): %d netlink rules, %d in the text", c.name, dl.Mode, len(c.nl), len(c.text))
				continue
			}
			for i := range c.nl {
				if got, want := textShape(c.text[i]), exprShape(c.nl[i].Exprs); got != want {
					t.Errorf("%s (%s) rule %d: text %q is %s, netlink rule is %s", c.name, dl.Mode, i+1, c.text[i], got, want)
				}
			}
		}
	}
}

// The sets the text declares are the adapter's, with the same flags.
func TestNFTSetsMatchNetlink(t *testing.T) {
	text := Plan{Sets: map[string][]Element{}}.NFT()
	for _, ks := range append(allKernelSets(), proxyKernelSets()...) {
		s := ks.nft()
		i := strings.Index(text, "set "+s.Name+" {")
		if i < 0 {
			t.Fatalf("no set %s in\n%s", s.Name, text)
		}
		body := text[i : i+strings.Index(text[i:], "}")]
		if s.Interval != strings.Contains(body, "interval") || s.HasTimeout != strings.Contains(body, "timeout") {
			t.Errorf("set %s: interval %v timeout %v, text %q", s.Name, s.Interval, s.HasTimeout, body)
		}
	}
	for _, name := range []string{kUsers, kOwners, kDNSUsers, kProxyUsers, kAudit, kDenied, kDenyLog} {
		if !strings.Contains(text, "set "+name+" {") {
			t.Errorf("no set %s", name)
		}
	}
}
