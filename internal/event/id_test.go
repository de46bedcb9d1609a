package event

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/zap/zapcore"
)

// The MESSAGE_IDs docs/alerting.md gives for journalctl queries are the
// ones the daemon writes; every event's is distinct.
func TestMessageIDsAsDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/alerting.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.Join(strings.Fields(string(b)), " ")
	for name, id := range map[string]string{Deny: "a58a6a6bc3829bd24069b1bc4d9b1358", ConfigRejected: "45006dfa746653596563049f93cb3f1b",
		ConfigLoaded: "ceacaf237c51384400e380cc50693414", DNSRefused: "7c6028bb8ff0049986dad946a30604b1"} {
		if got := MessageID(name); got != id {
			t.Errorf("MessageID(%s) = %s, want %s", name, got, id)
		}
		if !strings.Contains(doc, "`"+name+"` `"+id+"`") && !strings.Contains(doc, "`"+name+"` is `"+id+"`") {
			t.Errorf("docs/alerting.md does not give %s for %s", id, name)
		}
	}
	hex := regexp.MustCompile(`^[0-9a-f]{32}$`)
	seen := map[string]string{}
	for _, n := range All {
		id := MessageID(n)
		if !hex.MatchString(id) {
			t.Errorf("MessageID(%s) = %q, want 32 hex digits", n, id)
		}
		if other, dup := seen[id]; dup {
			t.Errorf("%s and %s share MESSAGE_ID %s", n, other, id)
		}
		seen[id] = n
	}
}

func TestField(t *testing.T) {
	f := Field(Deny)
	if f.Key != "event" || f.Type != zapcore.StringType || f.String != "deny" {
		t.Errorf("Field(deny) = %+v", f)
	}
}
