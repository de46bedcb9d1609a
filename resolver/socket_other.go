//go:build !linux

package resolver

import (
	"net"
	"net/netip"
)

// dialUDP opens a fresh UDP socket connected to srv (a kernel-chosen source port).
func dialUDP(srv netip.AddrPort) (udpConn, error) {
	return net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(srv))
}

// dialSend is dialUDP that also sends pkts.
func dialSend(srv netip.AddrPort, pkts [][]byte) (fresh, error) {
	return dialWrite(srv, pkts)
}
