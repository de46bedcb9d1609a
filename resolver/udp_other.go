//go:build !linux

package resolver

import (
	"context"
	"net/netip"
	"time"

	"github.com/miekg/dns"
)

// exchangeUDP asks q of srv over UDP (udp_linux.go has the lean version).
func exchangeUDP(ctx context.Context, q *dns.Msg, srv netip.AddrPort, timeout time.Duration, _ int) (*dns.Msg, error) {
	udp := &dns.Client{Net: "udp", Timeout: timeout}
	r, _, err := udp.ExchangeContext(ctx, q, srv.String())
	return r, err
}
