package logs

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/egressd/egressd/internal/event"
	"go.uber.org/zap/zapcore"
)

// Sender writes one entry through journald's native protocol
// (journal.Send; tests record instead).
type Sender func(message string, priority journal.Priority, vars map[string]string) error

// sendJournal is how the journal core sends; a variable for tests only.
var sendJournal Sender = journal.Send

// journalCore writes each entry through journald's native protocol, so
// that every field is a journal field: `journalctl EGRESSD_EVENT=deny`
// works on the host and on a collector (systemd-journal-upload/-remote
// forward fields as they are). MESSAGE stays the JSON line stderr would
// carry, so pipelines that parse it keep working; PRIORITY is the level's;
// MESSAGE_ID is the event's (event.MessageID). An entry journald does not
// take (socket gone, full) goes to fallback, the stream: nothing is lost.
type journalCore struct {
	zapcore.LevelEnabler
	enc      zapcore.Encoder // the JSON line, with the context fields
	fields   []zapcore.Field // the context fields, for the journal fields
	send     Sender
	fallback zapcore.Core
}

func newJournalCore(enc zapcore.Encoder, lvl zapcore.LevelEnabler, send Sender, fallback zapcore.Core) zapcore.Core {
	return &journalCore{LevelEnabler: lvl, enc: enc, send: send, fallback: fallback}
}

func (c *journalCore) With(fields []zapcore.Field) zapcore.Core {
	enc := c.enc.Clone()
	for _, f := range fields {
		f.AddTo(enc)
	}
	return &journalCore{LevelEnabler: c.LevelEnabler, enc: enc, send: c.send, fallback: c.fallback.With(fields),
		fields: append(append([]zapcore.Field(nil), c.fields...), fields...)}
}

func (c *journalCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c *journalCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	buf, err := c.enc.EncodeEntry(ent, fields)
	if err != nil {
		return c.fallback.Write(ent, fields)
	}
	msg := strings.TrimSuffix(buf.String(), "\n")
	buf.Free()
	if err := c.send(msg, journal.Priority(Priority(ent.Level)), JournalFields(c.fields, fields)); err != nil {
		return c.fallback.Write(ent, fields)
	}
	return nil
}

func (c *journalCore) Sync() error { return c.fallback.Sync() }

// JournalFields are an entry's fields as journal fields: EGRESSD_ and the
// key in upper case (anything but letters, digits and '_' becomes '_');
// strings as they are, lists of strings joined by ',', numbers and booleans
// as text, anything else as JSON. Plus MESSAGE_ID for an event and
// SYSLOG_IDENTIFIER=egressd.
func JournalFields(sets ...[]zapcore.Field) map[string]string {
	m := zapcore.NewMapObjectEncoder()
	for _, fs := range sets {
		for _, f := range fs {
			f.AddTo(m)
		}
	}
	vars := make(map[string]string, len(m.Fields)+2)
	keys := make([]string, 0, len(m.Fields))
	for k := range m.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		vars["EGRESSD_"+fieldName(k)] = fieldValue(m.Fields[k])
	}
	if name, ok := m.Fields["event"].(string); ok && name != "" {
		vars["MESSAGE_ID"] = event.MessageID(name)
	}
	vars["SYSLOG_IDENTIFIER"] = "egressd"
	return vars
}

func fieldName(k string) string {
	b := []byte(strings.ToUpper(k))
	for i, c := range b {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

func fieldValue(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, uintptr, float32, float64:
		return fmt.Sprint(v)
	case time.Time:
		return v.Format(time.RFC3339Nano)
	case time.Duration:
		return v.String()
	case fmt.Stringer:
		return v.String()
	case []any:
		strs := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return jsonValue(v)
			}
			strs = append(strs, s)
		}
		return strings.Join(strs, ",")
	}
	return jsonValue(v)
}

func jsonValue(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
