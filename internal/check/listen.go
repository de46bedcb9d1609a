package check

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/bindguard"
	"github.com/egressd/egressd/internal/policy"
	"github.com/egressd/egressd/internal/state"
)

// readListen reads the pinned listen restriction (a variable: tests).
var readListen = bindguard.ReadPinned

// listenProblems compares allowlists' listen: with what the running daemon
// reports and the kernel holds.
func listenProblems(cfg *config.Config, users policy.Users, st *state.State) []Problem {
	want := policy.Listen(cfg, users)
	if len(want) == 0 && st.ListenDir == "" {
		return nil
	}
	var names []string
	for _, a := range cfg.Allowlists {
		if a.Listen != nil {
			names = append(names, a.Name)
		}
	}
	obj := "listen: " + strings.Join(names, ", ")
	if st.ListenError != "" {
		return []Problem{{Kind: "listen_unenforced", Object: obj, Detail: "listen: is not enforced, those services may listen on any port: " + st.ListenError,
			Fix: "install egressd-listen.conf as /etc/systemd/system/egressd.service.d/listen.conf and restart egressd (docs/hardening.md, Listening ports)"}}
	}
	if st.ListenDir == "" {
		return []Problem{{Kind: "listen_unenforced", Object: obj, Detail: "the daemon reports no listen restriction loaded",
			Fix: "restart egressd (systemctl restart egressd); look for listen_unenforced in its log"}}
	}
	have, err := readListen(st.ListenDir)
	if errors.Is(err, os.ErrNotExist) && st.ListenDir != bindguard.DefaultDir {
		// Under egressd-listen.conf the daemon pins through a bind of
		// /sys/fs/bpf/egressd that only its own mount namespace has.
		have, err = readListen(bindguard.DefaultDir)
	}
	if err != nil {
		return []Problem{{Kind: "cannot_run", Object: st.ListenDir, Detail: err.Error(), Fix: "run egressd check as root"}}
	}
	if !samePolicy(want, have) {
		return []Problem{{Kind: "drift_listen", Object: st.ListenDir, Detail: fmt.Sprintf("the kernel's listen restriction differs from the allowlists (kernel %v, allowlists %v)", have, want),
			Fix: "restart egressd (systemctl restart egressd): it rewrites the restriction"}}
	}
	return nil
}

func samePolicy(a, b bindguard.Policy) bool {
	norm := func(p bindguard.Policy) map[uint32]map[bindguard.Port]bool {
		out := map[uint32]map[bindguard.Port]bool{}
		for uid, r := range p {
			m := map[bindguard.Port]bool{{}: r.Audit}
			for _, pt := range r.Ports {
				m[pt] = true
			}
			out[uid] = m
		}
		return out
	}
	return reflect.DeepEqual(norm(a), norm(b))
}
