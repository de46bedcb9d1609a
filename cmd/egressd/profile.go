package main

import (
	"fmt"
	"os"
	"runtime/pprof"

	"github.com/egressd/egressd/internal/phase"
)

// startProfile is EGRESSD_PROFILE=PREFIX, a debug aid for `egressd run`
// (docs/performance.md, "Where the time of a cold apply goes"): a CPU
// profile in PREFIX.cpu.pprof and the phases' wall-clock times in
// PREFIX.phases, both written when run returns. The files are created
// with O_EXCL, so an existing file (or a symlink planted there) is never
// written through.
func startProfile(prefix string) (stop func(), err error) {
	cpu, err := os.OpenFile(prefix+".cpu.pprof", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	phases, err := os.OpenFile(prefix+".phases", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		cpu.Close()
		return nil, err
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		cpu.Close()
		phases.Close()
		return nil, err
	}
	phase.Enable()
	endMain := phase.Start("main")
	return func() {
		endMain()
		pprof.StopCPUProfile()
		cpu.Close()
		if err := phase.Write(phases); err != nil {
			fmt.Fprintln(os.Stderr, "egressd: EGRESSD_PROFILE:", err)
		}
		phases.Close()
	}, nil
}
