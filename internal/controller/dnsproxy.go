package controller

import (
	"maps"
	"time"

	"go.uber.org/zap"

	"github.com/egressd/egressd/config"
	"github.com/egressd/egressd/internal/dnsproxy"
	"github.com/egressd/egressd/internal/event"
)

// DNSProxy is the DNS proxy as the loop drives it (dnsproxy.Server).
type DNSProxy interface {
	// SetPolicy gives it the allowlists it answers for, with their uids.
	SetPolicy(*dnsproxy.Policy)
	// Listen opens its sockets; a no-op once they are open.
	Listen(port uint16) error
	// Refill writes its live answers again after the table was restored.
	Refill() error
}

// proxyState is what the proxy was last given.
type proxyState struct {
	cfg      *config.Config
	uids     map[string]uint32
	failedAt time.Time
}

// syncProxy gives the proxy the policy of the configuration in force,
// before the kernel redirects a new user's queries to it, and opens its
// sockets once an allowlist has dns: proxy. A socket that cannot be opened
// is retried; meanwhile those users' queries fail (the kernel redirects
// them to a port nobody answers on): closed, never a bypass.
func (c *Controller) syncProxy() {
	if c.o.DNSProxy == nil {
		return
	}
	uids := map[string]uint32{}
	for _, a := range c.cfg.Allowlists {
		if a.DNS != config.DNSProxy {
			continue
		}
		if uid, ok := c.users.UIDs[a.Name]; ok {
			uids[a.Name] = uid
		}
	}
	if c.proxy.cfg != c.cfg || !maps.Equal(c.proxy.uids, uids) {
		c.o.DNSProxy.SetPolicy(dnsproxy.PolicyFrom(c.cfg, uids))
		c.proxy.cfg, c.proxy.uids = c.cfg, uids
	}
	if len(uids) == 0 || c.o.Now().Sub(c.proxy.failedAt) < 5*time.Second {
		return
	}
	if err := c.o.DNSProxy.Listen(c.cfg.DNSProxyPort); err != nil {
		c.proxy.failedAt = c.o.Now()
		c.o.Log.Error("the DNS proxy cannot listen: dns: proxy users' queries fail until it can", event.Field(event.DNSProxyFailed), zap.Error(err))
	}
}
