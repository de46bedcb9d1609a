package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/egressd/egressd/internal/deny"
	"github.com/egressd/egressd/internal/state"
)

// cmdDenies prints the recent denied and audited attempts the daemon
// publishes (RUNTIME_DIR/denies.json), aggregated by allowlist, destination
// and port; --follow streams new ones.
func cmdDenies(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("denies", flag.ContinueOnError)
	fs.SetOutput(stderr)
	runtimeDir := fs.String("runtime-dir", state.DefaultDir, "the daemon's runtime directory")
	allowlist := fs.String("allowlist", "", "only this allowlist")
	asJSON := fs.Bool("json", false, "JSON: the entries (one JSON line each with --follow)")
	follow := fs.Bool("follow", false, "keep printing new denies until interrupted")
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(stderr, "denies", "unexpected argument %q", fs.Arg(0))
	}
	doc, err := readDenies(*runtimeDir)
	if err != nil {
		fmt.Fprintln(stderr, "egressd denies:", err)
		return 2
	}
	if st, err := state.Read(*runtimeDir); err != nil || !st.Running(*runtimeDir) {
		fmt.Fprintf(stderr, "egressd denies: the daemon is not running: what follows was recorded until %s\n", doc.Updated.Format(time.RFC3339))
	}
	keep := func(e deny.RecentEntry) bool { return *allowlist == "" || e.Allowlist == *allowlist }
	var last uint64
	var shown []deny.RecentEntry
	for _, e := range doc.Entries {
		last = max(last, e.Seq)
		if keep(e) {
			shown = append(shown, e)
		}
	}
	if !*follow {
		if *asJSON {
			if shown == nil {
				shown = []deny.RecentEntry{}
			}
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			enc.Encode(shown) //nolint:errcheck
			return 0
		}
		printDenies(stdout, shown, true)
		return 0
	}
	// --follow: the current ones, then each entry again whenever it changes.
	enc := json.NewEncoder(stdout)
	if *asJSON {
		for i := len(shown) - 1; i >= 0; i-- {
			enc.Encode(shown[i]) //nolint:errcheck
		}
	} else {
		rev := make([]deny.RecentEntry, len(shown))
		for i, e := range shown {
			rev[len(shown)-1-i] = e
		}
		printDenies(stdout, rev, true)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return 0
		case <-tick.C:
		}
		doc, err := readDenies(*runtimeDir)
		if err != nil {
			continue // the daemon restarting: it writes a new document
		}
		var fresh []deny.RecentEntry
		newest := last
		for _, e := range doc.Entries {
			if e.Seq > last || e.Seq+uint64(deny.RecentMax) < last { // newer, or a restarted daemon counting anew
				newest = max(newest, e.Seq)
				if keep(e) {
					fresh = append(fresh, e)
				}
			}
		}
		last = newest
		for i := len(fresh) - 1; i >= 0; i-- { // oldest first, as a log
			if *asJSON {
				enc.Encode(fresh[i]) //nolint:errcheck
			} else {
				printDenies(stdout, fresh[i:i+1], false)
			}
		}
	}
}

func readDenies(dir string) (deny.RecentDoc, error) {
	var doc deny.RecentDoc
	err := state.ReadJSON(dir, deny.RecentFile, &doc)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return doc, fmt.Errorf("no record of denies in %s: egressd is not running, or runs with deny_log.mode other than nflog (denies are then in the kernel log, or not logged)", dir)
	case errors.Is(err, fs.ErrPermission):
		return doc, fmt.Errorf("%v: run as root (which hosts a service tried is for root to read)", err)
	case err != nil:
		return doc, err
	case doc.Version != 1:
		return doc, fmt.Errorf("%s: unknown version %d", deny.RecentFile, doc.Version)
	}
	return doc, nil
}

func printDenies(w io.Writer, es []deny.RecentEntry, header bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if header {
		if len(es) == 0 {
			fmt.Fprintln(w, "no denied or audited attempts recorded")
		} else {
			fmt.Fprintln(tw, "LAST SEEN\tALLOWLIST\tVERDICT\tPROTO\tDESTINATION\tPORT\tCOUNT\tNAMES")
		}
	}
	for _, e := range es {
		verdict := "denied"
		if e.Audit {
			verdict = "audited"
		}
		if e.Listen {
			// A refused bind or listen: DESTINATION is the local address.
			verdict += "-listen"
		}
		names := strings.Join(e.Names, ",")
		if names == "" {
			names = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", e.Last.Local().Format("2006-01-02 15:04:05"), e.Allowlist, verdict, e.Proto, e.Dst, e.DPort, e.Count, names)
	}
	tw.Flush()
}
