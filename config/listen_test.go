package config

import (
	"strings"
	"testing"
)

func TestParseAllowlistListen(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string // listen entries joined by ",", "<nil>" when absent
		err  string
	}{
		{name: "absent", yaml: "user: app\n", want: "<nil>"},
		{name: "empty", yaml: "user: app\nlisten: []\n", want: ""},
		{name: "flow", yaml: "user: app\nlisten: [tcp:8080, udp:5353]\n", want: "tcp:8080,udp:5353"},
		{name: "block range", yaml: "user: app\nlisten:\n  - tcp:8000-8010\n", want: "tcp:8000-8010"},
		{name: "null", yaml: "user: app\nlisten:\n", err: "allowlist.yaml:2:8: listen: expected a list"},
		{name: "proto", yaml: "user: app\nlisten: [sctp:80]\n", err: "allowlist.yaml:2:10: listen: \"sctp:80\": protocol \"sctp\" is not tcp or udp"},
		{name: "no proto", yaml: "user: app\nlisten: [8080]\n", err: "2:10: listen: \"8080\": expected PROTO:PORT"},
		{name: "port 0", yaml: "user: app\nlisten: [tcp:0]\n", err: "not a number from 1 to 65535"},
		{name: "overlap", yaml: "user: app\nlisten: [tcp:8000-8080, tcp:8080]\n", err: "2:25: listen: tcp:8080 overlaps tcp:8000-8080"},
		{name: "too many", yaml: "user: app\nlisten: [tcp:1-65535]\n", err: "more than 4096 ports"},
		{name: "unit", yaml: "unit: app.service\nlisten: [tcp:80]\n", want: "tcp:80"},
		{name: "scalar", yaml: "user: app\nlisten: tcp:8080\n", err: "2:9: listen: expected a list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := ParseAllowlist("allowlist.yaml", "app", []byte(tt.yaml))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error = %v, want it to contain %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := "<nil>"
			if a.Listen != nil {
				var s []string
				for _, l := range a.Listen {
					s = append(s, l.String())
				}
				got = strings.Join(s, ",")
			}
			if got != tt.want {
				t.Fatalf("listen = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestListenAllowed(t *testing.T) {
	a := &Allowlist{}
	if _, ok := a.ListenAllowed("tcp", 9999); !ok {
		t.Fatal("no listen: key must leave listening unrestricted")
	}
	a.Listen = []ListenPort{}
	if _, ok := a.ListenAllowed("tcp", 8080); ok {
		t.Fatal("listen: [] must allow no port")
	}
	a.Listen = []ListenPort{{Proto: "tcp", From: 8080, To: 8080}}
	if _, ok := a.ListenAllowed("tcp", 8080); !ok {
		t.Fatal("tcp:8080 listed but refused")
	}
	if _, ok := a.ListenAllowed("udp", 8080); ok {
		t.Fatal("udp:8080 allowed by tcp:8080")
	}
}
