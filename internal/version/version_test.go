package version

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestGet(t *testing.T) {
	vcs := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}}}
	tests := []struct {
		name             string
		ldVersion, ldRev string
		bi               *debug.BuildInfo
		want             Info
	}{
		{"nothing", "", "", nil, Info{Version: "devel", Commit: "unknown", Source: "none"}},
		{"devel build without vcs", "", "", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			Info{Version: "devel", Commit: "unknown", GoVersion: "go1.26.8", Source: "none"}},
		{"vcs", "", "", vcs, Info{Version: "devel-0123456789ab-dirty", Commit: "0123456789abcdef0123", Modified: true, GoVersion: "go1.26.8", Source: "vcs"}},
		{"go install at a version", "", "", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"}},
			Info{Version: "v1.2.3", Commit: "unknown", GoVersion: "go1.26.8", Source: "module"}},
		{"ldflags win", "v1.2.3-4-gabcdef0", "abcdef0123", vcs,
			Info{Version: "v1.2.3-4-gabcdef0", Commit: "abcdef0123", GoVersion: "go1.26.8", Source: "ldflags"}},
		{"ldflags dirty", "v1.2.3-dirty", "", nil, Info{Version: "v1.2.3-dirty", Commit: "unknown", Modified: true, Source: "ldflags"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := get(tc.ldVersion, tc.ldRev, tc.bi)
			if tc.want.GoVersion == "" {
				tc.want.GoVersion = got.GoVersion // runtime.Version()
			}
			if got != tc.want {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestStringSaysWhenUnknown(t *testing.T) {
	s := get("", "", nil).String()
	if !strings.HasPrefix(s, "egressd devel (commit unknown") || !strings.Contains(s, "without version information") {
		t.Errorf("%q", s)
	}
	if s := get("v1.0.0", "abc", nil).String(); strings.Contains(s, "without") || !strings.HasPrefix(s, "egressd v1.0.0 (commit abc, ") {
		t.Errorf("%q", s)
	}
}
