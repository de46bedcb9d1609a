package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/version"
)

func TestBuildInfo(t *testing.T) {
	old := version.Version
	version.Version = "v9.8.7-1-gabcdef0"
	defer func() { version.Version = old }()
	rec := httptest.NewRecorder()
	New().Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	in := version.Get()
	want := `egressd_build_info{commit="` + in.Commit + `",go_version="` + in.GoVersion + `",version="v9.8.7-1-gabcdef0"} 1`
	if !strings.Contains(string(body), want) {
		t.Errorf("metrics lack %s:\n%s", want, body)
	}
}
