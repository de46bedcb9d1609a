// Package deploy holds what operators install beside egressd: the
// Prometheus rules and their tests, the check timer, the Grafana dashboard,
// the Ansible collection. This test keeps them in step with the metrics the
// daemon and check export.
package deploy

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/check"
	"github.com/egressd/egressd/internal/metrics"
	"go.yaml.in/yaml/v3"
	"net/http/httptest"
)

// exported is every metric name egressd exports: the daemon's endpoint
// (every vector given a child) and check's textfile.
func exported(t *testing.T) map[string]bool {
	m := metrics.New()
	m.SetDenyCounters(func() (map[string]uint64, error) { return map[string]uint64{"a": 1}, nil })
	m.ConfigLoaded("h", time.Hour, map[string]bool{"a": true}, time.Now())
	m.NamesFailing(1, time.Now())
	m.SetElements(map[[2]string]int{{"a", "ipv4"}: 1})
	m.Applied("full", nil, 1)
	m.DenyEvent("a")
	m.ProxyQuery("a", "refused", 0)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	var b bytes.Buffer
	(&check.Report{}).WritePrometheus(&b)
	names := map[string]bool{"up": true}
	for _, l := range strings.Split(rec.Body.String()+b.String(), "\n") {
		if f := strings.Fields(l); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			names[f[2]] = true
			if f[3] == "histogram" {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					names[f[2]+s] = true
				}
			}
		}
	}
	return names
}

var metricRE = regexp.MustCompile(`\b(egressd_[a-z_]+|up)\b`)

// uses returns the metric names an expression reads.
func uses(expr string) []string {
	var out []string
	for _, m := range metricRE.FindAllString(expr, -1) {
		if !strings.Contains(expr, m+":") { // recording rule names (egressd:...) are not metrics
			out = append(out, m)
		}
	}
	return out
}

type rules struct {
	Groups []struct {
		Name  string
		Rules []struct {
			Alert, Record, Expr string
			Labels              map[string]string
			Annotations         map[string]string
		}
	}
}

// Every alert: an expression on metrics egressd exports, a severity, a
// summary, a description, and a runbook_url whose anchor docs/fleet.md has.
func TestPrometheusRules(t *testing.T) {
	b, err := os.ReadFile("prometheus/egressd.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var r rules
	if err := yaml.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	fleet, err := os.ReadFile("../docs/fleet.md")
	if err != nil {
		t.Fatal(err)
	}
	have := exported(t)
	alerts := 0
	for _, g := range r.Groups {
		for _, rule := range g.Rules {
			for _, m := range uses(rule.Expr) {
				if !have[m] {
					t.Errorf("%s%s reads %s, which egressd does not export", rule.Alert, rule.Record, m)
				}
			}
			if rule.Alert == "" {
				continue
			}
			alerts++
			if s := rule.Labels["severity"]; s != "critical" && s != "warning" && s != "info" {
				t.Errorf("%s: severity %q", rule.Alert, s)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if rule.Annotations[a] == "" {
					t.Errorf("%s: no %s", rule.Alert, a)
				}
			}
			_, anchor, _ := strings.Cut(rule.Annotations["runbook_url"], "/docs/fleet.md#")
			if anchor == "" || !bytes.Contains(bytes.ToLower(fleet), []byte("\n### "+anchor+"\n")) {
				t.Errorf("%s: runbook_url %s: no heading for #%s in docs/fleet.md", rule.Alert, rule.Annotations["runbook_url"], anchor)
			}
		}
	}
	if alerts < 10 {
		t.Errorf("%d alerts", alerts)
	}
}

// promtool's unit tests of the rules (.ci/run installs Debian's prometheus
// for promtool).
func TestPromtoolRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("EGRESSD_REQUIRE_SYSTEM_TESTS") == "1" {
			t.Fatal("promtool is missing (apt-get install prometheus), and EGRESSD_REQUIRE_SYSTEM_TESTS=1 forbids skipping")
		}
		t.Skip("promtool is not installed (apt-get install prometheus)")
	}
	cmd := exec.Command(promtool, "test", "rules", "egressd.rules.test.yml")
	cmd.Dir = "prometheus"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

type dashboard struct {
	UID, Title    string
	SchemaVersion int
	Panels        []struct {
		ID      int
		Title   string
		Type    string
		GridPos struct{ X, Y, W, H int }
		Targets []struct {
			RefID string
			Expr  string
		}
	}
	Templating struct {
		List []struct{ Name string }
	}
}

// The Grafana dashboard is valid JSON of the dashboard model, its panels
// are laid out on the 24-column grid without overlap, and every query reads
// metrics egressd exports. (Grafana itself is not packaged here.)
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("grafana/egressd.json")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var d dashboard
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("grafana/egressd.json: %v", err)
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 30 || len(d.Panels) == 0 {
		t.Fatalf("not a dashboard: uid %q title %q schemaVersion %d, %d panels", d.UID, d.Title, d.SchemaVersion, len(d.Panels))
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
	}
	have := exported(t)
	ids := map[int]bool{}
	cells := map[[2]int]string{}
	for _, p := range d.Panels {
		if p.ID == 0 || ids[p.ID] {
			t.Errorf("panel %q: id %d missing or repeated", p.Title, p.ID)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v off the 24-column grid", p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if prev, ok := cells[[2]int{x, y}]; ok {
					t.Errorf("panels %q and %q overlap", prev, p.Title)
					x, y = 24, 1<<20
					break
				}
				cells[[2]int{x, y}] = p.Title
			}
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q: no query", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.Count(tg.Expr, "(") != strings.Count(tg.Expr, ")") || strings.Count(tg.Expr, "{") != strings.Count(tg.Expr, "}") {
				t.Errorf("panel %q: unbalanced %s", p.Title, tg.Expr)
			}
			for _, m := range uses(tg.Expr) {
				if !have[m] {
					t.Errorf("panel %q reads %s, which egressd does not export", p.Title, m)
				}
			}
			for _, v := range regexp.MustCompile(`\$([a-z_]+)`).FindAllStringSubmatch(tg.Expr, -1) {
				if !vars[v[1]] && !strings.HasPrefix(v[1], "__") {
					t.Errorf("panel %q: variable $%s is not defined", p.Title, v[1])
				}
			}
		}
	}
}

// The check timer writes where Debian's node_exporter reads, and its
// service treats check's results as results.
func TestCheckTimerUnits(t *testing.T) {
	svc, err := os.ReadFile("prometheus/egressd-check.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"\nExecStart=/usr/bin/egressd check --textfile /var/lib/prometheus/node-exporter/egressd.prom\n",
		"\nReadWritePaths=/var/lib/prometheus/node-exporter\n", "\nSuccessExitStatus=1 2\n", "\nType=oneshot\n",
	} {
		if !bytes.Contains(svc, []byte(want)) {
			t.Errorf("egressd-check.service lacks %q", strings.TrimSpace(want))
		}
	}
	timer, err := os.ReadFile("prometheus/egressd-check.timer")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(timer, []byte("\nOnUnitActiveSec=")) || !bytes.Contains(timer, []byte("\nWantedBy=timers.target\n")) {
		t.Errorf("egressd-check.timer:\n%s", timer)
	}
}
