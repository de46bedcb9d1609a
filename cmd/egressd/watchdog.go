package main

import (
	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/egressd/egressd/internal/controller"
)

// watchdogHeartbeat sends WATCHDOG=1 from the reconcile loop at a third of
// WatchdogSec= when systemd set one (WATCHDOG_USEC), so that a hung loop
// gets egressd restarted; nothing otherwise.
func watchdogHeartbeat() controller.Heartbeat {
	every, err := daemon.SdWatchdogEnabled(false)
	if err != nil || every <= 0 {
		return controller.Heartbeat{}
	}
	return controller.Heartbeat{Every: every / 3, Beat: func() {
		daemon.SdNotify(false, daemon.SdNotifyWatchdog) //nolint:errcheck // no-op outside systemd
	}}
}
