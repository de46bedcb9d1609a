// Package version owns what egressd says about its own build: the release
// version and commit stamped in by the linker (make build, make deb), or,
// without them, what the Go toolchain recorded (debug.ReadBuildInfo).
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set by the linker, for example:
//
//	go build -trimpath -ldflags "-X github.com/egressd/egressd/internal/version.Version=$(git describe --tags --always --dirty)
//	  -X github.com/egressd/egressd/internal/version.Commit=$(git rev-parse HEAD)" ./cmd/egressd
//
// Left empty by a plain `go build` or `go run`.
var (
	Version string
	Commit  string
)

// Info is the build description of the running binary.
type Info struct {
	Version   string // a git describe string or module version; "devel" when unknown
	Commit    string // full commit hash; "unknown" when not recorded
	Modified  bool   // built from a work tree with uncommitted changes (when known)
	GoVersion string
	Source    string // where Version came from: ldflags, module, vcs or none
}

// Get returns the build information, preferring the linker-set values.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return get(Version, Commit, bi)
}

func get(ldVersion, ldCommit string, bi *debug.BuildInfo) Info {
	in := Info{Version: "devel", Commit: "unknown", GoVersion: runtime.Version(), Source: "none"}
	if bi != nil {
		if bi.GoVersion != "" {
			in.GoVersion = bi.GoVersion
		}
		// `go install module@v1.2.3` records the module version; a build
		// inside the repository records "(devel)", which says nothing.
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			in.Version, in.Source = v, "module"
		}
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if rev != "" {
			in.Commit, in.Modified = rev, modified == "true"
			if in.Source == "none" {
				short := rev
				if len(short) > 12 {
					short = short[:12]
				}
				in.Version, in.Source = "devel-"+short, "vcs"
				if in.Modified {
					in.Version += "-dirty"
				}
			}
		}
	}
	if ldVersion != "" {
		in.Version, in.Source = ldVersion, "ldflags"
		in.Modified = strings.HasSuffix(ldVersion, "-dirty")
	}
	if ldCommit != "" {
		in.Commit = ldCommit
	}
	return in
}

// String is the one-line answer of `egressd version`.
func (in Info) String() string {
	s := fmt.Sprintf("egressd %s (commit %s, %s, %s/%s)", in.Version, in.Commit, in.GoVersion, runtime.GOOS, runtime.GOARCH)
	if in.Source == "none" {
		s += "; built without version information (use make build or make deb)"
	}
	return s
}
