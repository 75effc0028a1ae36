package routing

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AddBypass pins the route to addr that the system uses right now (its
// gateway and interface) as a host route with RouteProtocol, so that a
// full tunnel (0.0.0.0/1 + 128.0.0.0/1 via the TUN device) does not
// capture the tunnel's own connection to its server. remove deletes it;
// Cleanup removes it after a crash.
func AddBypass(ctx context.Context, addr netip.Addr) (remove func() error, err error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open rtnetlink handle: %w", err)
	}
	routes, err := h.RouteGet(addr.AsSlice())
	if err != nil || len(routes) == 0 {
		h.Close()
		return nil, fmt.Errorf("no route to server %v to keep outside the tunnel: %w", addr, err)
	}
	cur := routes[0]
	bits := addr.BitLen()
	r := &netlink.Route{
		Dst:       &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(bits, bits)},
		Gw:        cur.Gw,
		LinkIndex: cur.LinkIndex,
		Protocol:  RouteProtocol,
	}
	if err := h.RouteAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
		h.Close()
		return nil, fmt.Errorf("add bypass route %v via %v: %w", addr, cur.Gw, err)
	}
	return func() error {
		defer h.Close()
		if err := h.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("delete bypass route %v: %w", addr, err)
		}
		return nil
	}, nil
}
