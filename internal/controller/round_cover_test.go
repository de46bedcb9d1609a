package controller

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/ruleset"
)

// A DNS round runs in the background on the keys that are due (claimed,
// so that the next wake-up does not start them again) and arrives on the
// channel for the loop to observe; nothing due starts nothing.
func TestDNSRound(t *testing.T) {
	c := newClocked(t, map[string]string{"allow.d/billing.yaml": "user: billing\nallow: [api.example.test:443]\n"})
	c.zone.set("api.example.test", "203.0.113.5")
	if _, err := c.c.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	rounds := make(chan round, 1)
	if c.c.dns.startRound(context.Background(), rounds) {
		t.Fatal("a round started with nothing due")
	}
	c.now = c.now.Add(2 * time.Minute) // the TTL ran out
	c.zone.set("api.example.test", "203.0.113.6")
	if !c.c.dns.startRound(context.Background(), rounds) {
		t.Fatal("no round with the name due")
	}
	if c.c.dns.startRound(context.Background(), rounds) {
		t.Error("the claimed keys started a second round")
	}
	r := <-rounds
	if len(r.keys) == 0 || len(r.out) != len(r.keys) {
		t.Fatalf("round %+v", r)
	}
	c.c.dns.observe(r.keys, r.out)
	if err := c.c.sync(); err != nil {
		t.Fatal(err)
	}
	want := netip.MustParseAddr("203.0.113.6")
	found := false
	for _, e := range c.k.Plan.Sets[ruleset.SetName4("billing")] {
		found = found || e.AddrFrom == want
	}
	if !found {
		t.Errorf("the round's answer is not in the set: %v", c.k.Plan.Sets[ruleset.SetName4("billing")])
	}
}
