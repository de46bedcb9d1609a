package check

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ListWithNFT runs the nft on PATH with fixed arguments: its version, then
// `list table inet egressd`, output and exit status kept for the note.
func TestListWithNFT(t *testing.T) {
	bin := t.TempDir()
	stub := "#!/bin/sh\n" +
		"if [ \"$1\" = --version ]; then echo 'nftables v1.0.6 (Lester Gooch #5)'; exit 0; fi\n" +
		"echo \"args: $*\"\n" +
		"echo 'netlink: Error: Lookup expression has no left hand side' >&2\n" +
		"exit 1\n"
	if err := os.WriteFile(filepath.Join(bin, "nft"), []byte(stub), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin)
	l, err := ListWithNFT(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if l.Version != "nftables v1.0.6 (Lester Gooch #5)" || !strings.Contains(string(l.Output), "args: list table inet egressd") || l.Err == nil {
		t.Errorf("listing %+v (%s)", l, l.Output)
	}
	if p := NFTNote(l); p == nil || !strings.Contains(p.Detail, "v1.0.6") {
		t.Errorf("note %+v, want one naming the host's nft", p)
	}

	t.Setenv("PATH", t.TempDir())
	if _, err := ListWithNFT(context.Background()); !errors.Is(err, ErrNoNFT) {
		t.Errorf("without nft: %v, want ErrNoNFT", err)
	}
}

// The textfile goes into an existing directory (node_exporter's); a
// missing one is an error naming the file, and nothing is written.
func TestWriteTextfileMissingDir(t *testing.T) {
	p := filepath.Join(t.TempDir(), "missing", "egressd.prom")
	err := WriteTextfile(p, &Report{})
	if err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("WriteTextfile into a missing directory: %v", err)
	}
}
