package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/egressd/egressd/internal/event"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/net/netutil"
)

// MaxConns bounds the metrics connections open at once. Any local user can
// connect to a TCP endpoint: past the cap, new connections wait in the
// kernel's backlog, where they hold none of the daemon's descriptors, so a
// flood of connections cannot take the descriptors that configuration
// reads, DNS, netlink and sd_notify need. A scraper needs one.
const MaxConns = 16

// Per-connection limits: a connection that sends nothing, trickles its
// request or idles after it gives its slot back within seconds.
const (
	readHeaderTimeout = 3 * time.Second
	readTimeout       = 5 * time.Second
	writeTimeout      = 10 * time.Second
	idleTimeout       = 10 * time.Second
)

// Serve serves /metrics on ln until ctx ends, at most MaxConns connections
// at a time.
func Serve(ctx context.Context, ln net.Listener, m *Metrics, log *zap.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	// net/http's own complaints (accept errors) as JSON lines with an event.
	errLog, err := zap.NewStdLogAt(log.With(event.Field(event.MetricsFailed)), zapcore.WarnLevel)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: readHeaderTimeout, ReadTimeout: readTimeout,
		WriteTimeout: writeTimeout, IdleTimeout: idleTimeout, MaxHeaderBytes: 8 << 10, ErrorLog: errLog}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	err = srv.Serve(netutil.LimitListener(ln, MaxConns))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
