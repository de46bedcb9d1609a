package fleet

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/debpkg"
)

// lab is the fleet: three hosts, a collector, the controller's files.
type lab struct {
	t         *testing.T
	net       *network
	hosts     []*container // host1, host2, host3
	collector *container
	work      string // the controller's directory: key, inventory, collection, package
	env       []string
}

// TestFleet boots the lab once and runs the fleet's stories on it, in order
// (each builds on the state the previous left).
func TestFleet(t *testing.T) {
	require(t, "ansible-playbook", "ssh", "ssh-keygen", "dpkg-deb", "git")
	start := time.Now()
	l := newLab(t)
	t.Logf("lab up in %v", time.Since(start).Round(time.Millisecond))

	step := func(name string, f func(t *testing.T)) bool {
		s := time.Now()
		ok := t.Run(name, f)
		t.Logf("%s: %v", name, time.Since(s).Round(time.Millisecond))
		return ok
	}
	if !step("install", l.install) {
		return
	}
	step("second_run_changes_nothing", l.idempotent)
	step("bad_allowlist_stopped_by_validate", l.badAllowlist)
	step("deny_reaches_collector_and_alert", l.denyForwardedAndAlerted)
	step("rollout_stops_at_failing_check_with_skew", l.rollout)
}

func newLab(t *testing.T) *lab {
	lower := rootfs(t)
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	l := &lab{t: t, work: t.TempDir()}
	deb, err := debpkg.Build(debpkg.Options{Repo: repo, Out: l.work, GOARCH: runtime.GOARCH})
	if err != nil {
		t.Fatalf("building the package: %v", err)
	}
	key := filepath.Join(l.work, "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fleet-controller", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}

	l.net = newNetwork(t)
	l.collector = newContainer(t, lower, "collector", l.net.join("c", collectorIP))
	for i, ip := range hostIPs {
		name := fmt.Sprintf("host%d", i+1)
		l.hosts = append(l.hosts, newContainer(t, lower, name, l.net.join(fmt.Sprint(i+1), ip)))
	}
	all := append([]*container{l.collector}, l.hosts...)
	for i, c := range all {
		host := "collector"
		if i > 0 {
			host = fmt.Sprintf("host%d", i)
		}
		c.Write("/etc/hostname", host+"\n", 0o644)
		c.Write("/root/.ssh/authorized_keys", string(pub), 0o600)
		if err := os.Chmod(filepath.Join(c.Root, "root/.ssh"), 0o700); err != nil {
			t.Fatal(err)
		}
		// The lab configures each network from outside before the boot;
		// nothing in the container would bring network-online.target up, so
		// systemd-journal-upload (After=network-online.target) would wait
		// for wait-online's two-minute timeout.
		c.Link("/dev/null", "/etc/systemd/system/systemd-networkd-wait-online.service")
		// Each host its own host keys.
		if out, err := exec.Command("ssh-keygen", "-A", "-f", c.Root).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen -A: %v\n%s", err, out)
		}
	}
	for _, h := range l.hosts {
		// Hosts forward their journal to the collector; they run no Prometheus.
		h.Write("/etc/systemd/journal-upload.conf", "[Upload]\nURL=http://"+collectorIP+":19532\n", 0o644)
		h.Link("/dev/null", "/etc/systemd/system/prometheus.service")
	}
	l.setupCollector(repo)

	for _, c := range all {
		c.start()
	}
	for _, c := range all {
		c.Booted()
	}
	// The services' users: app everywhere; reports only where the reports
	// service runs (not on host2), which is what makes host2's check fail
	// in the rollout.
	for i, h := range l.hosts {
		h.MustT(t, "useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "app")
		if i != 1 {
			h.MustT(t, "useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "reports")
		}
	}
	// The hosts forward their journals to the collector from now on.
	for _, h := range l.hosts {
		h.MustT(t, "systemctl", "start", "systemd-journal-upload.service")
	}
	l.writeController(deb, key)
	return l
}

// setupCollector writes the collector's systemd-journal-remote (plain HTTP
// on the lab's network, the way the hosts upload) and Prometheus (the
// three hosts' egressd, the rules of deploy/prometheus, 1 s intervals).
func (l *lab) setupCollector(repo string) {
	c := l.collector
	c.Write("/etc/systemd/system/systemd-journal-remote.service.d/http.conf",
		"[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-journal-remote --listen-http=-3 --output=/var/log/journal/remote/\n", 0o644)
	c.Link("/lib/systemd/system/systemd-journal-remote.socket", "/etc/systemd/system/sockets.target.wants/systemd-journal-remote.socket")
	c.Link("/dev/null", "/etc/systemd/system/systemd-journal-upload.service")
	rules, err := os.ReadFile(filepath.Join(repo, "deploy/prometheus/egressd.rules.yml"))
	if err != nil {
		l.t.Fatal(err)
	}
	c.Write("/etc/prometheus/egressd.rules.yml", string(rules), 0o644)
	var targets strings.Builder
	for i, ip := range hostIPs {
		fmt.Fprintf(&targets, "      - targets: [\"%s:9464\"]\n        labels: {instance: host%d}\n", ip, i+1)
	}
	c.Write("/etc/prometheus/prometheus.yml", `global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [/etc/prometheus/egressd.rules.yml]
scrape_configs:
  - job_name: egressd
    static_configs:
`+targets.String(), 0o644)
}

// writeController writes the inventory and the collection's path.
func (l *lab) writeController(deb, key string) {
	t := l.t
	repo, _ := filepath.Abs("../..")
	coll := filepath.Join(l.work, "collections", "ansible_collections", "egressd")
	if err := os.MkdirAll(coll, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(repo, "deploy/ansible"), filepath.Join(coll, "egressd")); err != nil {
		t.Fatal(err)
	}
	var hosts strings.Builder
	for i, ip := range hostIPs {
		fmt.Fprintf(&hosts, "    host%d: {ansible_host: %s}\n", i+1, ip)
	}
	inv := fmt.Sprintf(`egressd:
  hosts:
%s  vars:
    ansible_user: root
    ansible_become: false
    ansible_ssh_private_key_file: %s
    ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
    ansible_python_interpreter: /usr/bin/python3
    egressd_deb: %s
    egressd_config:
      resolvers: ["192.0.2.53"]
      metrics_listen: "0.0.0.0:9464"
    egressd_allowlists:
      app:
        user: app
        allow: ["%s:22"]
        tests: {allow: ["%s:22"], deny: ["%s:9090"]}
`, hosts.String(), key, deb, collectorIP, collectorIP, collectorIP)
	if err := os.WriteFile(filepath.Join(l.work, "inventory.yml"), []byte(inv), 0o644); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(l.work, "home")
	os.Mkdir(home, 0o700) //nolint:errcheck
	l.env = append(os.Environ(), "HOME="+home, "ANSIBLE_COLLECTIONS_PATH="+filepath.Join(l.work, "collections"),
		"ANSIBLE_LOCAL_TEMP="+filepath.Join(home, "tmp"), "ANSIBLE_NOCOLOR=1", "ANSIBLE_FORCE_COLOR=0",
		"ANSIBLE_HOST_KEY_CHECKING=False", "ANSIBLE_PIPELINING=True", "ANSIBLE_RETRY_FILES_ENABLED=False")
}

// recap is one host's line of PLAY RECAP.
type recap struct{ ok, changed, unreachable, failed int }

var recapRE = regexp.MustCompile(`(?m)^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)`)

// play runs ansible-playbook (a playbook of the collection) from the
// controller's namespace, with extra vars as YAML, and returns the recap.
func (l *lab) play(t *testing.T, playbook, extra string, args ...string) (map[string]recap, string) {
	t.Helper()
	argv := []string{"-i", filepath.Join(l.work, "inventory.yml")}
	if extra != "" {
		f := filepath.Join(l.work, fmt.Sprintf("extra-%d.yml", time.Now().UnixNano()))
		if err := os.WriteFile(f, []byte(extra), 0o644); err != nil {
			t.Fatal(err)
		}
		argv = append(argv, "-e", "@"+f)
	}
	cmd := l.net.inBridge("ansible-playbook", append(append(argv, args...), playbook)...)
	cmd.Env = l.env
	start := time.Now()
	b, _ := cmd.CombinedOutput()
	out := string(b)
	t.Logf("ansible-playbook %s %s: %v", playbook, strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	r := map[string]recap{}
	for _, m := range recapRE.FindAllStringSubmatch(out, -1) {
		var x recap
		fmt.Sscan(m[2], &x.ok)          //nolint:errcheck
		fmt.Sscan(m[3], &x.changed)     //nolint:errcheck
		fmt.Sscan(m[4], &x.unreachable) //nolint:errcheck
		fmt.Sscan(m[5], &x.failed)      //nolint:errcheck
		r[m[1]] = x
	}
	if len(r) == 0 {
		t.Fatalf("ansible-playbook printed no recap:\n%s", out)
	}
	return r, out
}

// connect tries a TCP connection as user from inside a host.
func connect(c *container, user, ip, port string) (string, error) {
	return c.Run("runuser", "-u", user, "--", "python3", "-c",
		"import socket,sys\ns=socket.create_connection((sys.argv[1],int(sys.argv[2])),5)\nprint('connected')", ip, port)
}

// install: the role installs the package and the files on every host, and
// every host enforces them: egressd check exits 0 (the kernel holds what
// the files say), and on host2 the kernel lets app reach the collector's
// ssh and refuses its Prometheus port.
func (l *lab) install(t *testing.T) {
	r, out := l.play(t, "egressd.egressd.site", "")
	for i := range l.hosts {
		h := fmt.Sprintf("host%d", i+1)
		if x, ok := r[h]; !ok || x.failed != 0 || x.unreachable != 0 || x.changed == 0 {
			t.Fatalf("%s: %+v (want changes, no failure)\n%s", h, x, out)
		}
	}
	for _, h := range l.hosts {
		if s, _ := h.Run("systemctl", "is-active", "egressd.service"); strings.TrimSpace(s) != "active" {
			t.Errorf("%s: egressd.service is %q", h.Name, s)
		}
		if out, err := h.Run("egressd", "check"); err != nil {
			t.Errorf("%s: egressd check: %v\n%s", h.Name, err, out)
		}
		if p, _ := h.Run("sh", "-c", "command -v egressd"); strings.TrimSpace(p) != "/usr/bin/egressd" {
			t.Errorf("%s: egressd on PATH is %q, want the package's /usr/bin/egressd", h.Name, p)
		}
	}
	if out, err := connect(l.hosts[1], "app", collectorIP, "22"); err != nil || !strings.Contains(out, "connected") {
		t.Errorf("host2: app to the allowed %s:22: %v\n%s", collectorIP, err, out)
	}
}

// idempotent: the same run again changes nothing on any host.
func (l *lab) idempotent(t *testing.T) {
	r, out := l.play(t, "egressd.egressd.site", "")
	for i := range l.hosts {
		h := fmt.Sprintf("host%d", i+1)
		if x := r[h]; x.changed != 0 || x.failed != 0 || x.ok == 0 {
			t.Errorf("%s: %+v, want changed=0 failed=0\n%s", h, x, out)
		}
	}
}

// badAllowlist: an allowlist that breaks its own tests: (port 9090 would be
// allowed) fails egressd validate on every host and lands on none.
func (l *lab) badAllowlist(t *testing.T) {
	before := l.files(t, "/etc/egressd/allow.d/app.yaml")
	r, out := l.play(t, "egressd.egressd.site", fmt.Sprintf(`egressd_allowlists:
  app:
    user: app
    allow: ["%s:1-65535"]
    tests: {allow: ["%s:22"], deny: ["%s:9090"]}
`, collectorIP, collectorIP, collectorIP))
	for i := range l.hosts {
		h := fmt.Sprintf("host%d", i+1)
		if x := r[h]; x.failed == 0 || x.changed != 0 {
			t.Errorf("%s: %+v, want the task failed by validate and nothing changed", h, x)
		}
	}
	if !strings.Contains(out, "tests.deny: "+collectorIP+":9090 is allowed by entry") {
		t.Errorf("the output lacks validate's message:\n%s", out)
	}
	if after := l.files(t, "/etc/egressd/allow.d/app.yaml"); after != before {
		t.Errorf("a host's allowlist changed:\nbefore %s\nafter %s", before, after)
	}
	for _, h := range l.hosts {
		if out, err := h.Run("egressd", "check"); err != nil {
			t.Errorf("%s: egressd check after the refused change: %v\n%s", h.Name, err, out)
		}
	}
}

// files is path's content on each host, one line each.
func (l *lab) files(t *testing.T, path string) string {
	var s []string
	for _, h := range l.hosts {
		b, err := os.ReadFile(filepath.Join(h.Root, path))
		if err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
		s = append(s, fmt.Sprintf("%s=%q", h.Name, b))
	}
	return strings.Join(s, " ")
}

// denyForwardedAndAlerted: app on host2 is denied a connection; the deny
// event arrives on the collector (systemd-journal-upload → -remote) with its
// fields within 10 s, and Prometheus fires EgressdConnectionDenied for host2
// and no other host.
func (l *lab) denyForwardedAndAlerted(t *testing.T) {
	// The counter must be scraped at 0 before the deny (increase() needs two samples).
	l.waitQuery(t, `egressd_denied_packets_total{instance="host2",allowlist="app"} == 0`, 1, time.Minute)

	// The control: root (not protected) reaches the same port, so what
	// app meets below is egressd, not a closed port.
	if out, err := connect(l.hosts[1], "root", collectorIP, "9090"); err != nil || !strings.Contains(out, "connected") {
		t.Fatalf("host2: root cannot reach %s:9090 (Prometheus): %v\n%s", collectorIP, err, out)
	}
	denied := time.Now()
	if out, err := connect(l.hosts[1], "app", collectorIP, "9090"); err == nil || strings.Contains(out, "connected") {
		t.Fatalf("host2: app reached %s:9090, which its allowlist does not allow:\n%s", collectorIP, out)
	}
	var entry map[string]any
	for {
		out, _ := l.collector.Run("journalctl", "-D", "/var/log/journal/remote", "--no-pager", "-o", "json",
			"EGRESSD_EVENT=deny", "_HOSTNAME=host2")
		if line := strings.TrimSpace(out); line != "" && strings.HasPrefix(line, "{") {
			if err := json.Unmarshal([]byte(strings.SplitN(line, "\n", 2)[0]), &entry); err != nil {
				t.Fatalf("collector journal: %v\n%s", err, out)
			}
			break
		}
		if time.Since(denied) > 10*time.Second {
			ls, _ := l.collector.Run("ls", "-l", "/var/log/journal/remote")
			st, _ := l.hosts[1].Run("systemctl", "status", "--no-pager", "systemd-journal-upload.service")
			t.Fatalf("no deny event of host2 on the collector 10 s after the connect\ncollector: %s\nhost2: %s", ls, st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("deny event on the collector %v after the connect", time.Since(denied).Round(time.Millisecond))
	for k, want := range map[string]string{"EGRESSD_ALLOWLIST": "app", "EGRESSD_USER": "app", "EGRESSD_DST": collectorIP,
		"EGRESSD_DPORT": "9090", "EGRESSD_PROTO": "tcp", "EGRESSD_AUDIT": "false"} {
		if entry[k] != want {
			t.Errorf("collector: %s = %v, want %q (entry %v)", k, entry[k], want, entry)
		}
	}
	if id, _ := entry["MESSAGE_ID"].(string); len(id) != 32 {
		t.Errorf("collector: MESSAGE_ID %q", id)
	}

	// The alert: firing for host2, and for no other instance.
	deadline := time.Now().Add(time.Minute)
	for {
		firing := l.firing(t, "EgressdConnectionDenied")
		if len(firing) > 0 {
			if strings.Join(firing, ",") != "host2/app" {
				t.Errorf("EgressdConnectionDenied fires for %v, want host2/app only", firing)
			}
			t.Logf("alert firing %v after the connect", time.Since(denied).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("EgressdConnectionDenied not firing a minute after the deny: %s", l.prom(t, "alerts"))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// rollout: the collection's rollout playbook, enforce phase in serial: 1
// batches, adds allowlist reports; host1 takes it and passes egressd
// check; host2 takes it and fails its check (user reports does not exist
// there), which stops the rollout: host3 keeps its files. Prometheus shows
// the skew as two configuration hashes.
func (l *lab) rollout(t *testing.T) {
	r, out := l.play(t, "egressd.egressd.rollout", `egressd_rollout_phase: enforce
egressd_rollout_serial: 1
egressd_rollout_check_retries: 0
egressd_allowlists__reports:
  reports: {user: reports, allow: ["`+collectorIP+`:22"]}
`)
	if x := r["host1"]; x.failed != 0 || x.changed == 0 {
		t.Errorf("host1: %+v, want changed and not failed", x)
	}
	if x := r["host2"]; x.failed == 0 {
		t.Errorf("host2: %+v, want its egressd check to fail", x)
	}
	if x := r["host3"]; x.changed != 0 || x.failed != 0 {
		t.Errorf("host3: %+v, want it untouched", x)
	}
	if !strings.Contains(out, "user_missing") {
		t.Errorf("the failed check does not say why:\n%s", out)
	}
	for i, want := range []bool{true, true, false} {
		_, err := os.Stat(filepath.Join(l.hosts[i].Root, "etc/egressd/allow.d/reports.yaml"))
		if got := err == nil; got != want {
			t.Errorf("host%d has allow.d/reports.yaml: %v, want %v", i+1, got, want)
		}
	}
	if t.Failed() {
		t.Logf("ansible-playbook:\n%s", out)
	}

	// Skew: two hashes, host1 and host2 on the new one, host3 on the old.
	l.waitQuery(t, `count(count by (hash) (egressd_config_info)) == 2`, 1, time.Minute)
	res := l.query(t, `egressd_config_info`)
	hash := map[string]string{}
	for _, s := range res {
		hash[s.Metric["instance"]] = s.Metric["hash"]
	}
	if len(hash) != 3 || hash["host1"] != hash["host2"] || hash["host1"] == hash["host3"] {
		t.Errorf("egressd_config_info by instance: %v, want host1 = host2 ≠ host3", hash)
	}
	t.Logf("count by (hash) (egressd_config_info): %v", l.query(t, `count by (hash) (egressd_config_info)`))
}

type sample struct {
	Metric map[string]string `json:"metric"`
	Value  []any             `json:"value"`
}

// prom GETs a path of Prometheus' HTTP API on the collector.
func (l *lab) prom(t *testing.T, path string, query ...string) string {
	t.Helper()
	args := []string{"python3", "-c", `import sys, urllib.request, urllib.parse
u = "http://127.0.0.1:9090/api/v1/" + sys.argv[1]
if len(sys.argv) > 2:
    u += "?" + urllib.parse.urlencode({"query": sys.argv[2]})
print(urllib.request.urlopen(u, timeout=10).read().decode())`, path}
	out, err := l.collector.Run(append(args, query...)...)
	if err != nil {
		t.Fatalf("Prometheus API %s: %v\n%s", path, err, out)
	}
	return out
}

func (l *lab) query(t *testing.T, q string) []sample {
	t.Helper()
	var r struct {
		Data struct {
			Result []sample `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(l.prom(t, "query", q)), &r); err != nil {
		t.Fatalf("query %s: %v", q, err)
	}
	return r.Data.Result
}

// waitQuery waits until q returns n series.
func (l *lab) waitQuery(t *testing.T, q string, n int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for len(l.query(t, q)) != n {
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus: %s has not %d series after %v; targets: %s", q, n, d, l.prom(t, "targets"))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// firing lists instance/allowlist of the firing alerts of that name.
func (l *lab) firing(t *testing.T, name string) []string {
	t.Helper()
	var r struct {
		Data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(l.prom(t, "alerts")), &r); err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, a := range r.Data.Alerts {
		if a.Labels["alertname"] == name && a.State == "firing" {
			s = append(s, a.Labels["instance"]+"/"+a.Labels["allowlist"])
		}
	}
	sort.Strings(s)
	return s
}
