package harden

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

var versionRE = regexp.MustCompile(`^systemd ([0-9]+)\b`)

// ParseSystemctlVersion reads the output of `systemctl --version`: the
// version on its first line, and whether BPF_FRAMEWORK is built in, from
// the feature list (+BPF_FRAMEWORK or -BPF_FRAMEWORK).
func ParseSystemctlVersion(out string) (version int, bpf Feature) {
	first, _, _ := strings.Cut(out, "\n")
	if m := versionRE.FindStringSubmatch(strings.TrimSpace(first)); m != nil {
		version, _ = strconv.Atoi(m[1])
	}
	return version, ParseFeatures(out)
}

// ParseFeatures finds BPF_FRAMEWORK in a systemd feature list
// ("+PAM +AUDIT … -BPF_FRAMEWORK …"); unknown when absent.
func ParseFeatures(s string) Feature {
	for _, f := range strings.Fields(s) {
		switch f {
		case "+BPF_FRAMEWORK":
			return FeatureYes
		case "-BPF_FRAMEWORK":
			return FeatureNo
		}
	}
	return FeatureUnknown
}

// Warnings says, for stderr, what the drop-in will not do on the target or
// what will keep the service from starting. exists reports whether a path
// exists on this host.
func (o *Options) Warnings(exists func(string) bool) []string {
	var w []string
	v := o.SystemdVersion
	if v == 0 {
		v = DefaultSystemdVersion
	}
	if v >= 249 {
		switch o.BPF {
		case FeatureNo:
			w = append(w, "SocketBindAllow=/SocketBindDeny= are not enforced: the target systemd is built -BPF_FRAMEWORK and ignores them; nothing stops the service from listening on other ports (the drop-in says so)")
		case FeatureUnknown:
			w = append(w, "cannot tell whether the target systemd enforces SocketBindAllow=/SocketBindDeny= (they need +BPF_FRAMEWORK): pass --target-features with the feature line of its `systemctl --version`")
		}
	}
	_, plain := splitWritable(o.Writable)
	if o.SystemdVersion != 0 && o.SystemdVersion < 235 {
		plain = o.Writable
	}
	group := o.Group
	if group == "" {
		group = o.User
	}
	for _, p := range plain {
		if exists != nil && !exists(p) {
			w = append(w, fmt.Sprintf("--writable %s does not exist: the service will fail to start (226/NAMESPACE) until it does; create it first: install -d -o %s -g %s %s", p, o.User, group, p))
		}
	}
	return w
}
