package logs

import (
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// blockWriter collects lines into blocks and writes each full block from a
// goroutine of its own, so that the logger does not wait for the reader of
// a pipe while the run has other work to do (run --once: 20,000 `resolved`
// lines, 5 MB, written while the desired state is built and applied).
// At most queued blocks wait to be written: past that, Write waits, and
// memory stays bounded. A block is also written once it is flushEvery old.
// Sync and Stop return when everything written before them is out; the
// first write error is returned by every later Write, Sync and Stop.
type blockWriter struct {
	w    io.Writer
	size int

	mu      sync.Mutex
	buf     []byte
	started time.Time             // when buf got its first byte
	err     atomic.Pointer[error] // the first write error (not under mu: the writer sets it while a Write may wait, holding mu, for room)
	stopped bool                  // Stop ran: writes go straight to w
	timer   *time.Timer

	out  chan blockReq // to the writing goroutine
	free chan []byte   // written blocks, for reuse
	done chan struct{} // the goroutine ended
	stop sync.Once
}

// blockReq is a block to write, or (ack != nil) a barrier: ack is closed
// when every block before it was written.
type blockReq struct {
	b   []byte
	ack chan struct{}
}

const (
	blockSize   = 256 << 10
	blockQueued = 4
	flushEvery  = 100 * time.Millisecond
)

func newBlockWriter(w io.Writer, size, queued int) *blockWriter {
	b := &blockWriter{w: w, size: size, out: make(chan blockReq, queued), free: make(chan []byte, queued+1), done: make(chan struct{})}
	b.timer = time.AfterFunc(time.Hour, b.flushOld)
	b.timer.Stop()
	go b.run()
	return b
}

func (b *blockWriter) run() {
	defer close(b.done)
	for r := range b.out {
		if r.ack != nil {
			close(r.ack)
			continue
		}
		if _, err := b.w.Write(r.b); err != nil {
			b.err.CompareAndSwap(nil, &err)
		}
		select {
		case b.free <- r.b[:0]:
		default:
		}
	}
}

// Write implements zapcore.WriteSyncer. p is copied.
func (b *blockWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.failed(); err != nil {
		return 0, err
	}
	if b.stopped {
		return b.w.Write(p)
	}
	if len(b.buf) == 0 {
		b.started = time.Now()
		b.timer.Reset(flushEvery)
		if b.buf == nil {
			select {
			case b.buf = <-b.free:
			default:
				b.buf = make([]byte, 0, b.size+4096)
			}
		}
	}
	b.buf = append(b.buf, p...)
	if len(b.buf) >= b.size || time.Since(b.started) >= flushEvery {
		b.handOff()
	}
	return len(p), nil
}

// failed is the first write error.
func (b *blockWriter) failed() error {
	if p := b.err.Load(); p != nil {
		return *p
	}
	return nil
}

// flushOld queues a block that waited flushEvery (the timer's goroutine).
func (b *blockWriter) flushOld() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.stopped && len(b.buf) > 0 && time.Since(b.started) >= flushEvery {
		b.handOff()
	}
}

// handOff queues buf for writing (under mu).
func (b *blockWriter) handOff() {
	if len(b.buf) == 0 {
		return
	}
	b.out <- blockReq{b: b.buf}
	b.buf = nil
}

// Sync implements zapcore.WriteSyncer: everything written so far is out.
func (b *blockWriter) Sync() error {
	b.mu.Lock()
	if b.stopped {
		defer b.mu.Unlock()
		return b.failed()
	}
	b.handOff()
	ack := make(chan struct{})
	b.out <- blockReq{ack: ack}
	b.mu.Unlock()
	<-ack
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failed()
}

// Stop writes the rest and ends the writing goroutine; the process may exit
// when it returns. Later writes go straight to w.
func (b *blockWriter) Stop() error {
	b.stop.Do(func() {
		b.mu.Lock()
		b.timer.Stop()
		b.handOff()
		close(b.out)
		b.stopped = true
		b.mu.Unlock()
		<-b.done
	})
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failed()
}
