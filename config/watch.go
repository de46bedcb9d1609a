package config

import (
	"context"
	"github.com/egressd/egressd/internal/event"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// Watcher reports, coalesced, that the main file or the allow directory may
// have changed. It watches directories, not files, so that editors that save
// through a rename, Kubernetes ConfigMap symlink swaps (..data) and a deleted
// and recreated allow directory are all seen. It never parses anything: the
// receiver reloads and decides whether anything really changed.
type Watcher struct {
	mainFile string
	allowDir string
	extra    []string // other files whose change matters (e.g. /etc/passwd)
	w        *fsnotify.Watcher
	log      *zap.Logger
	quiet    time.Duration
	C        chan struct{} // receives one value per burst of changes
}

// NewWatcher watches mainFile's directory, allowDir and allowDir's parent,
// the directories of any extra files, and extra paths that are directories
// themselves (their files count).
// quiet is how long the files must stay still before a burst is reported.
func NewWatcher(mainFile, allowDir string, quiet time.Duration, log *zap.Logger, extra ...string) (*Watcher, error) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	w := &Watcher{mainFile: filepath.Clean(mainFile), allowDir: filepath.Clean(allowDir), w: fw, log: log, quiet: quiet, C: make(chan struct{}, 1)}
	for _, f := range extra {
		if f != "" {
			w.extra = append(w.extra, filepath.Clean(f))
		}
	}
	w.addWatches()
	return w, nil
}

// addWatches (re)adds every directory watch; adding one that exists is a no-op,
// and a directory that does not exist yet is picked up on a later event.
func (w *Watcher) addWatches() {
	dirs := []string{filepath.Dir(w.mainFile), filepath.Dir(w.allowDir), w.allowDir}
	for _, f := range w.extra {
		dirs = append(dirs, filepath.Dir(f))
		if st, err := os.Stat(f); err == nil && st.IsDir() {
			dirs = append(dirs, f) // a directory of files (lists_dir)
		}
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); err != nil {
			continue
		}
		if err := w.w.Add(d); err != nil {
			w.log.Warn("cannot watch directory; changes there are seen only on SIGHUP",
				event.Field(event.WatchFailed), zap.String("path", d), zap.Error(err))
		}
	}
}

func (w *Watcher) relevant(name string) bool {
	name = filepath.Clean(name)
	for _, f := range w.extra {
		if name == f || filepath.Dir(name) == f {
			return true
		}
	}
	return name == w.mainFile || name == w.allowDir || filepath.Dir(name) == w.allowDir
}

// Run delivers coalesced change notices on C until ctx ends.
func (w *Watcher) Run(ctx context.Context) {
	defer w.w.Close()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	// A file rewritten without pause would keep postponing the reload; the
	// first event of a burst therefore bounds the wait to maxWait.
	maxWait := 5 * w.quiet
	var burst time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.w.Events:
			if !ok {
				return
			}
			if w.relevant(ev.Name) {
				if burst.IsZero() {
					burst = time.Now()
				}
				wait := w.quiet
				if left := maxWait - time.Since(burst); left < wait {
					wait = max(left, 0)
				}
				timer.Reset(wait)
			}
		case err, ok := <-w.w.Errors:
			if !ok {
				return
			}
			// An overflow means events were lost: reload to be safe.
			w.log.Warn("watch error; reloading to be safe", event.Field(event.WatchFailed), zap.Error(err))
			timer.Reset(w.quiet)
		case <-timer.C:
			burst = time.Time{}
			w.addWatches()
			select {
			case w.C <- struct{}{}:
			default: // a notice is already pending; the reload will see everything
			}
		}
	}
}
