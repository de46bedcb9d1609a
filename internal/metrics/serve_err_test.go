package metrics

import (
	"context"
	"net"
	"path/filepath"
	"testing"

	"go.uber.org/zap"
)

// A listener that fails is Serve's error (the daemon logs metrics_failed),
// not a quiet return as when ctx ends.
func TestServeListenerFails(t *testing.T) {
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "m.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if err := Serve(context.Background(), ln, New(), zap.NewNop()); err == nil {
		t.Error("Serve on a closed listener returned nil")
	}
}
