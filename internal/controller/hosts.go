package controller

import (
	"github.com/egressd/egressd/internal/event"
	"github.com/egressd/egressd/resolver"
	"go.uber.org/zap"
)

// reloadHosts re-reads the hosts file (after a watch event, a SIGHUP or a
// configuration change) and makes the names it changed due at once. An
// unreadable file keeps its last contents: names must not silently move to
// DNS answers.
func (c *Controller) reloadHosts() {
	changed, err := c.hosts.Load(c.cfg.HostsFile)
	if err != nil {
		c.o.Log.Error("cannot read the hosts file; keeping its last contents", event.Field(event.ConfigRejected),
			zap.String("file", c.cfg.HostsFile), zap.Error(err))
		return
	}
	if len(changed) == 0 {
		return
	}
	c.o.Log.Info("hosts file changed", event.Field(event.ConfigLoaded), zap.String("file", c.cfg.HostsFile), zap.Strings("changed", changed))
	c.cache.Refresh(changed)
}

// hostsFirst wraps the DNS client: names in the hosts file are answered from it.
func (c *Controller) hostsFirst(next resolver.Querier) resolver.Querier {
	return &resolver.HostsFirst{Hosts: c.hosts, Next: next}
}
