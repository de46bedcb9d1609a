package controller

import (
	"testing"

	"github.com/egressd/egressd/config"
)

// A denied packet is attributed by the subject its prefix names: a uid and
// a unit key of the same number are two subjects, and a deny of one is never
// reported as the other's.
func TestAttributionBySubject(t *testing.T) {
	x := &attribution{}
	c := &Controller{attr: x}
	if _, ok := c.AllowlistOf(1001); ok {
		t.Fatal("attributed before any subject was recorded")
	}
	cfg := &config.Config{Allowlists: []*config.Allowlist{{Name: "billing", User: "billing"}, {Name: "shop", Unit: "shop.service"}}}
	x.setSubjects(cfg, map[string]uint32{"billing": 1001}, map[string]uint32{"shop": 1001})
	if n, ok := c.AllowlistOf(1001); !ok || n != "billing" {
		t.Fatalf("uid 1001: %q %v, want billing", n, ok)
	}
	if n, u, ok := c.UnitOf(1001); !ok || n != "shop" || u != "shop.service" {
		t.Fatalf("unit key 1001: %q %q %v, want shop shop.service", n, u, ok)
	}
	if _, _, ok := c.UnitOf(7); ok {
		t.Fatal("an unknown unit key attributed")
	}
	// A user allowlist's key in keys (UnitKeys covers every name) is not a unit.
	x.setSubjects(cfg, nil, map[string]uint32{"billing": 9})
	if n, _, ok := c.UnitOf(9); ok {
		t.Fatalf("user allowlist %q attributed as a unit", n)
	}
}
