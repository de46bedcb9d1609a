//go:build linux

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/deny"
	"github.com/egressd/egressd/internal/dnstest"
	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/internal/state"
	"golang.org/x/sys/unix"
)

func init() {
	childModes["flood"] = childFlood
	childModes["unix"] = func(path string) int { // connect to a unix socket
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
		}
		return classify(err)
	}
	childModes["read"] = func(path string) int { // read a file
		_, err := os.ReadFile(path)
		return classify(err)
	}
}

// childFlood is a local user starving a daemon of descriptors: it keeps
// EGRESSD_TEST_FLOOD idle connections open to addr, opening a new one
// whenever one ends, and reports each second how many are open, until its
// stdin closes.
func childFlood(addr string) int {
	n, err := strconv.Atoi(os.Getenv("EGRESSD_TEST_FLOOD"))
	if err != nil {
		return otherError
	}
	var open, opened atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.DialTimeout("tcp", addr, 2*time.Second)
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				open.Add(1)
				opened.Add(1)
				go func() { <-stop; c.Close() }()
				io.Copy(io.Discard, c) //nolint:errcheck // until the server closes it
				c.Close()
				open.Add(-1)
			}
		}()
	}
	go func() {
		for {
			b, _ := json.Marshal(map[string]int64{"open": open.Load(), "opened": opened.Load()})
			fmt.Println(string(b))
			time.Sleep(time.Second)
		}
	}()
	io.Copy(io.Discard, os.Stdin) //nolint:errcheck
	close(stop)
	wg.Wait()
	return okConnected
}

// runMode runs the client in mode as uid and returns its exit code.
func (w *world) runMode(uid int, mode, arg string) int {
	w.t.Helper()
	cmd := exec.Command(clientBin)
	cmd.Env = []string{"EGRESSD_TEST_CLIENT=" + mode, "EGRESSD_TEST_ADDR=" + arg}
	code, err := w.tw.RunAs(uid, cmd)
	w.must(err)
	return code
}

func openFDs(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents)
}

func mtime(path string) time.Time {
	st, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return st.ModTime()
}

// A local user (uidNone, whom no allowlist names) keeps 1,100 idle
// connections open to the metrics port, reconnecting as they close, against
// a daemon held to 1,024 descriptors (the limit under a unit without
// LimitNOFILE=). Meanwhile an administrator narrows an allowlist and a name
// moves: the edit is enforced within 2 s, the move followed, the state and
// recent-denies files written, no read of the configuration fails.
func TestMetricsFloodDoesNotStarveTheDaemon(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	w.write("egressd.yaml", mainConfig+"metrics_listen: 127.0.0.1:9464\n")
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nallow:\n  - api.example.test:443\n  - 198.51.100.0/24:443\n", uidA))
	w.start()
	pid := w.daemon.Process.Pid
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: 1024, Max: 1024}, nil); err != nil {
		t.Fatal(err)
	}
	w.expect(uidA, "tcp", "198.51.100.20:443", okConnected)
	w.expect(uidA, "tcp", "192.0.2.11:443", okRefused)
	idle := openFDs(pid)

	const conns = 1100
	flood := w.startChild(uidNone, "flood", "127.0.0.1:9464", "EGRESSD_TEST_FLOOD="+strconv.Itoa(conns))
	var report map[string]any
	for deadline := time.Now().Add(20 * time.Second); ; {
		report = flood.next(t, 5*time.Second)
		if report["open"].(float64) >= conns {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the flood opened only %v connections", report["open"])
		}
	}
	time.Sleep(2 * time.Second) // the flood at full strength, reconnecting
	during := openFDs(pid)
	t.Logf("daemon descriptors: %d idle, %d with %d connections open to its metrics port (limit 1024)", idle, during, conns)

	// The edit and the DNS move land during the flood.
	mark := w.mark()
	statePath := filepath.Join(w.runDir(), state.File)
	deniesPath := filepath.Join(w.runDir(), deny.RecentFile)
	stateBefore, deniesBefore := mtime(statePath), mtime(deniesPath)
	edited := time.Now()
	w.write("allow.d/billing.yaml", fmt.Sprintf("user: %d\nallow:\n  - api.example.test:443\n", uidA))
	w.dns.Set("api.example.test", dnstest.Record{A: []netip.Addr{netip.MustParseAddr("192.0.2.11")}, TTL: 2})
	took := w.eventually(uidA, "tcp", "198.51.100.20:443", okRefused, 2*time.Second)
	t.Logf("the narrowing edit was enforced %v after the write, during the flood", took.Round(time.Millisecond))
	w.eventually(uidA, "tcp", "192.0.2.11:443", okConnected, 10*time.Second)
	t.Logf("the name's move (TTL 2 s) was followed %v after the edit", time.Since(edited).Round(time.Millisecond))
	for deadline := time.Now().Add(3 * time.Second); !mtime(statePath).After(stateBefore) || !mtime(deniesPath).After(deniesBefore); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("during the flood: state.json written %v (before %v), denies.json %v (before %v)",
				mtime(statePath), stateBefore, mtime(deniesPath), deniesBefore)
			break
		}
	}
	for len(flood.lines) > 0 { // the latest report, not a buffered one
		<-flood.lines
	}
	if report = flood.next(t, 5*time.Second); report["open"].(float64) < conns/2 {
		t.Errorf("the flood weakened during the test: %v", report)
	}
	t.Logf("flood: %v", report)
	for _, name := range []string{event.ConfigRejected, event.ConfigReadFailed, event.ResolveFailed, event.StateFailed, event.NotifyFailed} {
		if es := w.eventsSince(name, mark); len(es) > 0 {
			t.Errorf("%d %s events during the flood, first: %v", len(es), name, es[0])
		}
	}
	if during > 1024-64 {
		t.Errorf("the daemon held %d descriptors during the flood (limit 1024): the metrics endpoint is not bounded", during)
	}
	flood.wait(t)
	if _, err := w.metricsGet("127.0.0.1:9464"); err != nil {
		t.Errorf("a scrape after the flood: %v", err)
	}
}

// Who may read the metrics and the state file is the operator's choice: on
// a unix socket with mode 0660 and a group, a local user outside the group
// cannot connect (on 127.0.0.1 every local user can); a member can. The
// state file, which lists every allowlist, with state_mode 0640 and a
// group: the same.
func TestMetricsSocketAndStateFileModes(t *testing.T) {
	w := newWorld(t)
	w.standardConfig()
	sock := filepath.Join(w.runDir(), "metrics.sock")
	w.write("egressd.yaml", mainConfig+fmt.Sprintf("metrics_listen: unix:%s\nmetrics_socket_mode: \"0660\"\nmetrics_socket_group: %d\n"+
		"state_mode: \"0640\"\nstate_group: %d\n", sock, uidB, uidB))
	if err := os.MkdirAll(w.runDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	w.start()
	statePath := filepath.Join(w.runDir(), state.File)
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{{sock, os.ModeSocket | 0o660}, {statePath, 0o640}} {
		// state.json is published after "started": wait for it.
		var fi os.FileInfo
		var err error
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if fi, err = os.Stat(f.path); err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != f.mode || fi.Sys().(*syscall.Stat_t).Gid != uidB {
			t.Errorf("%s: %v gid %d, want %v gid %d", f.path, fi.Mode(), fi.Sys().(*syscall.Stat_t).Gid, f.mode, uidB)
		}
	}
	for _, c := range []struct {
		uid, want int
	}{{uidNone, okRefused}, {uidB, okConnected}} {
		if code := w.runMode(c.uid, "unix", sock); code != c.want {
			t.Errorf("uid %d connecting to the metrics socket: %s, want %s", c.uid, resultName[code], resultName[c.want])
		}
		if code := w.runMode(c.uid, "read", statePath); code != c.want {
			t.Errorf("uid %d reading state.json: %s, want %s", c.uid, resultName[code], resultName[c.want])
		}
	}
	// The scraper's side: metrics over the socket.
	cl := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return net.Dial("unix", sock)
	}}}
	resp, err := cl.Get("http://egressd/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "egressd_build_info") {
		t.Errorf("metrics over the unix socket: %s", body)
	}
	// egressd check (root) still reads the state file.
	if _, out, err := w.tw.Run(egressd, "check", "--config", w.tw.Config(), "--runtime-dir", w.runDir()); err != nil {
		t.Errorf("egressd check with state_mode 0640: %v\n%s", err, out)
	}
	// metrics_listen moved to another socket: the old one goes with it (a
	// socket left behind refuses scrapers as if egressd were down).
	moved := filepath.Join(w.runDir(), "metrics2.sock")
	since := w.mark()
	w.write("egressd.yaml", mainConfig+fmt.Sprintf("metrics_listen: unix:%s\nmetrics_socket_mode: \"0660\"\nmetrics_socket_group: %d\n"+
		"state_mode: \"0640\"\nstate_group: %d\n", moved, uidB, uidB))
	if _, err := w.waitEvent(event.MetricsListening, since, 10*time.Second); err != nil {
		t.Fatalf("metrics_listen moved: %v\n%s", err, w.logText())
	}
	if _, err := os.Lstat(moved); err != nil {
		t.Errorf("the new socket: %v", err)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("the old metrics socket is left after metrics_listen moved: %v", err)
	}
}
