package routing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Options configures NewManager. The zero value is ready to use.
type Options struct {
	// Handle is the rtnetlink handle to operate through, for example one
	// made with netlink.NewHandleAt to work inside another network
	// namespace. The caller keeps ownership: Close does not close it.
	// Nil means a new handle in the network namespace of the calling
	// thread, closed by Manager.Close.
	Handle *netlink.Handle
	// Logger receives one record per change (address or route added or
	// removed). Nil discards.
	Logger *slog.Logger
}

// NewManager returns a Manager that configures interfaces through rtnetlink.
//
// Ownership rules: addresses are owned when this Manager added them (the
// kernel has no owner tag for addresses), and are remembered in memory.
// Routes are owned when they carry RouteProtocol in the main table on the
// managed interface; this includes leftovers of an earlier process, which
// Set adopts (and then removes if no longer desired). An address or route
// that already exists without being owned satisfies the desired state but
// is left alone, and Close does not remove it.
//
// Routes are device routes in the main table: scope link for IPv4, and for
// IPv6 the kernel's default metric. Adding a route whose destination is
// already routed through another interface with the same metric fails
// with EEXIST; the Manager does not steal routes.
//
// Adds precede deletes, with one exception (see addrConflict): a stale
// address is deleted before a wanted one with the same IP, or, for IPv4,
// in the same subnet. The kernel itself removes state a Manager may depend
// on: deleting the last IPv4 address of a link flushes the link's IPv4
// routes, so Set re-reads routes after address changes and restores them.
// A foreign IPv4 address that is a secondary of an owned primary is removed
// by the kernel with it unless promote_secondaries is set.
// addrGenModeNone is IN6_ADDR_GEN_MODE_NONE (linux/if_link.h).
const addrGenModeNone = 1

func NewManager(opts Options) (Manager, error) {
	m := &linuxManager{h: opts.Handle, log: opts.Logger}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.h == nil {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return nil, fmt.Errorf("open rtnetlink handle: %w", err)
		}
		m.h, m.ownHandle = h, true
	}
	return m, nil
}

// linuxManager implements Manager with rtnetlink.
type linuxManager struct {
	// Immutable after NewManager.
	h         *netlink.Handle
	ownHandle bool // h was opened by NewManager and is closed by Close
	log       *slog.Logger

	mu     sync.Mutex
	closed bool       // guarded by mu
	owned  ownedState // guarded by mu
}

// ownedState is what a linuxManager installed on one link.
type ownedState struct {
	ifname    string
	linkIndex int            // 0: nothing owned
	addrs     []netip.Prefix // sorted
	routes    []netip.Prefix // sorted
}

func (m *linuxManager) Set(ctx context.Context, cfg Config) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.Normalized()

	link, err := m.h.LinkByName(cfg.Interface)
	if err != nil {
		return fmt.Errorf("find link %s: %w", cfg.Interface, err)
	}
	attrs := link.Attrs()

	var errs []error
	// A different interface (or the same name re-created with a new
	// index) starts from nothing. The old state goes first: a route to
	// the same destination through another link would conflict.
	if m.owned.linkIndex != 0 && m.owned.linkIndex != attrs.Index {
		errs = append(errs, m.removeLocked(m.owned)...)
		m.owned = ownedState{}
	}
	m.owned.ifname, m.owned.linkIndex = cfg.Interface, attrs.Index

	if cfg.MTU != 0 && attrs.MTU != cfg.MTU {
		if err := m.h.LinkSetMTU(link, cfg.MTU); err != nil {
			errs = append(errs, fmt.Errorf("set mtu %d dev %s: %w", cfg.MTU, cfg.Interface, err))
		} else {
			m.log.Info("set mtu", "ifname", cfg.Interface, "mtu", cfg.MTU)
		}
	}
	if attrs.Flags&net.FlagUp == 0 {
		// No automatic IPv6 link-local address: a tunnel has no use for
		// one, and the router and multicast-listener solicitations the
		// kernel would send from it only show up as dropped packets on
		// the other side. Explicit IPv6 addresses still work. Best effort:
		// kernels without IPv6 refuse it.
		if err := m.h.LinkSetIP6AddrGenMode(link, addrGenModeNone); err != nil {
			m.log.Debug("disable ipv6 link-local address", "ifname", cfg.Interface, "err", err)
		}
		if err := m.h.LinkSetUp(link); err != nil {
			errs = append(errs, fmt.Errorf("set link up dev %s: %w", cfg.Interface, err))
		} else {
			m.log.Info("set link up", "ifname", cfg.Interface)
		}
	}

	// Order: conflicting address deletes and address adds, then routes
	// (which may depend on the new addresses), then stale addresses, and
	// routes once more if deleting an address removed a kernel prefix
	// route that satisfied a desired route.
	addrOps, err := m.addrOpsLocked(link, cfg.Addresses)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	split := len(addrOps)
	for split > 0 && !addrOps[split-1].add {
		split--
	}
	errs = append(errs, m.applyAddrsLocked(ctx, link, addrOps[:split])...)
	errs = append(errs, m.convergeRoutesLocked(ctx, cfg.Routes)...)
	if late := addrOps[split:]; len(late) > 0 {
		errs = append(errs, m.applyAddrsLocked(ctx, link, late)...)
		errs = append(errs, m.convergeRoutesLocked(ctx, cfg.Routes)...)
	}

	return errors.Join(errs...)
}

// addrOpsLocked returns the address operations that converge the owned
// addresses on link to want. Owned addresses that vanished from the link
// (deleted by someone else) are forgotten first so that they are re-added;
// adds of addresses that exist but are not owned are dropped.
func (m *linuxManager) addrOpsLocked(link netlink.Link, want []netip.Prefix) ([]op, error) {
	present, err := m.linkAddrs(link)
	if err != nil {
		return nil, err
	}
	m.owned.addrs = slices.DeleteFunc(m.owned.addrs, func(p netip.Prefix) bool {
		_, ok := present[p]
		return !ok
	})
	ops := diff(m.owned.addrs, want, addrConflict)
	return slices.DeleteFunc(ops, func(o op) bool {
		if _, exists := present[o.prefix]; o.add && exists {
			m.log.Debug("address already present, not owned", "ifname", m.owned.ifname, "addr", o.prefix)
			return true
		}
		return false
	}), nil
}

func (m *linuxManager) linkAddrs(link netlink.Link) (map[netip.Prefix]struct{}, error) {
	list, err := retryDump(func() ([]netlink.Addr, error) { return m.h.AddrList(link, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("list addresses dev %s: %w", link.Attrs().Name, err)
	}
	present := make(map[netip.Prefix]struct{}, len(list))
	for _, a := range list {
		if p, ok := ipNetToPrefix(a.IPNet); ok {
			present[p] = struct{}{}
		}
	}
	return present, nil
}

func (m *linuxManager) applyAddrsLocked(ctx context.Context, link netlink.Link, ops []op) []error {
	var errs []error
	dev := m.owned.ifname
	for _, o := range ops {
		if err := ctx.Err(); err != nil {
			return append(errs, fmt.Errorf("configure addresses dev %s: %w", dev, err))
		}
		if o.add {
			if err := m.h.AddrAdd(link, netlinkAddr(o.prefix)); err != nil {
				errs = append(errs, fmt.Errorf("add address %v dev %s: %w", o.prefix, dev, err))
				continue
			}
			m.owned.addrs = insertSorted(m.owned.addrs, o.prefix)
			m.log.Info("added address", "ifname", dev, "addr", o.prefix)
			continue
		}
		if err := m.h.AddrDel(link, netlinkAddr(o.prefix)); err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("delete address %v dev %s: %w", o.prefix, dev, err))
			continue
		}
		m.owned.addrs = removeSorted(m.owned.addrs, o.prefix)
		m.log.Info("deleted address", "ifname", dev, "addr", o.prefix)
	}
	return errs
}

// convergeRoutesLocked adds the missing routes of want and deletes owned
// routes not in want. The kernel is the source of truth: every route with
// RouteProtocol on the link is owned.
func (m *linuxManager) convergeRoutesLocked(ctx context.Context, want []netip.Prefix) []error {
	dev, idx := m.owned.ifname, m.owned.linkIndex
	list, err := retryDump(func() ([]netlink.Route, error) {
		return m.h.RouteListFiltered(netlink.FAMILY_ALL,
			&netlink.Route{LinkIndex: idx, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return []error{fmt.Errorf("list routes dev %s: %w", dev, err)}
	}
	var ours []netip.Prefix
	foreign := map[netip.Prefix]bool{}
	for _, r := range list {
		p, ok := routeDst(r)
		if !ok || r.Type != unix.RTN_UNICAST {
			continue
		}
		if r.Protocol == RouteProtocol {
			ours = append(ours, p)
		} else {
			foreign[p] = true
		}
	}
	ours = sortedUnique(ours)

	var errs []error
	for _, o := range diff(ours, want, nil) {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("configure routes dev %s: %w", dev, err))
			break
		}
		if o.add {
			if foreign[o.prefix] {
				m.log.Debug("route already present, not owned", "ifname", dev, "route", o.prefix)
				continue
			}
			if err := m.h.RouteAdd(netlinkRoute(idx, o.prefix)); err != nil {
				errs = append(errs, fmt.Errorf("add route %v dev %s: %w", o.prefix, dev, err))
				continue
			}
			ours = insertSorted(ours, o.prefix)
			m.log.Info("added route", "ifname", dev, "route", o.prefix)
			continue
		}
		if err := m.h.RouteDel(netlinkRoute(idx, o.prefix)); err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("delete route %v dev %s: %w", o.prefix, dev, err))
			continue
		}
		ours = removeSorted(ours, o.prefix)
		m.log.Info("deleted route", "ifname", dev, "route", o.prefix)
	}
	m.owned.routes = ours
	return errs
}

// removeLocked deletes the routes, then the addresses, of s, ignoring
// objects (or the link) that are already gone.
func (m *linuxManager) removeLocked(s ownedState) []error {
	var errs []error
	for _, p := range s.routes {
		if err := m.h.RouteDel(netlinkRoute(s.linkIndex, p)); err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("delete route %v dev %s: %w", p, s.ifname, err))
			continue
		}
		m.log.Info("deleted route", "ifname", s.ifname, "route", p)
	}
	for _, p := range s.addrs {
		a := netlinkAddr(p)
		a.LinkIndex = s.linkIndex
		if err := m.h.AddrDel(nil, a); err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("delete address %v dev %s: %w", p, s.ifname, err))
			continue
		}
		m.log.Info("deleted address", "ifname", s.ifname, "addr", p)
	}
	return errs
}

func (m *linuxManager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	errs := m.removeLocked(m.owned)
	m.owned = ownedState{}
	if m.ownHandle {
		m.h.Close()
	}
	return errors.Join(errs...)
}

// Cleanup removes what a crashed instance whose tunnel interface is ifname
// may have left behind, in the network namespace of the calling thread:
//
//   - if a link named ifname exists, every route with protocol
//     RouteProtocol on it (any table), and every address on it except
//     IPv6 link-local ones (fe80::/10, which the kernel generates itself);
//   - the instance's bypass routes (BypassProtocol, see Bypass): those
//     whose metric is the interface index of ifname, and those whose
//     metric names no existing link, whose instance has gone with its
//     tunnel device. Older versions made them with RouteProtocol and a
//     gateway (a Manager never sets one): those count as gone too.
//
// Routes and addresses of other instances (on their own tunnel
// interfaces, or bypass routes whose tunnel device exists) are left alone:
// a TUN device vanishes with the process that made it, and the kernel
// removes its routes and addresses with it.
//
// Because addresses carry no owner tag, ifname must name an interface that
// belongs to this program alone (its TUN device); pass "" to remove the
// bypass routes of gone instances only. The link itself, its MTU and state
// are left alone. Objects that vanish concurrently are ignored.
func Cleanup(ctx context.Context, ifname string) error {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open rtnetlink handle: %w", err)
	}
	defer h.Close()
	return cleanup(ctx, h, ifname)
}

func cleanup(ctx context.Context, h *netlink.Handle, ifname string) error {
	var link netlink.Link
	if ifname != "" {
		l, err := h.LinkByName(ifname)
		if err != nil && !isGone(err) {
			return fmt.Errorf("find link %s: %w", ifname, err)
		}
		link = l
	}
	links, err := retryDump(h.LinkList)
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	exists := make(map[int]bool, len(links))
	for _, l := range links {
		exists[l.Attrs().Index] = true
	}
	var routes []netlink.Route
	for _, proto := range []netlink.RouteProtocol{RouteProtocol, BypassProtocol} {
		rs, err := retryDump(func() ([]netlink.Route, error) {
			return h.RouteListFiltered(netlink.FAMILY_ALL,
				&netlink.Route{Protocol: proto, Table: unix.RT_TABLE_UNSPEC},
				netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		})
		if err != nil {
			return fmt.Errorf("list routes proto %d: %w", proto, err)
		}
		routes = append(routes, rs...)
	}
	linkIndex := 0
	if link != nil {
		linkIndex = link.Attrs().Index
	}
	var errs []error
	for _, r := range routes {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, fmt.Errorf("cleanup routes: %w", err))...)
		}
		if !cleanupOwns(r, linkIndex, exists) {
			continue
		}
		if err := h.RouteDel(&r); err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("delete route %v: %w", r, err))
		}
	}
	if link == nil {
		return errors.Join(errs...)
	}
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return h.AddrList(link, netlink.FAMILY_ALL) })
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list addresses dev %s: %w", ifname, err))...)
	}
	for _, a := range addrs {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, fmt.Errorf("cleanup addresses: %w", err))...)
		}
		if a.IP.To4() == nil && a.IP.IsLinkLocalUnicast() {
			continue
		}
		if err := h.AddrDel(link, &a); err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("delete address %v dev %s: %w", a.IPNet, ifname, err))
		}
	}
	return errors.Join(errs...)
}

// cleanupOwns reports whether Cleanup of the instance whose tunnel link has
// index linkIndex (0: the link does not exist) removes route r, one with
// RouteProtocol or BypassProtocol; exists holds the indexes of the links
// in the namespace. See Cleanup.
func cleanupOwns(r netlink.Route, linkIndex int, exists map[int]bool) bool {
	switch {
	case r.Protocol == BypassProtocol:
		return (linkIndex != 0 && r.Priority == linkIndex) || !exists[r.Priority]
	case r.Gw != nil: // an older version's bypass route: its owner is unknown
		return !exists[r.Priority]
	default:
		return linkIndex != 0 && r.LinkIndex == linkIndex
	}
}

// retryDump calls list again when the kernel reports that the dump was
// interrupted by a concurrent change (NLM_F_DUMP_INTR), which makes the
// result possibly inconsistent.
func retryDump[T any](list func() ([]T, error)) ([]T, error) {
	const attempts = 5
	var (
		res []T
		err error
	)
	for range attempts {
		res, err = list()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return res, err
		}
	}
	return nil, err
}

// isGone reports whether err means the object or its link does not exist.
func isGone(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) ||
		errors.Is(err, unix.ESRCH) || // route not found
		errors.Is(err, unix.EADDRNOTAVAIL) || // address not found
		errors.Is(err, unix.ENODEV) || // link gone
		errors.Is(err, unix.ENOENT)
}

func netlinkAddr(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: prefixToIPNet(p)}
	if p.Addr().Is6() {
		// The tunnel peer is the only neighbor and the server assigned
		// the address: skip duplicate address detection, which would
		// leave the address tentative (unbindable) for about a second.
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

func netlinkRoute(linkIndex int, p netip.Prefix) *netlink.Route {
	r := &netlink.Route{
		LinkIndex: linkIndex,
		Dst:       prefixToIPNet(p),
		Protocol:  RouteProtocol,
		Table:     unix.RT_TABLE_MAIN,
		Type:      unix.RTN_UNICAST,
		Scope:     netlink.SCOPE_UNIVERSE, // IPv6 routes have no scope
	}
	if p.Addr().Is4() {
		r.Scope = netlink.SCOPE_LINK // on-link, like `ip route add P dev D`
	}
	return r
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{
		IP:   p.Addr().AsSlice(),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}
}

// ipNetToPrefix converts an address or route destination from netlink; the
// IP keeps its host bits (an interface address).
func ipNetToPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	ip := n.IP
	if bits == 32 {
		ip = ip.To4()
	}
	a, ok := netip.AddrFromSlice(ip)
	if !ok || a.BitLen() != bits {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, ones), true
}

// routeDst returns the destination of r; a missing RTA_DST is the default
// route of r's family.
func routeDst(r netlink.Route) (netip.Prefix, bool) {
	if r.Dst != nil {
		p, ok := ipNetToPrefix(r.Dst)
		return p.Masked(), ok
	}
	switch r.Family {
	case unix.AF_INET:
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0), true
	case unix.AF_INET6:
		return netip.PrefixFrom(netip.IPv6Unspecified(), 0), true
	}
	return netip.Prefix{}, false
}

func insertSorted(ps []netip.Prefix, p netip.Prefix) []netip.Prefix {
	i, found := slices.BinarySearchFunc(ps, p, netip.Prefix.Compare)
	if found {
		return ps
	}
	return slices.Insert(ps, i, p)
}

func removeSorted(ps []netip.Prefix, p netip.Prefix) []netip.Prefix {
	if i, found := slices.BinarySearchFunc(ps, p, netip.Prefix.Compare); found {
		return slices.Delete(ps, i, i+1)
	}
	return ps
}
