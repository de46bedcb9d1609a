package check

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/egressd/egressd/ruleset"
)

// NFTListing is what the host's nft printed of egressd's table.
type NFTListing struct {
	Version string // `nft --version`, e.g. "nftables v1.0.6 (Lester Gooch #5)"
	Output  []byte // stdout and stderr of `nft list table inet egressd`
	Err     error  // its exit status
}

// ErrNoNFT: no nft on PATH; nothing to say about what it prints.
var ErrNoNFT = errors.New("no nft on PATH")

// ListWithNFT runs the host's nft (the one on PATH, as an administrator
// would) on egressd's table: `nft list table inet egressd`, fixed
// arguments. Only `check` does this, to tell the administrator what nft
// shows; egressd itself speaks netlink.
func ListWithNFT(ctx context.Context) (NFTListing, error) {
	path, err := exec.LookPath("nft")
	if err != nil {
		return NFTListing{}, ErrNoNFT
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var l NFTListing
	if v, err := exec.CommandContext(ctx, path, "--version").Output(); err == nil {
		l.Version = strings.TrimSpace(string(v))
	}
	l.Output, l.Err = exec.CommandContext(ctx, path, "list", "table", "inet", ruleset.TableName).CombinedOutput()
	return l, nil
}

// NFTNote is the note `check` gives when the host's nft cannot print
// egressd's table in full: an error line ("netlink: Error: ..."), an
// assertion, or an abort; or when it prints a unit allowlist's key as a
// value of unknown type ("[invalid type]", nft 1.0.6: Debian 12), which it
// then may print with its bytes turned around. Nil when it printed it, or
// when there is no table to print.
func NFTNote(l NFTListing) *Problem {
	var bad []string
	for _, line := range strings.Split(string(l.Output), "\n") {
		if strings.Contains(line, "Error") || strings.Contains(line, "Assertion") {
			bad = append(bad, strings.TrimSpace(line))
		}
	}
	what := "the nft on this host"
	if l.Version != "" {
		what += " (" + l.Version + ")"
	}
	if l.Err == nil && len(bad) == 0 {
		if !bytes.Contains(l.Output, []byte("[invalid type]")) {
			return nil
		}
		return &Problem{
			Kind:   "nft_cannot_print",
			Object: "table inet " + ruleset.TableName,
			Detail: fmt.Sprintf("%s prints every rule of table inet %s but not every unit key in the unit chains: it shows the key as `0x… [invalid type]`, "+
				"with its bytes turned around in the @uallow4 and @uallow6 lookups (the @uallow4r and @uallow6r lookups and the @udenied and @udenylog updates show it right). "+
				"This is a display limit: the kernel enforces the rules `egressd plan` prints", what, ruleset.TableName),
			Fix: "read a unit allowlist's key in its chains' names (unit_K, unitdeny_K, K in hex) or with `egressd plan`; save your own tables by name (`nft list table inet filter`), never `nft list ruleset > /etc/nftables.conf` (README, \"Reading the ruleset with nft\")",
		}
	}
	if bytes.Contains(l.Output, []byte("No such file or directory")) {
		return nil // no table: the drift findings say so
	}
	first := "exit: " + fmt.Sprint(l.Err)
	if len(bad) > 0 {
		first = bad[0]
	}
	return &Problem{
		Kind:   "nft_cannot_print",
		Object: "table inet " + ruleset.TableName,
		Detail: fmt.Sprintf("%s cannot print all of table inet %s (%s): `nft list ruleset` (and `nft list tables`) then shows rules without their matches or stops "+
			"(egressd's rules print in full with nft 1.0.6, Debian 12, and 1.1.3, Debian 13). This is a display limit: the kernel enforces the rules `egressd plan` prints", what, ruleset.TableName, first),
		Fix: "read egressd's rules with `egressd plan`; save your own tables by name (`nft list table inet filter`), never `nft list ruleset > /etc/nftables.conf` (README, \"Reading the ruleset with nft\")",
	}
}
