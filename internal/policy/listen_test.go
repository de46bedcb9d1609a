package policy

import (
	"fmt"
	"testing"

	"github.com/egressd/egressd/config"
)

func TestListen(t *testing.T) {
	cfg := &config.Config{Allowlists: []*config.Allowlist{
		{Name: "web", Listen: []config.ListenPort{{Proto: "tcp", From: 8080, To: 8081}, {Proto: "udp", From: 5353, To: 5353}}},
		{Name: "closed", Listen: []config.ListenPort{}, Mode: config.ModeAudit},
		{Name: "free"}, // no listen: key: unrestricted
		{Name: "missing", Listen: []config.ListenPort{}}, // user not enforced: nothing
	}}
	users := Users{UIDs: map[string]uint32{"web": 1001, "closed": 1002, "free": 1003}}
	got := fmt.Sprint(Listen(cfg, users))
	want := "map[1001:{false [{6 8080} {6 8081} {17 5353}]} 1002:{true []}]"
	if got != want {
		t.Fatalf("Listen = %s, want %s", got, want)
	}
}
