// Package syspath knows which directories belong to the whole system rather
// than to one program, so that no generated fix ever suggests changing their
// owner or mode: "chmod go-w /tmp" or "chown root /home/alice" would break
// the host. Callers suggest moving their file instead.
package syspath

import (
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

// fhs is the file system hierarchy's shared directories (FHS 3.0 and what
// Debian adds). Their owner and mode are the distribution's.
var fhs = map[string]bool{}

func init() {
	for _, d := range strings.Fields(`/ /bin /boot /dev /dev/shm /dev/mqueue /etc /etc/opt /etc/default
		/etc/systemd /etc/systemd/system /home /lib /lib32 /lib64 /libx32 /lost+found /media /mnt /opt
		/proc /root /run /run/lock /run/user /run/systemd /sbin /snap /srv /sys /tmp /usr /usr/bin
		/usr/include /usr/lib /usr/lib32 /usr/lib64 /usr/libexec /usr/local /usr/local/bin
		/usr/local/etc /usr/local/lib /usr/local/sbin /usr/local/share /usr/sbin /usr/share /usr/src
		/var /var/backups /var/cache /var/crash /var/lib /var/local /var/lock /var/log /var/mail
		/var/opt /var/run /var/spool /var/tmp /var/www`) {
		fhs[d] = true
	}
}

// Shared reports whether p (absolute) is a directory whose owner or mode a
// fix must not touch: a directory of the file system hierarchy, one of its
// direct children under /home, /run/user or /srv (users' and services'
// homes), a sticky directory (a /tmp-like place that others rely on
// writing to), or the home directory of the user owning it (uid).
func Shared(p string, sticky bool, uid uint32) bool {
	p = filepath.Clean(p)
	if sticky || fhs[p] {
		return true
	}
	switch filepath.Dir(p) {
	case "/home", "/run/user", "/var/home":
		return true
	}
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil && u.HomeDir != "" && filepath.Clean(u.HomeDir) == p {
		return true
	}
	return false
}
