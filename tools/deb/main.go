// Command deb builds egressd's Debian package (make deb):
//
//	go run ./tools/deb [-out build] [-arch amd64]
//
// See internal/debpkg and docs/release.md.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"

	"github.com/egressd/egressd/internal/debpkg"
)

func main() {
	out := flag.String("out", "build", "directory for the .deb")
	arch := flag.String("arch", runtime.GOARCH, "GOARCH to build for")
	flag.Parse()
	path, err := debpkg.Build(debpkg.Options{Repo: ".", Out: *out, GOARCH: *arch})
	if err != nil {
		fmt.Fprintln(os.Stderr, "deb:", err)
		os.Exit(1)
	}
	fmt.Println(path)
}
