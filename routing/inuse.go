package routing

import (
	"fmt"
	"net/netip"
	"slices"
)

// InUse is an address, or a directly connected route, that an interface of
// the host already has: what a new tunnel subnet must not collide with.
type InUse struct {
	Ifname string
	// Prefix is an interface address with the prefix length of its subnet
	// (100.64.0.1/24), or the destination of a route through Ifname
	// without a gateway.
	Prefix netip.Prefix
	Route  bool
}

func (u InUse) String() string {
	what := "address"
	if u.Route {
		what = "route"
	}
	return fmt.Sprintf("%s %v on %s", what, u.Prefix, u.Ifname)
}

// ConflictError says why a new instance cannot have its tunnel interface
// or subnet: the interface name is taken, or the subnet collides with what
// another interface has. CheckFree returns it.
type ConflictError struct {
	// Ifname is the tunnel interface name the new instance wants.
	Ifname string
	// Subnet is the tunnel subnet that collides with Used; invalid when
	// the interface name itself is taken.
	Subnet netip.Prefix
	Used   InUse
	// NotTUN says that the existing interface of that name is no TUN
	// device. PID and Command name the process that holds the existing
	// TUN device of that name, when it could be found (0 and ""
	// otherwise).
	NotTUN  bool
	PID     int
	Command string
}

func (e *ConflictError) Error() string {
	if !e.Subnet.IsValid() {
		s := fmt.Sprintf("interface %s already exists", e.Ifname)
		switch {
		case e.NotTUN:
			s += " (not a TUN device)"
		case e.PID != 0:
			s += fmt.Sprintf(" (its TUN device is held by %s, pid %d)", e.Command, e.PID)
		default:
			s += " (a TUN device another process holds)"
		}
		return s
	}
	return fmt.Sprintf("tunnel subnet %v overlaps the %v", e.Subnet, e.Used)
}

// SubnetConflict returns the first entry of used (sorted by interface and
// prefix) that the tunnel subnet collides with, and whether there is one:
//
//   - an address whose subnet overlaps it either way: an address inside it
//     would end up on two interfaces, and a wider subnet on another
//     interface means hosts there with addresses in it become unreachable;
//   - a route without gateway inside it or equal to it: the kernel would
//     send part of the tunnel's traffic there. A wider route (a default
//     route, a full tunnel's halves, an aggregate) is no conflict: the
//     tunnel subnet's own route is more specific and wins.
func SubnetConflict(subnet netip.Prefix, used []InUse) (InUse, bool) {
	subnet = subnet.Masked()
	sorted := slices.Clone(used)
	slices.SortFunc(sorted, func(a, b InUse) int {
		if a.Ifname != b.Ifname {
			if a.Ifname < b.Ifname {
				return -1
			}
			return 1
		}
		if a.Route != b.Route {
			if !a.Route {
				return -1
			}
			return 1
		}
		return a.Prefix.Compare(b.Prefix)
	})
	for _, u := range sorted {
		p := u.Prefix
		if !p.IsValid() || p.Addr().Is4() != subnet.Addr().Is4() {
			continue
		}
		if u.Route {
			if p.Bits() >= subnet.Bits() && subnet.Contains(p.Addr()) {
				return u, true
			}
			continue
		}
		if p.Masked().Overlaps(subnet) {
			return u, true
		}
	}
	return InUse{}, false
}
