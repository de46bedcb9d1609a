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

// Red team of issue 27, slowloris: a local user fills every slot with
// connections that trickle a header byte at a time, or send a request
// whose body never comes. Trickling does not extend the header deadline:
// each connection is cut by ReadHeaderTimeout or ReadTimeout, and a scrape
// gets a slot at the latest when they run out.
func TestServeSlowClientsAreCut(t *testing.T) {
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

	cut := make(chan time.Duration, MaxConns)
	for i := range MaxConns {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go func() {
			start := time.Now()
			if i%2 == 0 { // headers trickled, a byte every 100 ms
				c.Write([]byte("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")) //nolint:errcheck
				for {
					time.Sleep(100 * time.Millisecond)
					if _, err := c.Write([]byte("a")); err != nil {
						break
					}
				}
			} else { // a body announced, never sent; the answer never read
				c.Write([]byte("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")) //nolint:errcheck
				io.Copy(io.Discard, c)                                                                     //nolint:errcheck
			}
			cut <- time.Since(start)
		}()
	}
	time.Sleep(200 * time.Millisecond) // every slot taken
	cl := &http.Client{Timeout: readTimeout + writeTimeout + 5*time.Second}
	resp, err := cl.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatalf("a scrape while slow clients held every slot: %v", err)
	}
	io.Copy(io.Discard, resp.Body) //nolint:errcheck
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("scrape: %s", resp.Status)
	}
	// Every slow connection was closed by the server, none outlived the
	// longest per-connection limit.
	for range MaxConns {
		select {
		case d := <-cut:
			if d > readTimeout+writeTimeout+idleTimeout {
				t.Errorf("a slow connection was held %v", d)
			}
		case <-time.After(readTimeout + writeTimeout + idleTimeout):
			t.Fatal("a slow connection is still held")
		}
	}
}
