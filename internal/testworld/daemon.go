//go:build linux

package testworld

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/egressd/egressd/internal/event"
)

// Event is one line of the daemon's JSON log; its "event" key is one of
// internal/event's names.
type Event = map[string]any

// eventLog holds every line that the daemons of one world logged, in order:
// one log across restarts, so a position taken before a restart still counts.
type eventLog struct {
	mu     sync.Mutex
	events []Event
	raw    []string
}

// Daemon is an egressd process running inside a world.
type Daemon struct {
	Cmd  *exec.Cmd
	done chan struct{}
}

// Done is closed when the daemon has exited and its log is read.
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Kill kills the daemon and waits for it to exit.
func (d *Daemon) Kill() {
	d.Cmd.Process.Kill() //nolint:errcheck
	<-d.done
}

// Stop sends sig and waits up to timeout for the daemon to exit.
func (d *Daemon) Stop(sig syscall.Signal, timeout time.Duration) error {
	d.Cmd.Process.Signal(sig) //nolint:errcheck
	select {
	case <-d.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("daemon did not stop within %v", timeout)
	}
}

// Start starts cmd (an egressd daemon) inside the namespace, records each
// line of its standard error in the world's event log (and passes it to echo
// when echo is not nil), and waits up to timeout for its "started" event.
// Close kills it if it still runs.
func (w *World) Start(cmd *exec.Cmd, echo func(line string), timeout time.Duration) (*Daemon, error) {
	since := w.Mark()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := w.NS.Start(cmd); err != nil {
		return nil, fmt.Errorf("start daemon: %w", err)
	}
	d := &Daemon{Cmd: cmd, done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if echo != nil {
				echo(line)
			}
			var m Event
			if json.Unmarshal([]byte(line), &m) != nil {
				m = Event{"event": "unparsed", "line": line}
			}
			w.log.mu.Lock()
			w.log.events = append(w.log.events, m)
			w.log.raw = append(w.log.raw, line)
			w.log.mu.Unlock()
		}
		cmd.Wait() //nolint:errcheck
		close(d.done)
	}()
	w.onClose(func() {
		select {
		case <-d.done:
		default:
			d.Kill()
		}
	})
	if _, err := w.WaitEvent(event.Started, since, timeout); err != nil {
		return d, err
	}
	return d, nil
}

// Mark returns the current position in the event log, for WaitEvent and
// EventsSince.
func (w *World) Mark() int {
	w.log.mu.Lock()
	defer w.log.mu.Unlock()
	return len(w.log.events)
}

// EventsSince returns the events named name logged after position since
// (every event when name is empty).
func (w *World) EventsSince(name string, since int) []Event {
	w.log.mu.Lock()
	defer w.log.mu.Unlock()
	var out []Event
	for _, m := range w.log.events[min(since, len(w.log.events)):] {
		if name == "" || m["event"] == name {
			out = append(out, m)
		}
	}
	return out
}

// WaitEvent waits up to timeout for an event named name logged after
// position since; the error carries the whole log.
func (w *World) WaitEvent(name string, since int, timeout time.Duration) (Event, error) {
	es, err := w.WaitEvents(name, since, 1, timeout)
	if err != nil {
		return nil, err
	}
	return es[0], nil
}

// WaitEvents waits up to timeout until n events named name are logged after
// position since, and returns them.
func (w *World) WaitEvents(name string, since, n int, timeout time.Duration) ([]Event, error) {
	deadline := time.Now().Add(timeout)
	for {
		if es := w.EventsSince(name, since); len(es) >= n {
			return es[:n], nil
		}
		if time.Now().After(deadline) {
			what := fmt.Sprintf("%q event", name)
			if n > 1 {
				what = fmt.Sprintf("%d %q events", n, name)
			}
			return nil, fmt.Errorf("no %s within %v; daemon log:\n%s", what, timeout, w.LogText())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// LogText is the event log as the daemons wrote it, one line each.
func (w *World) LogText() string {
	w.log.mu.Lock()
	defer w.log.mu.Unlock()
	return strings.Join(w.log.raw, "\n")
}
