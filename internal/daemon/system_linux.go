package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/bindguard"
	"github.com/egressd/egressd/internal/controller"
	"github.com/egressd/egressd/internal/deny"
	"github.com/egressd/egressd/internal/dnsproxy"
	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/internal/lastgood"
	"github.com/egressd/egressd/internal/metrics"
	"github.com/egressd/egressd/internal/nflog"
	"github.com/egressd/egressd/internal/privilege"
	"github.com/egressd/egressd/internal/sdnotify"
	"github.com/egressd/egressd/internal/state"
	"github.com/egressd/egressd/ruleset"
	"go.uber.org/zap"
)

// ErrNotAdmin: egressd run needs root or CAP_NET_ADMIN (exit 1).
var ErrNotAdmin = errors.New("needs root or CAP_NET_ADMIN (it changes nftables): run it as root, or through egressd.service, which grants CAP_NET_ADMIN to its own user")

// ErrRefused: another daemon holds the runtime directory's lock (exit 1).
var ErrRefused = errors.New("refusing to start")

// Run is `egressd run` on this host: nftables through netlink, NFLOG,
// conntrack for the DNS proxy, cgroup BPF for listen:, systemd's notify
// socket, SIGTERM/SIGINT to stop and SIGHUP to reload. It returns when ctx
// ends or a stop signal arrives, after the stop order (run); nil on a clean
// stop. An invalid configuration at start is controller.ErrConfig.
func Run(ctx context.Context, s Settings) error {
	if !privilege.NetAdmin() {
		return ErrNotAdmin
	}
	log := s.Log
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// SIGHUP is a reload from the start on, never the default (exit).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	release, err := state.Lock(s.RuntimeDir)
	if err != nil {
		log.Error("refusing to start", event.Field(event.StartRefused), zap.Error(err))
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	defer release()
	kernel := &ruleset.Netlink{}
	m := metrics.New()
	// One notify socket for the daemon's life: READY=1 and the watchdog's
	// heartbeats need no new descriptor (nil outside systemd).
	notifier, err := sdnotify.Open()
	if err != nil {
		log.Error("cannot notify systemd", event.Field(event.NotifyFailed), zap.Error(err))
	}
	defer notifier.Close() //nolint:errcheck
	listen := &bindguard.Enforcer{Dir: s.BPFDir, Cgroup: s.ListenCgroup}
	w := World{
		Kernel: kernel, Metrics: m, Monitor: kernel.Watch, Notify: notifier.Send,
		Heartbeat: watchdogHeartbeat(notifier), // WATCHDOG=1 from the loop when WatchdogSec= is set
		Listen:    listen,
		Hangup:    hup,
		// listen: restriction (cgroup BPF): its reports become bind_denied
		// events once it is loaded.
		BindReports: func(open func(BindReader)) {
			listen.OnOpen = func(g *bindguard.Guard) {
				rd, err := g.Events()
				if err != nil {
					log.Error("cannot read refused binds; they are still refused, but not reported", event.Field(event.DenyLogFailed), zap.Error(err))
					return
				}
				open(func(ctx context.Context, lookup deny.Lookup, interval time.Duration, rec *deny.Recent) {
					deny.RunBinds(ctx, rd, g.Lost, lookup, interval, log, m, rec)
				})
			}
		},
		DNSProxy: func(ctx context.Context, observe func(o dnsproxy.Observation)) (controller.DNSProxy, func(), error) {
			return newDNSProxy(ctx, kernel, log, m, observe)
		},
		DenyLog: func(group uint16) (DenyReader, error) {
			l, err := nflog.Listen(group, 0)
			if err != nil {
				return nil, err
			}
			return func(ctx context.Context, lookup deny.Lookup, prefix string, interval time.Duration, rec *deny.Recent) {
				deny.Run(ctx, l, lookup, prefix, interval, log, m, rec)
			}, nil
		},
		ListenMetrics: func(ms MetricsSettings) (Listener, error) {
			ln, err := listenMetrics(ms)
			if err != nil {
				return nil, err
			}
			return metricsListener{ln: ln, m: m, log: log}, nil
		},
	}
	// $STATE_DIRECTORY: invalid files at start enforce the last good configuration.
	if s.StateDir != "" {
		w.LastGood = &lastgood.Store{Dir: s.StateDir}
	}
	return run(ctx, s, w)
}

// listenMetrics opens metrics_listen: a TCP port, or a unix socket with
// metrics_socket_mode and metrics_socket_group.
func listenMetrics(s MetricsSettings) (net.Listener, error) {
	gid := -1
	if s.SocketGroup != "" {
		g, err := config.GroupID(s.SocketGroup)
		if err != nil {
			return nil, fmt.Errorf("metrics_socket_group %q: %w", s.SocketGroup, err)
		}
		gid = g
	}
	// The socket's directories follow the configuration's trust rules: no
	// other user may replace the socket scrapers connect to.
	return metrics.Listen(s.Listen, s.SocketMode, gid, config.Trust{})
}

// metricsListener serves the metrics on a bound endpoint.
type metricsListener struct {
	ln  net.Listener
	m   *metrics.Metrics
	log *zap.Logger
}

func (l metricsListener) Serve(ctx context.Context) error {
	return metrics.Serve(ctx, l.ln, l.m, l.log)
}
func (l metricsListener) Addr() string { return l.ln.Addr().String() }
