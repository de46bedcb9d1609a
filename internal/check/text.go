package check

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteText prints the report for people: a verdict, the configuration and
// the daemon, one line per allowlist, then the problems with what to do.
func (r *Report) WriteText(w io.Writer) {
	verdict := map[string]string{"ok": "OK: in sync", "problems": fmt.Sprintf("PROBLEMS: %d", len(r.Problems)),
		"invalid": fmt.Sprintf("INVALID CONFIGURATION: %s", plural(len(r.Config.Errors), "error")), "cannot_run": "CANNOT CHECK: not allowed to read nftables (needs root or CAP_NET_ADMIN)"}[r.Status]
	fmt.Fprintf(w, "egressd check: %s\n", verdict)
	if r.Config.Valid {
		fmt.Fprintf(w, "config:  %s: %d allowlists, %d names, resolvers %s\n", r.Config.File, r.Config.Allowlists, r.Config.Names, strings.Join(r.Config.Resolvers, ", "))
	} else {
		// Each error is listed once, under problems, with what to do.
		fmt.Fprintf(w, "config:  %s: invalid\n", r.Config.File)
	}
	if r.Config.Valid && len(r.Config.Sources) > 0 {
		var hosts []string
		for n, src := range r.Config.Sources {
			if src == "hosts" {
				hosts = append(hosts, n)
			}
		}
		sort.Strings(hosts)
		fmt.Fprintf(w, "names:   %d answered by dns, %d by hosts", len(r.Config.Sources)-len(hosts), len(hosts))
		if len(hosts) > 0 {
			fmt.Fprintf(w, " (%s: %s)", r.Config.HostsFile, strings.Join(hosts, ", "))
		}
		fmt.Fprintln(w)
	}
	switch {
	case r.Status == "cannot_run" || !r.Config.Valid:
	case r.Daemon.Running:
		fmt.Fprintf(w, "daemon:  running (pid %d), generation %d, last apply %s ago", r.Daemon.PID, r.Daemon.Generation, ago(r.CheckedAt, r.Daemon.LastApply))
		if !r.Daemon.ConfigMatches {
			fmt.Fprint(w, ", NOT enforcing the files on disk")
		}
		fmt.Fprintln(w)
	case r.Daemon.Seen:
		fmt.Fprintf(w, "daemon:  not running (state file from pid %d, last apply %s ago)\n", r.Daemon.PID, ago(r.CheckedAt, r.Daemon.LastApply))
	case r.Config.Valid:
		fmt.Fprintf(w, "daemon:  no state file (%s): compared with a fresh resolution\n", r.Daemon.StateFile)
	}
	if len(r.Allowlists) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ALLOWLIST\tUSER\tUID\tMODE\tDNS\tENTRIES\tNAMES\tADDRESSES\tSTATUS")
		for _, a := range r.Allowlists {
			uid := "-"
			if a.UID != nil {
				uid = fmt.Sprint(*a.UID)
			}
			who := a.User
			if a.Unit != "" {
				who, uid = a.Unit, "-"
			}
			addrs := fmt.Sprint(a.Addresses)
			if a.DNS == "proxy" {
				addrs += fmt.Sprintf(" + %d answered", a.Proxied)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", a.Name, who, uid, a.Mode, a.DNS, a.Entries, a.Names, addrs, a.Status)
		}
		tw.Flush()
		var lines []string
		for _, a := range r.Allowlists {
			if a.Ending > 0 {
				lines = append(lines, fmt.Sprintf("  %s: %d elements from DNS, %s to %s left", a.Name, a.Ending, a.EndsIn, a.LastEndsIn))
			}
		}
		if len(lines) > 0 {
			fmt.Fprintln(w, "\nkernel lifetimes (the kernel removes an address from DNS when its time runs out, whether or not egressd runs; egressd renews it as the name refreshes):")
			fmt.Fprintln(w, strings.Join(lines, "\n"))
		}
		first := true
		for _, a := range r.Allowlists {
			for _, n := range a.Notes {
				if first {
					fmt.Fprintln(w, "\nnotes:")
					first = false
				}
				fmt.Fprintf(w, "  %s: %s\n", a.Name, n)
			}
		}
	}
	if len(r.Problems) > 0 {
		fmt.Fprintln(w, "\nproblems:")
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  %s %s: %s\n    → %s\n", p.Kind, p.Object, indent(p.Detail, "    "), indent(p.Fix, "      "))
		}
	}
	if len(r.Notes) > 0 {
		fmt.Fprintln(w, "\nnotes:")
		for _, p := range r.Notes {
			fmt.Fprintf(w, "  %s %s: %s\n    → %s\n", p.Kind, p.Object, indent(p.Detail, "    "), indent(p.Fix, "      "))
		}
	}
}

// plural is "1 error", "2 errors".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func ago(now time.Time, t *time.Time) string {
	if t == nil || t.IsZero() {
		return "never"
	}
	return now.Sub(*t).Round(time.Second).String()
}

// indent keeps continuation lines of a multi-line text under their first line.
func indent(s, pad string) string { return strings.ReplaceAll(s, "\n", "\n"+pad) }
