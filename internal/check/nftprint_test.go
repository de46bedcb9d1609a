package check

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// What Debian 12's nft (1.0.6) printed of egressd's table: with the ct-label
// owner rules, with unit allowlists before their chains of their own, and
// a unit chain's lookup now.
const (
	nft106LabelRules = "netlink: Error: Lookup expression has no left hand side\ntable inet egressd {\n\tchain restricted {\n\t\tct state established,related ct direction original accept\n\t}\n}\n"
	nft106Units      = "nft: netlink_delinearize.c:126: netlink_parse_concat_expr: Assertion `consumed > 0' failed.\n"
	nft106UnitKey    = "table inet egressd {\n\tchain unit_0fd9bc91 {\n\t\t0x91bcd90f [invalid type] . meta l4proto . ip daddr . th dport @uallow4 return\n\t}\n}\n"
	nftPrinted       = "table inet egressd {\n\tchain restricted {\n\t\tct state established,related ct direction original ct mark . meta skuid @owners accept\n\t}\n}\n"
)

func TestNFTNote(t *testing.T) {
	const v = "nftables v1.0.6 (Lester Gooch #5)"
	for _, c := range []struct {
		name string
		l    NFTListing
		want string // "" for no note; else in the detail
	}{
		{"prints", NFTListing{Version: v, Output: []byte(nftPrinted)}, ""},
		{"lookup lost", NFTListing{Version: v, Output: []byte(nft106LabelRules)}, "Lookup expression has no left hand side"},
		{"unit key", NFTListing{Version: v, Output: []byte(nft106UnitKey)}, "[invalid type]"},
		{"aborts", NFTListing{Version: v, Output: []byte(nft106Units), Err: errors.New("signal: aborted")}, "Assertion"},
		{"fails quietly", NFTListing{Err: errors.New("exit status 1")}, "exit status 1"},
		{"no table", NFTListing{Output: []byte("Error: No such file or directory\nlist table inet egressd\n"), Err: errors.New("exit status 1")}, ""},
	} {
		n := NFTNote(c.l)
		switch {
		case c.want == "" && n != nil:
			t.Errorf("%s: note %+v", c.name, n)
		case c.want != "" && n == nil:
			t.Errorf("%s: no note", c.name)
		case n != nil && (!strings.Contains(n.Detail, c.want) || n.Kind != "nft_cannot_print" || !strings.Contains(n.Fix, "egressd plan")):
			t.Errorf("%s: %+v", c.name, n)
		case n != nil && c.l.Version != "" && !strings.Contains(n.Detail, c.l.Version):
			t.Errorf("%s: the detail does not name the nft: %s", c.name, n.Detail)
		}
	}
}

// The note is a note: the check in sync stays OK (exit 0) and says it.
func TestRunNFTNote(t *testing.T) {
	o := runFixture(t)
	o.ListNFT = func(context.Context) (NFTListing, error) {
		return NFTListing{Version: "nftables v1.0.6", Output: []byte(nft106Units), Err: errors.New("signal: aborted")}, nil
	}
	r := Run(context.Background(), o)
	if len(r.Notes) != 1 || r.Notes[0].Kind != "nft_cannot_print" {
		t.Fatalf("notes %+v", r.Notes)
	}
	if problem(r, "nft_cannot_print", "") != nil {
		t.Fatal("a display limit counted as a problem")
	}
	if out := text(r); !strings.Contains(out, "notes:\n  nft_cannot_print table inet egressd") {
		t.Errorf("text:\n%s", out)
	}
	o.ListNFT = func(context.Context) (NFTListing, error) { return NFTListing{}, ErrNoNFT }
	if r := Run(context.Background(), o); len(r.Notes) != 0 {
		t.Fatalf("no nft: notes %+v", r.Notes)
	}
}
