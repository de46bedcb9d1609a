//go:build linux

package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/internal/systest"
)

// One denied connect gives exactly one deny event, with every field right.
func TestDenyEvent(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.start()
	m := w.mark()
	start := time.Now()
	w.expect(uidA, "tcp", "192.0.2.10:8443", okRefused) // a known name's address, wrong port
	ev, err := w.waitEvent(event.Deny, m, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("deny event %v after the connect: %v", time.Since(start).Round(time.Millisecond), ev)
	want := map[string]any{"allowlist": "billing", "user": fmt.Sprint(uidA), "uid": float64(uidA), "proto": "tcp",
		"src": "192.0.2.10", "dst": "192.0.2.10", "dport": float64(8443), "count": float64(1), "summary": false, "level": "warn"}
	for k, v := range want {
		if ev[k] != v {
			t.Errorf("deny event %s = %v, want %v", k, ev[k], v)
		}
	}
	if names, _ := ev["names"].([]any); len(names) != 1 || names[0] != "api.example.test" {
		t.Errorf("deny event names = %v, want [api.example.test]", ev["names"])
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(w.eventsSince(event.Deny, m)); n != 1 {
		t.Fatalf("%d deny events for one denied connect, want 1", n)
	}
	// An unknown address carries no name; UDP is reported as udp.
	m = w.mark()
	w.expect(uidA, "udp", "203.0.113.5:5354", okRefused)
	ev, err = w.waitEvent(event.Deny, m, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ev["proto"] != "udp" || ev["dst"] != "203.0.113.5" || ev["dport"] != float64(5354) || len(ev["names"].([]any)) != 0 {
		t.Errorf("UDP deny event = %v", ev)
	}
}

// metricsGet fetches the daemon's metrics from inside the namespace.
func (w *world) metricsGet(addr string) (string, error) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
		return w.ns.DialAs(0, network, a, 2*time.Second)
	}}}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func metricValue(body, series string) (float64, bool) {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+]+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

// 10,000 denied connects: a bounded number of deny events whose counts add
// up to the packets the daemon received; the kernel's counters (metrics)
// count every one; the daemon stays responsive meanwhile.
func TestDenyFloodBounded(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.write("egressd.yaml", mainConfig+"deny_log: { rate: 100000/second, interval: 1s }\nmetrics_listen: 127.0.0.1:9464\n")
	w.start()
	m := w.mark()
	const n = 10000
	start := time.Now()
	refused := 0
	for i := 0; i < n; i++ {
		c, err := w.ns.DialAs(uidA, "tcp", "198.51.100.20:4444", time.Second)
		if err == nil {
			c.Close()
			t.Fatal("denied destination reachable during the flood")
		}
		refused++
		if i == n/2 {
			// Responsive during the flood: an allowlist edit applies.
			w.write("allow.d/web.yaml", fmt.Sprintf("user: %d\nallow: [198.51.100.20:443]\ndns: none\n", uidB))
		}
	}
	flood := time.Since(start)
	w.eventually(uidB, "tcp", "198.51.100.20:443", okConnected, 3*time.Second)
	time.Sleep(1500 * time.Millisecond) // one window for the summary
	body, err := w.metricsGet("127.0.0.1:9464")
	if err != nil {
		t.Fatal(err)
	}
	denied, ok := metricValue(body, `egressd_denied_packets_total{allowlist="billing"}`)
	if !ok || denied != n {
		t.Errorf("kernel counter for billing = %v (found %v), want %d", denied, ok, n)
	}
	received, _ := metricValue(body, "egressd_nflog_packets_total")
	evs := w.eventsSince(event.Deny, m)
	total := 0
	for _, e := range evs {
		if e["dst"] == "198.51.100.20" && e["dport"] == float64(4444) {
			total += int(e["count"].(float64))
		}
	}
	windows := int(flood/time.Second) + 3
	t.Logf("%d denied connects in %v: %d deny events (≤ 2 per window over %d windows), counts add up to %d, daemon received %v NFLOG packets, kernel counted %v",
		refused, flood.Round(time.Millisecond), len(evs), windows, total, received, denied)
	if len(evs) > 2*windows {
		t.Errorf("%d deny events for one destination over %d windows: not bounded", len(evs), windows)
	}
	if float64(total) != received || total == 0 {
		t.Errorf("event counts add up to %d, but the daemon received %v packets", total, received)
	}
	if overruns, _ := metricValue(body, "egressd_nflog_overruns_total"); overruns == 0 && total != n {
		t.Errorf("no overrun reported, yet events count %d of %d packets", total, n)
	}
	// A restart's full rebuild resets the kernel's counters; the total survives.
	w.stop(syscall.SIGTERM)
	w.start()
	if body, err = w.metricsGet("127.0.0.1:9464"); err != nil {
		t.Fatal(err)
	}
	if after, _ := metricValue(body, `egressd_denied_packets_total{allowlist="billing"}`); after != n {
		t.Errorf("after a restart the denied total is %v, want %d", after, n)
	}
}

// The kernel's rate limit bounds what reaches the log at all.
func TestDenyKernelRateLimit(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.write("egressd.yaml", mainConfig+"deny_log: { rate: 5/second, interval: 1s }\n")
	w.start()
	m := w.mark()
	start := time.Now()
	for i := 0; i < 2000; i++ {
		if c, err := w.ns.DialAs(uidA, "tcp", fmt.Sprintf("198.51.100.20:%d", 10000+i), time.Second); err == nil {
			c.Close()
			t.Fatal("denied destination reachable")
		}
	}
	took := time.Since(start)
	time.Sleep(1200 * time.Millisecond)
	evs := w.eventsSince(event.Deny, m)
	limit := int(5*(took+1200*time.Millisecond).Seconds()) + 5 + 1 // rate × time + burst
	t.Logf("2000 denied connects to distinct ports in %v: %d deny events (kernel limit ≈ %d)", took.Round(time.Millisecond), len(evs), limit)
	if len(evs) > limit || len(evs) == 0 {
		t.Errorf("%d deny events, want between 1 and %d", len(evs), limit)
	}
}

// deny_log.mode kernel writes a kernel log line with a documented prefix;
// mode none logs nothing and still rejects.
func TestDenyLogModes(t *testing.T) {
	systest.Require(t)
	systemCheck := "/proc/sys/net/netfilter/nf_log_all_netns"
	old, err := os.ReadFile(systemCheck)
	if err == nil && strings.TrimSpace(string(old)) != "1" {
		if err := os.WriteFile(systemCheck, []byte("1"), 0o644); err != nil {
			t.Fatalf("kernel log lines from a namespace need nf_log_all_netns=1: %v", err)
		}
		t.Cleanup(func() { os.WriteFile(systemCheck, old, 0o644) }) //nolint:errcheck
	}
	t.Run("kernel", func(t *testing.T) {
		w := newWorld(t)
		w.standardConfig()
		w.write("egressd.yaml", mainConfig+"deny_log: { mode: kernel, prefix: itkern }\n")
		kmsg, err := os.Open("/dev/kmsg")
		if err != nil {
			t.Skipf("cannot read the kernel log: %v", err)
		}
		defer kmsg.Close()
		if _, err := kmsg.Seek(0, io.SeekEnd); err != nil {
			t.Fatal(err)
		}
		w.start()
		m := w.mark()
		w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)
		lines := make(chan string, 100)
		go func() {
			sc := bufio.NewScanner(kmsg)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		deadline := time.After(2 * time.Second)
		for found := false; !found; {
			select {
			case l := <-lines:
				if strings.Contains(l, "itkern deny: ") && strings.Contains(l, "DST=198.51.100.20") && strings.Contains(l, "DPT=4444") &&
					strings.Contains(l, fmt.Sprintf("UID=%d", uidA)) {
					t.Logf("kernel log: %s", l)
					found = true
				}
			case <-deadline:
				t.Fatal("no kernel log line with the prefix \"itkern deny: \" and the uid")
			}
		}
		kmsg.SetDeadline(time.Now()) //nolint:errcheck
		if n := len(w.eventsSince(event.Deny, m)); n != 0 {
			t.Errorf("mode kernel produced %d deny events from the daemon", n)
		}
	})
	t.Run("none", func(t *testing.T) {
		w := newWorld(t)
		w.standardConfig()
		w.write("egressd.yaml", mainConfig+"deny_log: { mode: none }\n")
		w.start()
		m := w.mark()
		w.expect(uidA, "tcp", "198.51.100.20:4444", okRefused)
		time.Sleep(300 * time.Millisecond)
		if n := len(w.eventsSince(event.Deny, m)); n != 0 {
			t.Errorf("mode none produced %d deny events", n)
		}
	})
}
