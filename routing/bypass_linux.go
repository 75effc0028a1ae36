package routing

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Bypass keeps a host route to the tunnel server outside a full tunnel
// (0.0.0.0/1 + 128.0.0.0/1 via the TUN device), so the tunnel never
// captures its own connection. The route copies the gateway and interface
// the system's own routes (every route but ours) give for the server, and
// Refresh moves it when those change: after roaming to another network
// the old gateway is gone, and a reconnect must take the new one. The
// route carries BypassProtocol and, as its metric, the interface index of
// tunIf, so that two instances with routes to the same server each keep
// their own, and Cleanup removes it after a crash (once tunIf is gone).
type Bypass struct {
	addr   netip.Addr
	tunIf  string
	mu     sync.Mutex
	h      *netlink.Handle
	pinned *netlink.Route // guarded by mu; nil when none is installed
}

// AddBypass pins the system's current route to addr (the server) as a
// host route; tunIf is the tunnel interface, whose routes are never
// copied. Close removes it.
func AddBypass(ctx context.Context, addr netip.Addr, tunIf string) (*Bypass, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open rtnetlink handle: %w", err)
	}
	b := &Bypass{addr: addr, tunIf: tunIf, h: h}
	if _, err := b.Refresh(ctx); err != nil {
		h.Close()
		return nil, err
	}
	return b, nil
}

// Refresh re-pins the route if the system's route to the server changed
// (another gateway or interface) or ours disappeared (its interface went
// down). It reports whether it changed anything.
func (b *Bypass) Refresh(ctx context.Context) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.h == nil {
		return false, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	want, err := b.systemRoute()
	if err != nil {
		return false, err
	}
	if b.pinned != nil && b.pinned.LinkIndex == want.LinkIndex && b.pinned.Gw.Equal(want.Gw) && b.present() {
		return false, nil
	}
	if err := b.h.RouteReplace(want); err != nil {
		return false, fmt.Errorf("pin the route to server %v via %v: %w", b.addr, want.Gw, err)
	}
	b.pinned = want
	return true, nil
}

// present reports whether the pinned route is still in the kernel.
func (b *Bypass) present() bool {
	rs, err := b.h.RouteListFiltered(family(b.addr), &netlink.Route{Dst: b.pinned.Dst, Protocol: BypassProtocol, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_DST|netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return false
	}
	for _, r := range rs {
		if r.Priority == b.pinned.Priority {
			return true
		}
	}
	return false
}

// systemRoute returns the host route to pin: the main table's most
// specific route to the server (lowest metric first) that is neither ours
// (of any instance) nor through the tunnel interface.
func (b *Bypass) systemRoute() (*netlink.Route, error) {
	tunIndex := -1
	if l, err := b.h.LinkByName(b.tunIf); err == nil {
		tunIndex = l.Attrs().Index
	}
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return b.h.RouteListFiltered(family(b.addr), &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	var best *netlink.Route
	bestBits := -1
	for i := range routes {
		r := &routes[i]
		if r.Protocol == RouteProtocol || r.Protocol == BypassProtocol || r.LinkIndex == tunIndex || r.Type != unix.RTN_UNICAST || r.LinkIndex == 0 {
			continue
		}
		bits := 0
		if r.Dst != nil {
			p, ok := prefixOfIPNet(r.Dst)
			if !ok || !p.Contains(b.addr) {
				continue
			}
			bits = p.Bits()
		}
		if bits > bestBits || (bits == bestBits && r.Priority < best.Priority) {
			best, bestBits = r, bits
		}
	}
	if best == nil {
		return nil, fmt.Errorf("no route to server %v to keep outside the tunnel", b.addr)
	}
	if tunIndex <= 0 {
		return nil, fmt.Errorf("pin the route to server %v: tunnel interface %s not found", b.addr, b.tunIf)
	}
	n := b.addr.BitLen()
	return &netlink.Route{
		Dst:       &net.IPNet{IP: b.addr.AsSlice(), Mask: net.CIDRMask(n, n)},
		Gw:        best.Gw,
		LinkIndex: best.LinkIndex,
		Protocol:  BypassProtocol,
		Priority:  tunIndex, // the owner; see BypassProtocol
		Table:     unix.RT_TABLE_MAIN,
	}, nil
}

// Close removes the route; it is idempotent.
func (b *Bypass) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.h == nil {
		return nil
	}
	defer func() { b.h.Close(); b.h = nil }()
	if b.pinned == nil {
		return nil
	}
	if err := b.h.RouteDel(b.pinned); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("delete the route to server %v: %w", b.addr, err)
	}
	return nil
}

func family(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func prefixOfIPNet(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	if a.Is4In6() {
		a = a.Unmap()
	}
	return netip.PrefixFrom(a, ones), true
}
