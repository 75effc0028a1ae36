// Package routing converges the network configuration of a tunnel
// interface (MTU, addresses, routes) to a declared desired state, and
// allocates tunnel addresses to clients.
//
// The portable core (Config, Manager, the diff and the address Pool) has no
// system dependencies. The Linux Manager lives in manager_linux.go and talks
// rtnetlink through github.com/vishvananda/netlink; on other systems
// NewManager and Cleanup return errors.ErrUnsupported.
//
// Every kernel object a Manager creates is owned and can be erased: routes
// carry the dedicated route protocol RouteProtocol on the instance's own
// tunnel interface, so they can be found again after a crash, and Close
// removes everything the Manager installed. An instance is named by its
// tunnel interface (--tun); nothing one instance installs is found by the
// cleanup of another.
package routing

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// RouteProtocol is the rtnetlink route protocol (rtm_protocol, the "proto"
// column of `ip route`) stamped on every route a Manager installs, so that
// routes owned by this program can be told apart from everyone else's and
// removed after a crash with Cleanup or `ip route flush proto 116`.
//
// 0x74 (116, ASCII 't') is not one of the values reserved by the kernel
// (include/uapi/linux/rtnetlink.h RTPROT_*) nor listed in iproute2's
// rt_protos (0-4, 8-18, 42, 99, 186-192). Values above RTPROT_STATIC (4)
// are not interpreted by the kernel.
//
// Routes with RouteProtocol belong to the instance whose tunnel interface
// they go through: Cleanup of one instance removes only those on its own
// interface.
const RouteProtocol = 0x74

// BypassProtocol is the route protocol of the host routes that keep the way
// to the tunnel server outside a full tunnel (Bypass). They go through
// another interface than the tunnel, so their metric names their instance:
// it is the interface index of the instance's tunnel device, and Cleanup
// tells them apart by it. 0x75 (117) is as free as RouteProtocol.
const BypassProtocol = 0x75

// Config is the desired network state of one tunnel interface.
//
// The zero value of each field means "nothing": MTU 0 leaves the MTU alone,
// and empty Addresses/Routes mean that the Manager should own no addresses
// or routes on the interface.
type Config struct {
	// Interface is the name of an existing network interface, for
	// example "tunnelc0". The Manager never creates or deletes it.
	Interface string
	// MTU is the interface MTU to set; 0 leaves it as it is.
	MTU int
	// Addresses are the interface addresses, each an address with the
	// prefix length of its on-link subnet, e.g. 100.64.0.2/24 or
	// fd00:64::2/64. IPv4 and IPv6 may be mixed.
	Addresses []netip.Prefix
	// Routes are destinations routed directly through the interface
	// (device routes, no gateway). They are normalized with
	// netip.Prefix.Masked, so 10.1.2.3/8 means 10.0.0.0/8.
	Routes []netip.Prefix
}

// Validate reports whether c is well-formed: the interface name is set and
// is a valid Linux interface name length, the MTU is not negative, and all
// prefixes are valid and are not IPv4-mapped IPv6 (use plain IPv4).
func (c Config) Validate() error {
	if c.Interface == "" {
		return fmt.Errorf("%w: empty interface name", ErrInvalidConfig)
	}
	// IFNAMSIZ is 16 including the terminating NUL.
	if len(c.Interface) > 15 {
		return fmt.Errorf("%w: interface name %q longer than 15 bytes", ErrInvalidConfig, c.Interface)
	}
	if c.MTU < 0 {
		return fmt.Errorf("%w: negative MTU %d", ErrInvalidConfig, c.MTU)
	}
	for _, p := range c.Addresses {
		if err := checkPrefix(p); err != nil {
			return fmt.Errorf("%w: address %v: %w", ErrInvalidConfig, p, err)
		}
	}
	for _, p := range c.Routes {
		if err := checkPrefix(p); err != nil {
			return fmt.Errorf("%w: route %v: %w", ErrInvalidConfig, p, err)
		}
	}
	return nil
}

func checkPrefix(p netip.Prefix) error {
	if !p.IsValid() {
		return errors.New("invalid prefix")
	}
	if p.Addr().Is4In6() {
		return errors.New("IPv4-mapped IPv6 prefix")
	}
	return nil
}

// Normalized returns a copy of c, not sharing its slices, with Addresses
// sorted and deduplicated, and Routes masked, sorted and deduplicated: the
// canonical form of the same desired state. It does not validate.
func (c Config) Normalized() Config {
	c.Addresses = sortedUnique(c.Addresses)
	routes := make([]netip.Prefix, len(c.Routes))
	for i, p := range c.Routes {
		routes[i] = p.Masked()
	}
	c.Routes = sortedUnique(routes)
	return c
}

// sortedUnique returns a sorted copy of ps without duplicates.
func sortedUnique(ps []netip.Prefix) []netip.Prefix {
	out := slices.Clone(ps)
	slices.SortFunc(out, netip.Prefix.Compare)
	return slices.Compact(out)
}

// Manager converges one tunnel interface to a desired Config.
//
// Implementations are safe for concurrent use; calls are serialized.
type Manager interface {
	// Set converges the interface to cfg: it sets the MTU (when not 0),
	// brings the link up, adds missing addresses and routes, and removes
	// addresses and routes it installed earlier that cfg no longer lists.
	// It adds before it deletes, so that traffic keeps flowing during a
	// change. Set is idempotent: calling it again with the same cfg is a
	// no-op that returns nil.
	//
	// Set never modifies addresses or routes it did not install itself.
	// On error it still applies every operation it can and returns all
	// failures joined; the state it reached is remembered, so a later
	// Set or Close acts on it. If cfg.Interface differs from the previous
	// call, everything installed on the previous interface is removed
	// first (routes to the same destinations would conflict).
	//
	// Set returns ErrClosed after Close and an error wrapping
	// ErrInvalidConfig if cfg.Validate fails.
	Set(ctx context.Context, cfg Config) error

	// Close removes every address and route this Manager installed,
	// ignoring objects that are already gone (for example because the
	// interface was deleted). It does not change the MTU or link state.
	// After Close, Set returns ErrClosed; Close is idempotent.
	Close() error
}

var (
	// ErrClosed is returned by Manager.Set after Manager.Close.
	ErrClosed = errors.New("routing: manager closed")
	// ErrInvalidConfig is wrapped by errors from Config.Validate.
	ErrInvalidConfig = errors.New("routing: invalid config")
)
