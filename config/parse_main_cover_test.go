package config

import (
	"strings"
	"testing"
)

// Each bad value of the main file is an error at its file:line:col that
// says what is wrong and what would do; nothing is half-loaded.
func TestParseMainBadValues(t *testing.T) {
	for _, c := range []struct {
		yaml, want string
	}{
		{"min_ttl: soon\n", `egressd.yaml:1:10: min_ttl: "soon" is not a duration (examples: 30s, 5m, 1h)`},
		{"linger: -5s\n", "egressd.yaml:1:9: linger: -5s is below the minimum of 0s"},
		{"max_ttl: [1h]\n", "egressd.yaml:1:10: max_ttl"},
		{"min_ttl: 2h\nmax_ttl: 1h\n", "min_ttl (2h0m0s) is above max_ttl (1h0m0s)"},
		{"dns_proxy_port: 53\n", "egressd.yaml:1:17: dns_proxy_port: 53 is the port the kernel redirects from"},
		{"dns_proxy_port: 70000\n", `egressd.yaml:1:17: dns_proxy_port: "70000" is not a whole number from 1 to 65535`},
		{"dns_proxy_max_answers: 8\n", `dns_proxy_max_answers: "8" is not a whole number from 16 to 16777216`},
		{"on_exit: delete\n", `egressd.yaml:1:10: on_exit: "delete" is not keep or remove`},
		{"metrics_listen: unix:run/m.sock\n", "metrics_listen: \"unix:run/m.sock\": the socket's path must be absolute and clean"},
		{"metrics_listen: localhost\n", `metrics_listen: "localhost" is not host:port`},
		{"deny_log: nflog\n", "egressd.yaml:1:11: deny_log: expected a mapping with mode, group, rate, prefix, interval"},
		{"metrics_socket_mode: \"0600\"\nmetrics_socket_group: adm\n", "metrics_socket_group: the group cannot connect with metrics_socket_mode 0600"},
		{"state_mode: \"0600\"\nstate_group: adm\n", "state_group: the group cannot read the state file with state_mode 0600"},
		{"lists_dir: \"\"\n", "egressd.yaml:1:12: lists_dir"},
	} {
		_, err := ParseMain("egressd.yaml", []byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v\nwant %q", c.yaml, err, c.want)
		}
	}
}

// The values it accepts land where the daemon reads them; relative
// directories are the main file's.
func TestParseMainValues(t *testing.T) {
	c, err := ParseMain("/etc/egressd/egressd.yaml", []byte("lists_dir: shared\nallow_dir: /srv/allow\ndns_proxy_port: 5399\ndns_proxy_max_answers: 64\non_exit: remove\nmetrics_listen: unix:/run/egressd/m.sock\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.ListsDir != "/etc/egressd/shared" || c.AllowDir != "/srv/allow" || c.DNSProxyPort != 5399 || c.DNSProxyMaxAnswers != 64 || c.MetricsListen != "unix:/run/egressd/m.sock" {
		t.Errorf("config %+v", c)
	}
}
