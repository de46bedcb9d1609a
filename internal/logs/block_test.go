package logs

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// gatedWriter holds every write until open is closed, and tells each one.
type gatedWriter struct {
	open  chan struct{}
	wrote chan int
	mu    sync.Mutex
	buf   bytes.Buffer
	err   error
}

func (g *gatedWriter) Write(p []byte) (int, error) {
	<-g.open
	g.mu.Lock()
	defer g.mu.Unlock()
	g.buf.Write(p)
	select {
	case g.wrote <- len(p):
	default:
	}
	return len(p), g.err
}

// A reader that does not keep up (a pipe) does not hold the logger up
// while fewer than the queued blocks wait: the run goes on, and every
// line comes out, in order, once Stop returns. zap's BufferedWriteSyncer
// wrote each full block in the logging goroutine, and this test hung.
func TestBlockWriterDoesNotWaitForReader(t *testing.T) {
	g := &gatedWriter{open: make(chan struct{}), wrote: make(chan int, 1)}
	b := newBlockWriter(g, 1024, 4)
	var want bytes.Buffer
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		for i := 0; i < 3*1024/32; i++ { // three blocks: below the queue
			line := fmt.Sprintf("line %026d\n", i)
			want.WriteString(line)
			if _, err := b.Write([]byte(line)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	select {
	case <-logged:
	case <-time.After(10 * time.Second):
		t.Fatal("Write waited for the stalled reader")
	}
	close(g.open)
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(g.buf.Bytes(), want.Bytes()) {
		t.Fatalf("got %d bytes, want %d, or out of order", g.buf.Len(), want.Len())
	}
	// After Stop, a line goes straight out.
	if _, err := b.Write([]byte("late\n")); err != nil || !bytes.HasSuffix(g.buf.Bytes(), []byte("late\n")) {
		t.Fatalf("a write after Stop: %v", err)
	}
}

// Past the queue, Write waits for the reader: memory stays bounded.
func TestBlockWriterBoundedQueue(t *testing.T) {
	g := &gatedWriter{open: make(chan struct{}), wrote: make(chan int, 1)}
	b := newBlockWriter(g, 64, 2)
	blocked := make(chan struct{})
	go func() {
		defer close(blocked)
		for i := 0; i < 10; i++ { // ten blocks: one being written, two queued, then Write waits
			b.Write(bytes.Repeat([]byte{'x'}, 64)) //nolint:errcheck
		}
	}()
	select {
	case <-blocked:
		t.Fatal("ten blocks queued behind a stalled reader")
	case <-time.After(200 * time.Millisecond):
	}
	close(g.open)
	<-blocked
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	if g.buf.Len() != 640 {
		t.Fatalf("%d bytes out, want 640", g.buf.Len())
	}
}

// A line is written within flushEvery even if nothing follows it.
func TestBlockWriterFlushesOldLine(t *testing.T) {
	g := &gatedWriter{open: make(chan struct{}), wrote: make(chan int, 1)}
	close(g.open)
	b := newBlockWriter(g, 1<<20, 4)
	defer b.Stop()             //nolint:errcheck
	b.Write([]byte("alone\n")) //nolint:errcheck
	select {
	case n := <-g.wrote:
		if n != 6 {
			t.Fatalf("wrote %d bytes", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a lone line was not written")
	}
}

// Sync returns once everything before it is out; the first write error is
// returned by Sync, later writes and Stop.
func TestBlockWriterSyncAndError(t *testing.T) {
	g := &gatedWriter{open: make(chan struct{}), wrote: make(chan int, 1)}
	close(g.open)
	b := newBlockWriter(g, 1<<20, 4)
	b.Write([]byte("one\n")) //nolint:errcheck
	if err := b.Sync(); err != nil || g.buf.String() != "one\n" {
		t.Fatalf("after Sync: %q, %v", g.buf.String(), err)
	}
	g.err = errors.New("broken pipe")
	b.Write([]byte("two\n")) //nolint:errcheck
	if err := b.Sync(); err == nil {
		t.Fatal("Sync hid the write error")
	}
	if _, err := b.Write([]byte("three\n")); err == nil {
		t.Fatal("Write hid the write error")
	}
	if err := b.Stop(); err == nil {
		t.Fatal("Stop hid the write error")
	}
}

// A write error while the logger waits for room in the queue ends in the
// error, not in a deadlock (the writer records it without the logger's lock).
func TestBlockWriterErrorWhileQueueFull(t *testing.T) {
	g := &gatedWriter{open: make(chan struct{}), wrote: make(chan int, 1), err: errors.New("broken pipe")}
	b := newBlockWriter(g, 64, 1)
	done := make(chan error, 1)
	go func() {
		var err error
		for i := 0; i < 8 && err == nil; i++ {
			_, err = b.Write(bytes.Repeat([]byte{'x'}, 64))
		}
		done <- err
	}()
	close(g.open)
	select {
	case err := <-done:
		if err == nil {
			t.Error("eight writes into a broken pipe: no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("deadlock: the writer could not record its error while Write waited for room")
	}
	if err := b.Stop(); err == nil {
		t.Error("Stop hid the write error")
	}
}
