package cgroup

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/egressd/egressd/config"
)

func TestRestricted(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{
		"system.slice/shop.service/worker",            // a Delegate=yes unit's own sub-cgroup: not matched apart
		"system.slice/system-php.slice/php@a.service", // level 3
		"shop.slice", // a slice unit
		"system.slice/other.service/shop.service", // inside a non-slice: not a unit
		"init.scope",
	} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := &config.Config{Allowlists: []*config.Allowlist{
		{Name: "shop", Unit: "shop.service"}, {Name: "php", Unit: "php@a.service"}, {Name: "s", Unit: "shop.slice"}, {Name: "u", User: "x"},
	}}
	found, err := Restricted(root, cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range found {
		got[f.Path] = f.Allowlist
		if id, _ := ID(filepath.Join(root, f.Path)); id != f.ID {
			t.Errorf("%s: id %d, want the inode %d", f.Path, f.ID, id)
		}
	}
	want := map[string]string{"system.slice/shop.service": "shop", "system.slice/system-php.slice/php@a.service": "php", "shop.slice": "s"}
	if len(got) != len(want) {
		t.Fatalf("found %v, want %v", got, want)
	}
	for p, a := range want {
		if got[p] != a {
			t.Errorf("found %v, want %v", got, want)
		}
	}
	if Level("system.slice/shop.service") != 2 || Level("/") != 0 {
		t.Error("Level")
	}
}
