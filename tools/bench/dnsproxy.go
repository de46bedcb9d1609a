//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/internal/dnstest"
)

// ---- DNS proxy (issue 14) ----
//
// A real egressd run in the namespace with one dns: proxy allowlist
// (uid proxyUID, "*.bench.example:443"); its clients send to the upstream's
// own address, 192.0.2.53:53, and the kernel's nat chain redirects them to
// the proxy on 127.0.0.1:153, which identifies them by conntrack. The same
// queries from an unlisted uid go straight to the upstream: the comparison.

const (
	proxyUID  = 61001
	directUID = 61999 // in no allowlist: not redirected
	upstream  = "192.0.2.53:53"
	freshPool = 80000 // distinct names, each with its own address
)

// dialAs is netns.DialAs: a UDP socket of uid on an ephemeral port, as libc
// takes one. (The first version of this benchmark had to bind its clients
// outside the ephemeral range: a client that got a port another socket had
// used for the same upstream joined that flow's conntrack entry and was
// refused; proxy users' DNS flows now have a conntrack zone of their own.)
func dialAs(w *world, uid int) (net.Conn, error) {
	var conn net.Conn
	err := w.ns.Do(func() error {
		if _, err := unix.SetfsuidRetUid(uid); err != nil {
			return err
		}
		defer unix.SetfsuidRetUid(0) //nolint:errcheck
		var err error
		d := net.Dialer{Timeout: time.Second}
		conn, err = d.Dial("udp", upstream)
		return err
	})
	return conn, err
}

func packQuery(name string) []byte {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeA)
	b, err := q.Pack()
	if err != nil {
		panic(err)
	}
	return b
}

// exchange sends msg (its ID set to id) on c and waits for the answer with
// that ID; it returns an error unless the answer is NOERROR.
func exchange(c net.Conn, msg, buf []byte, id uint16) error {
	binary.BigEndian.PutUint16(msg, id)
	c.SetDeadline(time.Now().Add(time.Second)) //nolint:errcheck
	if _, err := c.Write(msg); err != nil {
		return err
	}
	for {
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		if n < 12 || binary.BigEndian.Uint16(buf) != id {
			continue
		}
		if rc := buf[3] & 0xf; rc != dns.RcodeSuccess {
			return fmt.Errorf("rcode %s", dns.RcodeToString[int(rc)])
		}
		return nil
	}
}

// sequential asks name n times, each from a new socket of uid (as a libc
// resolver does), and returns the sorted round-trip times (socket creation
// excluded, the kernel's redirect of the first packet included).
func sequential(w *world, uid int, name func(i int) string, n int) ([]time.Duration, error) {
	lat, failed, err := sequentialF(w, uid, name, n)
	if err == nil && failed > 0 {
		err = fmt.Errorf("uid %d: %d of %d queries failed", uid, failed, n)
	}
	return lat, err
}

// sequentialF is sequential that counts failed queries (timeouts, errors)
// instead of stopping at the first.
func sequentialF(w *world, uid int, name func(i int) string, n int) ([]time.Duration, int, error) {
	failed := 0
	buf := make([]byte, 1500)
	lat := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		c, err := dialAs(w, uid)
		if err != nil {
			return nil, failed, err
		}
		msg := packQuery(name(i))
		t0 := time.Now()
		err = exchange(c, msg, buf, uint16(i))
		d := time.Since(t0)
		c.Close()
		if err != nil {
			if failed == 0 {
				fmt.Fprintf(os.Stderr, "  uid %d query %d (%s): %v\n", uid, i, name(i), err)
			}
			failed++
			continue
		}
		lat = append(lat, d)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat, failed, nil
}

func pct(s []time.Duration, p float64) time.Duration {
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func us(d time.Duration) string {
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
}

// load runs conc clients of uid, each its own socket, asking back to back
// for d; name(k) is the k-th query's name (k counted over all clients).
// It returns answered queries per second and the failures.
func load(w *world, uid, conc int, d time.Duration, name func(k int64) string) (float64, int64, error) {
	conns := make([]net.Conn, conc)
	for i := range conns {
		c, err := dialAs(w, uid)
		if err != nil {
			return 0, 0, err
		}
		defer c.Close()
		conns[i] = c
	}
	var answered, failed, seq atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for _, c := range conns {
		wg.Add(1)
		go func(c net.Conn) {
			defer wg.Done()
			buf := make([]byte, 1500)
			var id uint16
			msgs := map[string][]byte{}
			for time.Now().Before(deadline) {
				n := name(seq.Add(1) - 1)
				msg, ok := msgs[n]
				if !ok {
					msg = packQuery(n)
					if len(msgs) < 4 {
						msgs[n] = msg
					}
				}
				id++
				if exchange(c, msg, buf, id) != nil {
					failed.Add(1)
				} else {
					answered.Add(1)
				}
			}
		}(c)
	}
	wg.Wait()
	return float64(answered.Load()) / time.Since(start).Seconds(), failed.Load(), nil
}

// scrape reads the daemon's metrics (inside the namespace).
func scrape(w *world) (map[string]float64, error) {
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(_ context.Context, network, addr string) (net.Conn, error) {
			return w.ns.DialAs(0, network, addr, 5*time.Second)
		}}}
	resp, err := cl.Get("http://127.0.0.1:9464/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// histQuantile estimates quantile q of the histogram name from the bucket
// counts of after minus before, interpolating linearly inside a bucket (as
// Prometheus' histogram_quantile does).
func histQuantile(before, after map[string]float64, name string, q float64) (float64, float64) {
	type bucket struct{ le, n float64 }
	var bs []bucket
	prefix := name + `_bucket{le="`
	for k, v := range after {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		le, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimPrefix(k, prefix), `"}`), 64)
		if err != nil {
			le = math.Inf(1)
		}
		bs = append(bs, bucket{le, v - before[k]})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	if len(bs) == 0 || bs[len(bs)-1].n == 0 {
		return math.NaN(), 0
	}
	total := bs[len(bs)-1].n
	rank := q * total
	lo, below := 0.0, 0.0
	for _, b := range bs {
		if b.n >= rank {
			if math.IsInf(b.le, 1) {
				return lo, total
			}
			return lo + (b.le-lo)*(rank-below)/max(b.n-below, 1), total
		}
		lo, below = b.le, b.n
	}
	return lo, total
}

func dnsProxy(bin string) error {
	w, err := newWorld()
	if err != nil {
		return err
	}
	defer w.Close()
	if err := os.MkdirAll(filepath.Join(w.dir, "allow.d"), 0o755); err != nil {
		return err
	}
	if err := w.Write("egressd.yaml", "resolvers: [\""+upstream+"\"]\nmin_ttl: 1s\nlinger: 1s\ndns_proxy_port: 153\nmetrics_listen: 127.0.0.1:9464\n"); err != nil {
		return err
	}
	if err := w.Write("allow.d/bench.yaml", fmt.Sprintf("user: %d\ndns: proxy\nallow_private_answers: true\nallow:\n  - \"*.bench.example:443\"\n", proxyUID)); err != nil {
		return err
	}
	const hot = "q.bench.example"
	w.dns.Set(hot, dnstest.Record{A: []netip.Addr{addr(freshPool + 1)}, TTL: 300})
	fresh := func(k int64) string { return fmt.Sprintf("f%d.bench.example", k%freshPool) }
	for k := 0; k < freshPool; k++ {
		w.dns.Set(fresh(int64(k)), dnstest.Record{A: []netip.Addr{addr(k)}, TTL: 1}) // short-lived: at thousands of new answers a second, the live ones stay under dns_proxy_max_answers (65,536)
	}
	d, err := w.daemon(bin)
	if err != nil {
		return err
	}
	defer d.Kill()

	// 1. Added latency, sequential, a new socket per query; warm up first.
	n := 5000
	if *quick {
		n = 2000
	}
	one := func(int) string { return hot }
	if _, err := sequential(w, proxyUID, one, 200); err != nil {
		return fmt.Errorf("%w\n%s", err, w.LogText())
	}
	if _, err := sequential(w, directUID, one, 200); err != nil {
		return err
	}
	var px, dr []time.Duration
	for round := 0; round < 10; round++ { // interleaved, so both see the same neighbours
		a, err := sequential(w, proxyUID, one, n/10)
		if err != nil {
			return err
		}
		b, err := sequential(w, directUID, one, n/10)
		if err != nil {
			return err
		}
		px, dr = append(px, a...), append(dr, b...)
	}
	sort.Slice(px, func(i, j int) bool { return px[i] < px[j] })
	sort.Slice(dr, func(i, j int) bool { return dr[i] < dr[j] })
	add50, add99 := pct(px, .5)-pct(dr, .5), pct(px, .99)-pct(dr, .99)
	add(row{fmt.Sprintf("DNS proxy: added latency per query, sequential, new socket each (%d queries, one name)", len(px)),
		fmt.Sprintf("proxied p50 %s, p99 %s (added p50 %s, p99 %s)", us(pct(px, .5)), us(pct(px, .99)), us(add50), us(add99)),
		fmt.Sprintf("direct to the upstream: p50 %s, p99 %s", us(pct(dr, .5)), us(pct(dr, .99))), "—",
		"added p50 ≤ 0.3 ms, p99 ≤ 1 ms", ok(add50 <= 300*time.Microsecond && add99 <= time.Millisecond)})

	// 2. Throughput, 32 clients, each its own socket.
	const conc = 32
	dur3 := 3 * time.Second
	hotName := func(int64) string { return hot }
	t0, err := scrape(w)
	if err != nil {
		return err
	}
	if f := os.Getenv("EGRESSD_BENCH_PERF"); f != "" { // perf record the daemon during the proxied load
		go w.Run("perf", "record", "-g", "-o", f, "-p", strconv.Itoa(d.Cmd.Process.Pid), "--", "sleep", "2") //nolint:errcheck
	}
	// System calls per answer, where perf can count them (the daemon's
	// raw_syscalls:sys_enter over the load's first two seconds).
	sysc := make(chan float64, 1)
	if _, err := exec.LookPath("perf"); err == nil {
		go func() {
			_, out, err := w.Run("perf", "stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-p", strconv.Itoa(d.Cmd.Process.Pid), "--", "sleep", "2")
			n := math.NaN()
			if f := strings.Split(strings.TrimSpace(string(out)), ","); err == nil && len(f) > 0 {
				if v, err := strconv.ParseFloat(f[0], 64); err == nil {
					n = v
				}
			}
			sysc <- n
		}()
	} else {
		sysc <- math.NaN()
	}
	pq, pf, err := load(w, proxyUID, conc, dur3, hotName)
	if err != nil {
		return err
	}
	nsys := <-sysc
	t1, err := scrape(w)
	if err != nil {
		return err
	}
	answers := t1[`egressd_dns_proxy_queries_total{allowlist="bench",result="answered"}`] - t0[`egressd_dns_proxy_queries_total{allowlist="bench",result="answered"}`]
	cpuPer := (t1["process_cpu_seconds_total"] - t0["process_cpu_seconds_total"]) / max(answers, 1)
	hits := (t1["egressd_dns_proxy_cache_hits_total"] - t0["egressd_dns_proxy_cache_hits_total"]) / max(answers, 1)
	h50, _ := histQuantile(t0, t1, "egressd_dns_proxy_duration_seconds", .5)
	h99, _ := histQuantile(t0, t1, "egressd_dns_proxy_duration_seconds", .99)
	fmt.Fprintf(os.Stderr, "  proxied load: daemon CPU %s per answer; proxy's own duration p50 %s, p99 %s; results %v\n", us(secs(cpuPer)), us(secs(h50)), us(secs(h99)), results(t0, t1))
	dq, df, err := load(w, directUID, conc, dur3, hotName)
	if err != nil {
		return err
	}
	add(row{fmt.Sprintf("DNS proxy: throughput, %d concurrent clients, %s, one name", conc, dur3),
		fmt.Sprintf("%.0f answers/s (%d failed or timed out); proxy CPU %s per answer (process CPU time / answers); %.1f system calls per answer; %.1f %% from the answer cache", pq, pf, us(secs(cpuPer)), nsys/(pq*2), hits*100),
		fmt.Sprintf("direct to the upstream: %.0f/s (%d failed)", dq, df), fmt.Sprintf("%.0f%% of direct", pq/dq*100),
		"≥ 60 % of direct and ≥ 40,000/s (quiet machine)", ok(pq >= 0.6*dq && pq >= 40000)})

	// 3. Answer to kernel: every answer a new name with a new address.
	const kname = "egressd_dns_proxy_kernel_seconds"
	m0, err := scrape(w)
	if err != nil {
		return err
	}
	nf := 2000
	if f := os.Getenv("EGRESSD_BENCH_PERF"); f != "" { // and during the sequential new-name queries
		args := []string{"record", "-g", "-o", f + ".kernel", "-p", strconv.Itoa(d.Cmd.Process.Pid)}
		if ev := os.Getenv("EGRESSD_BENCH_PERF_EVENT"); ev != "" { // e.g. sched:sched_switch for where it waits
			args = append(args, "-e", ev)
		}
		go w.Run("perf", append(args, "--", "sleep", "5")...) //nolint:errcheck
	}
	lat, nff, err := sequentialF(w, proxyUID, func(i int) string { return fresh(int64(i)) }, nf)
	if err != nil {
		return err
	}
	m1, err := scrape(w)
	if err != nil {
		return err
	}
	k50, cnt := histQuantile(m0, m1, kname, .5)
	k99, _ := histQuantile(m0, m1, kname, .99)
	w50, wcnt := histQuantile(m0, m1, "egressd_dns_proxy_write_seconds", .5)
	w99, _ := histQuantile(m0, m1, "egressd_dns_proxy_write_seconds", .99)
	add(row{fmt.Sprintf("DNS proxy: answer → kernel, sequential, %d new names each with a new address", nf),
		fmt.Sprintf("kernel p50 %s, p99 %s (%0.f answers; histogram, interpolated; the transactions alone: p50 %s, p99 %s, %.0f of them); query p50 %s, p99 %s; %d of %d queries failed or timed out (1 s)",
			us(secs(k50)), us(secs(k99)), cnt, us(secs(w50)), us(secs(w99)), wcnt, us(pct(lat, .5)), us(pct(lat, .99)), nff, nf),
		fmt.Sprintf("same proxy, one name: query p50 %s, p99 %s", us(pct(px, .5)), us(pct(px, .99))), "—",
		"kernel p99 ≤ 1 ms", ok(k99 <= 0.001)})

	var next atomic.Int64
	next.Store(int64(nf))
	if f := os.Getenv("EGRESSD_BENCH_PERF"); f != "" { // and during the flood of new addresses
		go w.Run("perf", "record", "-g", "-o", f+".flood", "-p", strconv.Itoa(d.Cmd.Process.Pid), "--", "sleep", "2") //nolint:errcheck
	}
	fq, ff, err := load(w, proxyUID, conc, dur3, func(int64) string { return fresh(next.Add(1)) })
	if err != nil {
		return err
	}
	m2, err := scrape(w)
	if err != nil {
		return err
	}
	c50, ccnt := histQuantile(m1, m2, kname, .5)
	c99, _ := histQuantile(m1, m2, kname, .99)
	wrap := ""
	if next.Load() >= freshPool {
		wrap = fmt.Sprintf(" (pool of %d names exhausted: later answers were not new)", freshPool)
	}
	fw50, fwcnt := histQuantile(m1, m2, "egressd_dns_proxy_write_seconds", .5)
	fw99, _ := histQuantile(m1, m2, "egressd_dns_proxy_write_seconds", .99)
	fAnswers := m2[`egressd_dns_proxy_queries_total{allowlist="bench",result="answered"}`] - m1[`egressd_dns_proxy_queries_total{allowlist="bench",result="answered"}`]
	fCPU := (m2["process_cpu_seconds_total"] - m1["process_cpu_seconds_total"]) / max(fAnswers, 1)
	add(row{fmt.Sprintf("DNS proxy: answer → kernel under load, %d clients, %s, every answer a new address%s", conc, dur3, wrap),
		fmt.Sprintf("kernel p50 %s, p99 %s (%.0f answers; histogram, interpolated; waits for the group commit included; the transactions alone: p50 %s, p99 %s, %.0f of them); %.0f answers/s (%d failed); proxy CPU %s per answer",
			us(secs(c50)), us(secs(c99)), ccnt, us(secs(fw50)), us(secs(fw99)), fwcnt, fq, ff, us(secs(fCPU))),
		"—", "—", "kernel p99 ≤ 1 ms", ok(c99 <= 0.001)})
	return nil
}

func results(a, b map[string]float64) string {
	var out []string
	for k, v := range b {
		if strings.HasPrefix(k, "egressd_dns_proxy_queries_total{") && v-a[k] > 0 {
			out = append(out, fmt.Sprintf("%s=%.0f", k[len("egressd_dns_proxy_queries_total"):], v-a[k]))
		}
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func secs(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
