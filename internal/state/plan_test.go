package state

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/ruleset"
)

func samplePlan() ruleset.Plan {
	return ruleset.Render(ruleset.Desired{
		Allowlists: []ruleset.Allowlist{
			{Name: "billing", Subject: ruleset.UserSubject(1001), DNS: true, Elements: []ruleset.Element{
				ruleset.ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.1/32"), 443, 443),
				ruleset.ElementFor(config.UDP, netip.MustParsePrefix("2001:db8::/64"), 1000, 2000),
			}},
			{Name: "audit", Subject: ruleset.UserSubject(1002), Audit: true, Listen: true},
			// a unit whose name sorts before the users': one list, by name
			{Name: "api", Subject: ruleset.UnitSubject("api.service", 0xbeef), DNS: true, Listen: true, Elements: []ruleset.Element{
				ruleset.ElementFor(config.TCP, netip.MustParsePrefix("192.0.2.2/32"), 443, 443),
			}},
		},
		Cgroups:   []ruleset.Cgroup{{ID: 42, Allowlist: "api"}},
		Resolvers: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.53:53")},
		DenyLog:   config.DenyLog{Mode: config.LogNFLOG, Group: 7, Rate: config.Rate{Count: 5, Unit: "second"}, Prefix: "egressd", Interval: time.Minute},
	})
}

// The published plan converts back to the plan it was made of, through JSON.
func TestPlanRoundTrip(t *testing.T) {
	p := samplePlan()
	b, err := json.Marshal(FromPlan(p))
	if err != nil {
		t.Fatal(err)
	}
	var doc Plan
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	got, err := doc.Ruleset()
	if err != nil {
		t.Fatal(err)
	}
	norm := func(p ruleset.Plan) ruleset.Plan { // nil and empty sets are the same plan
		for k, v := range p.Sets {
			if len(v) == 0 {
				p.Sets[k] = nil
			}
		}
		return p
	}
	if !reflect.DeepEqual(norm(got), norm(p)) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, p)
	}
}

// state.json's keys are the document's, not Go's field names: renaming a
// field of ruleset.Plan or config.DenyLog does not change the format.
func TestPlanJSONNames(t *testing.T) {
	b, err := json.Marshal(FromPlan(samplePlan()))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, key := range []string{`"allowlists"`, `"sets"`, `"deny_log"`, `"uid":1001`, `"proto":"tcp"`, `"addr_from":"192.0.2.1"`, `"port_to":2000`, `"rate_count":5`, `"` + ruleset.SetName4("billing") + `"`,
		`"units":[{"name":"api","unit":"api.service","key":48879,"dns":true,"audit":false,"listen":true}]`, `"uallow4_api"`, `"cgroups":[{"id":42,"allowlist":"api"}]`} {
		if !strings.Contains(s, key) {
			t.Errorf("no %s in %s", key, s)
		}
	}
	for _, goName := range []string{`"Chains"`, `"AddrFrom"`, `"DenyLog"`, `"Rate"`, `"Allowlist"`, `"Subject"`, `"Kind"`} {
		if strings.Contains(s, goName) {
			t.Errorf("Go field name %s in the document: %s", goName, s)
		}
	}
}

// A document written before ruleset.Plan held one list of subjects (users
// under "allowlists", units under "units") reads back as that list, sorted
// by name: check and plan read the state of the daemon they upgrade.
func TestPlanReadsPreviousDocument(t *testing.T) {
	old := `{"allowlists":[{"name":"web","uid":1001,"dns":true,"dns_proxy":true,"audit":false}],"sets":{},` +
		`"deny_log":{"mode":"nflog","group":7,"rate_count":5,"rate_unit":"second","prefix":"egressd","interval_ns":0},` +
		`"units":[{"name":"api","unit":"api.service","key":7,"dns":false,"audit":true}]}`
	var doc Plan
	if err := json.Unmarshal([]byte(old), &doc); err != nil {
		t.Fatal(err)
	}
	p, err := doc.Ruleset()
	if err != nil {
		t.Fatal(err)
	}
	want := []ruleset.AllowlistPlan{
		{Allowlist: "api", Subject: ruleset.UnitSubject("api.service", 7), Audit: true},
		{Allowlist: "web", Subject: ruleset.UserSubject(1001), DNS: true, Proxy: true},
	}
	if !reflect.DeepEqual(p.Allowlists, want) {
		t.Fatalf("allowlists %+v, want %+v", p.Allowlists, want)
	}
}

func TestPlanDamagedProto(t *testing.T) {
	doc := Plan{Sets: map[string][]Element{ruleset.SetName4("x"): {{Proto: "sctp?"}}}}
	if _, err := doc.Ruleset(); err == nil {
		t.Fatal("a damaged protocol converted without error")
	}
}
