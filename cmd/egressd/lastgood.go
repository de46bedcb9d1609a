package main

import (
	"os"
	"strings"

	"github.com/egressd/egressd/internal/controller"
	"github.com/egressd/egressd/internal/lastgood"
)

// lastGoodStore keeps the last good configuration in the service's state
// directory (StateDirectory=egressd sets $STATE_DIRECTORY); run by hand,
// without it, there is none and invalid files at start stop the daemon.
func lastGoodStore() controller.LastGood {
	dir := stateDirectory()
	if dir == "" {
		return nil
	}
	return &lastgood.Store{Dir: dir}
}

// stateDirectory is the service's state directory (StateDirectory=egressd
// sets $STATE_DIRECTORY), or "" when run by hand without one.
func stateDirectory() string {
	dir, _, _ := strings.Cut(os.Getenv("STATE_DIRECTORY"), ":")
	return dir
}
