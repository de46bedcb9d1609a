package daemon

import (
	sd "github.com/coreos/go-systemd/v22/daemon"

	"github.com/egressd/egressd/internal/controller"
	"github.com/egressd/egressd/internal/sdnotify"
)

// watchdogHeartbeat sends WATCHDOG=1 from the reconcile loop at a third of
// WatchdogSec= when systemd set one (WATCHDOG_USEC), so that a hung loop
// gets egressd restarted; nothing otherwise. It sends on n, the socket held
// since start: a heartbeat needs no new descriptor.
func watchdogHeartbeat(n *sdnotify.Notifier) controller.Heartbeat {
	every, err := sd.SdWatchdogEnabled(false)
	if err != nil || every <= 0 || n == nil {
		return controller.Heartbeat{}
	}
	return controller.Heartbeat{Every: every / 3, Beat: func() error { return n.Send(sd.SdNotifyWatchdog) }}
}
