package metrics

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	return len(ents)
}

// A local user who opens many idle connections to the metrics endpoint
// holds at most MaxConns of the daemon's descriptors; the rest wait in the
// kernel's backlog. Once they go, a scrape works again.
func TestServeBoundsConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, New(), zaptest.NewLogger(t)) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	before := openFDs(t)
	const flood = 300
	var conns []net.Conn
	for range flood {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	time.Sleep(300 * time.Millisecond) // let the server accept what it will
	if held := openFDs(t) - before - flood; held > MaxConns+2 {
		t.Errorf("%d idle connections made the server hold %d descriptors; want at most %d", flood, held, MaxConns)
	}
	for _, c := range conns {
		c.Close()
	}

	// The control: a scrape is served once the flood has gone.
	cl := &http.Client{Timeout: 2 * readHeaderTimeout}
	resp, err := cl.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(body) == 0 {
		t.Errorf("scrape after the flood: %s, %d bytes", resp.Status, len(body))
	}
}
