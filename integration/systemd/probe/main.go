// Command egressd-probe acts inside the real-systemd test container: it
// listens as a target, runs as a protected service that reports what its
// sandbox lets it do, and asks that service from outside.
//
//	egressd-probe serve ADDR...        accept on each ADDR, greet, close (targets; unix:PATH too)
//	egressd-probe agent ADDR           listen on ADDR; answer one command per connection
//	egressd-probe ask ADDR CMD ARG     send "CMD ARG" to an agent, print its answer
//	egressd-probe connect ADDR         connect once, print ok or the error
//	egressd-probe dns ADDR PREFIX...   a DNS server on ADDR (UDP and TCP; see dns.go)
//	egressd-probe resolve SERVER NAME  ask SERVER for NAME once, print "ok ADDR" or the error
//	egressd-probe fdstore -            keep a socket across restarts in systemd's fd store (fdstore.go)
//	egressd-probe flood ADDR N         keep N idle connections open to ADDR, reconnecting as they
//	                                   close; print how many are open each second (flood.go)
//
// Agent commands: "connect HOST:PORT", "write PATH", "listen HOST:PORT", "pid",
// and the DNS client's: "resolve SERVER NAME", "dnsloop SERVER", "dnsstat -",
// "dnsstop -" (dns.go).
// Answers are one line: "ok" or "error: …".
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: egressd-probe serve|agent|ask|connect ADDR ...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		for _, a := range os.Args[2:] {
			if p, ok := strings.CutPrefix(a, "unix:"); ok {
				os.Remove(p) // a previous run's, as resolved and nscd do (unlink, bind)
			}
			l, err := net.Listen(network(a))
			if err == nil && strings.HasPrefix(a, "unix:") {
				err = os.Chmod(strings.TrimPrefix(a, "unix:"), 0o666) // as resolved's and nscd's
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			go accept(l, func(c net.Conn) { fmt.Fprintln(c, "hello") })
		}
		select {}
	case "agent":
		l, err := net.Listen("tcp", os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, "agent:", err)
			os.Exit(1)
		}
		fmt.Println("agent listening on", os.Args[2])
		accept(l, func(c net.Conn) {
			line, _ := bufio.NewReader(c).ReadString('\n')
			cmd, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
			fmt.Fprintln(c, answer(cmd, arg))
		})
	case "ask":
		if len(os.Args) != 5 {
			os.Exit(2)
		}
		c, err := net.DialTimeout("tcp", os.Args[2], 5*time.Second)
		if err != nil {
			fmt.Println("error: ask:", err)
			os.Exit(1)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck
		fmt.Fprintf(c, "%s %s\n", os.Args[3], os.Args[4])
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			fmt.Println("error: ask:", err)
			os.Exit(1)
		}
		fmt.Print(line)
	case "connect", "dial":
		fmt.Println(answer(os.Args[1], os.Args[2]))
	case "resolve": // as the agent's "resolve", from outside any service
		if len(os.Args) != 4 {
			os.Exit(2)
		}
		fmt.Println(dnsCommand("resolve", os.Args[2]+" "+os.Args[3]))
	case "fdstore":
		os.Exit(fdstore())
	case "flood":
		if len(os.Args) != 4 {
			os.Exit(2)
		}
		flood(os.Args[2], os.Args[3])
	case "dns":
		if err := serveDNS(os.Args[2], os.Args[3:]); err != nil {
			fmt.Fprintln(os.Stderr, "dns:", err)
			os.Exit(1)
		}
	default:
		os.Exit(2)
	}
}

func accept(l net.Listener, handle func(net.Conn)) {
	for {
		c, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go func() { defer c.Close(); handle(c) }()
	}
}

// network splits "unix:PATH" (a UNIX socket) from HOST:PORT (TCP).
func network(addr string) (string, string) {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		return "unix", p
	}
	return "tcp", addr
}

func answer(cmd, arg string) string {
	switch cmd {
	case "pid":
		return fmt.Sprint(os.Getpid())
	case "connect":
		n, a := network(arg)
		c, err := net.DialTimeout(n, a, 5*time.Second)
		if err != nil {
			return "error: " + err.Error()
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second)) //nolint:errcheck
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			return "error: read greeting: " + err.Error()
		}
		return "ok"
	case "dial":
		// Connect only: for servers that wait for the client to speak
		// first (the D-Bus system bus).
		n, a := network(arg)
		c, err := net.DialTimeout(n, a, 5*time.Second)
		if err != nil {
			return "error: " + err.Error()
		}
		c.Close()
		return "ok"
	case "write":
		if err := os.WriteFile(arg, []byte("x"), 0o600); err != nil {
			return "error: " + err.Error()
		}
		return "ok"
	case "listen":
		l, err := net.Listen("tcp", arg)
		if err != nil {
			return "error: " + err.Error()
		}
		l.Close()
		return "ok"
	case "resolve", "dnsloop", "dnsstat", "dnsstop":
		return dnsCommand(cmd, arg)
	}
	return "error: unknown command " + cmd
}
