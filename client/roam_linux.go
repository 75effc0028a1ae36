package client

import (
	"context"
	"log/slog"
	"net/netip"

	"github.com/vishvananda/netlink"

	"tlsvpn/tunnel"
)

// watch replaces the session when the local address it uses is removed.
func (r *roamWatch) watch(ctx context.Context, c *tunnel.Client, log *slog.Logger) {
	updates := make(chan netlink.AddrUpdate, 16)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.AddrSubscribeWithOptions(updates, done, netlink.AddrSubscribeOptions{
		ErrorCallback: func(err error) { log.Debug("address watch", "err", err) },
	}); err != nil {
		log.Warn("cannot watch local addresses; roaming is detected by keepalive only", "err", err)
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-updates:
			if !ok {
				return
			}
			ip, ok := netip.AddrFromSlice(u.LinkAddress.IP)
			if !ok || u.NewAddr {
				continue
			}
			if ip = ip.Unmap(); ip == r.current() {
				log.Info("local address of the server connection removed; reconnecting", "addr", ip)
				c.Kick("local address " + ip.String() + " removed")
			}
		}
	}
}
