package daemon

import (
	"context"
	"net/netip"

	"github.com/coreos/go-systemd/v22/activation"
	"go.uber.org/zap"

	"github.com/egressd/egressd/internal/conntrack"
	"github.com/egressd/egressd/internal/dnsproxy"
	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/internal/metrics"
	"github.com/egressd/egressd/ruleset"
)

// openerByConntrack tells who sent a query from the conntrack entry of its
// flow: only a flow the kernel redirected (DNAT) counts, and its opener is
// the uid the restricted chain wrote into the conntrack mark. A query sent straight
// to the proxy's port (no DNAT) belongs to nobody.
type openerByConntrack struct{ c *conntrack.Conn }

func (o openerByConntrack) Opener(proto uint8, client, local netip.AddrPort) (uint32, bool, error) {
	f, err := o.c.LookupReplyZone(ruleset.DNSZone, proto, local, client)
	return opener(f, err)
}

// Openers is Opener for the UDP queries of one batched read, in one
// round trip to the kernel (conntrack.Conn.LookupReplyZoneBatch): the same
// lookup of each query's own flow.
func (o openerByConntrack) Openers(local netip.AddrPort, clients []netip.AddrPort, out []dnsproxy.Identity) {
	var fb [16]conntrack.Flow
	var eb [16]error
	flows, errs := fb[:0], eb[:0]
	if len(clients) > len(fb) {
		flows, errs = make([]conntrack.Flow, 0, len(clients)), make([]error, 0, len(clients))
	}
	flows, errs = flows[:len(clients)], errs[:len(clients)]
	o.c.LookupReplyZoneBatch(ruleset.DNSZone, 17, local, clients, flows, errs)
	for i := range clients {
		uid, ok, err := opener(flows[i], errs[i])
		out[i] = dnsproxy.Identity{UID: uid, OK: ok, Err: err}
	}
}

// opener reads the lookup of a query's flow: only a redirected flow
// (DNAT) has an opener.
func opener(f conntrack.Flow, err error) (uint32, bool, error) {
	if err != nil {
		return 0, false, err
	}
	if !f.DstNAT() {
		return 0, false, nil
	}
	uid, ok := f.OpenerUID()
	return uid, ok, nil
}

// newDNSProxy builds the DNS proxy with the sockets systemd passed
// (egressd.socket), if any. It listens only once an allowlist has
// dns: proxy (the controller calls Listen).
func newDNSProxy(ctx context.Context, kernel *ruleset.Netlink, log *zap.Logger, m *metrics.Metrics, observe func(dnsproxy.Observation)) (*dnsproxy.Server, func(), error) {
	ct, err := conntrack.Open()
	if err != nil {
		return nil, nil, err
	}
	p := dnsproxy.New(dnsproxy.Options{Kernel: kernel, Identify: openerByConntrack{ct}, Log: log, Metrics: m, Observe: observe})
	if held, err := kernel.ReadProxy(); err == nil {
		p.Seed(held) // a restarted daemon adopts the answers the kernel still holds
	}
	files := activation.Files(true)
	pctx, cancel := context.WithCancel(ctx)
	srv := dnsproxy.NewServer(pctx, p, log, files)
	return srv, func() {
		cancel()
		p.Flush()
		srv.Wait()
		ct.Close()
		for _, name := range srv.Unused() {
			log.Warn("a socket systemd passed was not used: its address is not the DNS proxy's (127.0.0.1 or ::1, dns_proxy_port)",
				event.Field(event.DNSProxyFailed), zap.String("socket", name))
		}
	}, nil
}
