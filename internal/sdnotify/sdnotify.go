//go:build linux

// Package sdnotify speaks systemd's notify protocol (READY=1, STATUS=,
// WATCHDOG=1) over one datagram socket opened at start and held for the
// daemon's life. go-systemd's SdNotify opens a new socket for every message:
// at the descriptor limit (a local user's connection flood) every heartbeat
// failed, silently, and systemd's watchdog would restart the daemon.
package sdnotify

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Notifier sends to $NOTIFY_SOCKET. A nil *Notifier (not under systemd)
// sends nothing and never fails.
type Notifier struct {
	mu   sync.Mutex
	fd   int
	addr *unix.SockaddrUnix
}

// Open opens the socket when $NOTIFY_SOCKET names a unix socket (a path, or
// @name in the abstract namespace); nil when it is unset.
func Open() (*Notifier, error) {
	return open(os.Getenv("NOTIFY_SOCKET"))
}

func open(path string) (*Notifier, error) {
	if path == "" {
		return nil, nil
	}
	if !strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "@") {
		return nil, fmt.Errorf("NOTIFY_SOCKET=%q: only unix sockets (a path or @name) are supported", path)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	// Sent to the path each time, not connected once: the manager may bind
	// its socket anew (daemon-reexec) and a connected socket would go stale.
	return &Notifier{fd: fd, addr: &unix.SockaddrUnix{Name: path}}, nil
}

// Send sends one notification (newline-separated assignments). It does not
// block: a full socket buffer is an error (EAGAIN) for the caller to retry.
func (n *Notifier) Send(state string) error {
	if n == nil {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fd < 0 {
		return errors.New("notify socket closed")
	}
	for {
		err := unix.Sendto(n.fd, []byte(state), unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, n.addr)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("notify %s: %w", n.addr.Name, err)
		}
		return nil
	}
}

// Close closes the socket.
func (n *Notifier) Close() error {
	if n == nil {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fd < 0 {
		return nil
	}
	err := unix.Close(n.fd)
	n.fd = -1
	return err
}
