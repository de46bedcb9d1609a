// Package logs owns how the daemon's events reach people and journald: the
// output format for where stderr goes, and the shaping of repeated DNS
// failure events into a start, periodic summaries and a recovery.
package logs

import (
	"fmt"
	"io"
	"os"

	"go.uber.org/zap/buffer"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

// NewCore writes events to w:
//   - under journald (JOURNAL_STREAM names w): through journald's native
//     protocol, every field a journal field (journal.go); should journald
//     not take an entry, on the stream as a JSON line prefixed with its
//     syslog priority "<N>" (sd-daemon(3)), which journald stores as the
//     priority, so `journalctl -p warning` works and pipelines read JSON;
//   - to a terminal: a readable console format;
//   - anywhere else: JSON lines.
func NewCore(enc zapcore.EncoderConfig, w io.Writer, lvl zapcore.LevelEnabler) zapcore.Core {
	out := zapcore.Lock(zapcore.AddSync(w))
	f, _ := w.(*os.File)
	switch {
	case f != nil && isJournal(f, os.Getenv("JOURNAL_STREAM")):
		stream := zapcore.NewCore(priorityEncoder{zapcore.NewJSONEncoder(enc)}, out, lvl)
		return newJournalCore(zapcore.NewJSONEncoder(enc), lvl, sendJournal, stream)
	case f != nil && isTerminal(f):
		enc.EncodeLevel = zapcore.CapitalColorLevelEncoder
		enc.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		return zapcore.NewCore(zapcore.NewConsoleEncoder(enc), out, lvl)
	}
	return zapcore.NewCore(zapcore.NewJSONEncoder(enc), out, lvl)
}

// NewBufferedCore is NewCore for a run of a second or two (run --once),
// whose thousands of `resolved` lines would otherwise cost a write each:
// JSON lines to a file or pipe are written in blocks of 256 KiB, at least
// every 100 ms and at once for an entry above error level, by a goroutine
// of their own (the run goes on while a pipe's reader catches up; at most
// four blocks wait); flush writes the rest and must be called before the
// process exits. Under
// journald and on a terminal it is NewCore (flush does nothing).
func NewBufferedCore(enc zapcore.EncoderConfig, w io.Writer, lvl zapcore.LevelEnabler) (core zapcore.Core, flush func() error) {
	f, _ := w.(*os.File)
	if f != nil && (isJournal(f, os.Getenv("JOURNAL_STREAM")) || isTerminal(f)) {
		return NewCore(enc, w, lvl), func() error { return nil }
	}
	bw := newBlockWriter(w, blockSize, blockQueued)
	return zapcore.NewCore(zapcore.NewJSONEncoder(enc), bw, lvl), bw.Stop
}

// isJournal reports whether f is the stream journald connected
// (JOURNAL_STREAM=DEVICE:INODE); a child whose stderr was redirected
// inherits the variable but not the stream.
func isJournal(f *os.File, stream string) bool {
	if stream == "" {
		return false
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return stream == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// Priority is the syslog priority of a level.
func Priority(l zapcore.Level) int {
	switch {
	case l <= zapcore.DebugLevel:
		return 7
	case l == zapcore.InfoLevel:
		return 6
	case l == zapcore.WarnLevel:
		return 4
	case l == zapcore.ErrorLevel:
		return 3
	}
	return 2 // dpanic, panic, fatal: critical
}

var pool = buffer.NewPool()

// priorityEncoder prefixes each line with "<N>".
type priorityEncoder struct{ zapcore.Encoder }

func (p priorityEncoder) Clone() zapcore.Encoder { return priorityEncoder{p.Encoder.Clone()} }

func (p priorityEncoder) EncodeEntry(ent zapcore.Entry, fields []zapcore.Field) (*buffer.Buffer, error) {
	b, err := p.Encoder.EncodeEntry(ent, fields)
	if err != nil {
		return nil, err
	}
	out := pool.Get()
	out.AppendByte('<')
	out.AppendInt(int64(Priority(ent.Level)))
	out.AppendByte('>')
	out.Write(b.Bytes()) //nolint:errcheck // a buffer
	b.Free()
	return out, nil
}
