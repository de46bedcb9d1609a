package syspath

import "testing"

func TestShared(t *testing.T) {
	for _, c := range []struct {
		p      string
		sticky bool
		uid    uint32
		want   bool
	}{
		{"/", false, 0, true},
		{"/tmp", true, 0, true},
		{"/tmp/", false, 0, true},
		{"/var/tmp", true, 0, true},
		{"/dev/shm", true, 0, true},
		{"/etc", false, 0, true},
		{"/home", false, 0, true},
		{"/home/alice", false, 1000, true},
		{"/run/user/1000", false, 1000, true},
		{"/root", false, 0, true},           // root's home, and in the list
		{"/srv/shared-drop", true, 0, true}, // any sticky directory
		{"/etc/egressd", false, 0, false},   // egressd's own: chmod is the right fix
		{"/etc/egressd/allow.d", false, 0, false},
		{"/opt/billing/bin", false, 0, false},
		{"/run/egressd-test", false, 61001, false},
	} {
		if got := Shared(c.p, c.sticky, c.uid); got != c.want {
			t.Errorf("Shared(%q, sticky=%v, uid %d) = %v, want %v", c.p, c.sticky, c.uid, got, c.want)
		}
	}
}
