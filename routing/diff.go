package routing

import (
	"net/netip"
	"slices"
)

// op is one change to a set of prefixes: add or delete Prefix.
type op struct {
	add    bool
	prefix netip.Prefix
}

// String renders o as "+prefix" or "-prefix", for logs and tests.
func (o op) String() string {
	if o.add {
		return "+" + o.prefix.String()
	}
	return "-" + o.prefix.String()
}

// diff returns the operations that turn the set current into the set desired.
// Inputs may be unsorted and contain duplicates; they are not modified.
//
// Adds come before deletes so that traffic keeps flowing during a change.
// The one exception is a stale entry that conflicts with a desired one: if
// conflicts(stale, wanted) reports true, the delete of stale is moved before
// all adds, because the kernel would refuse the add while stale exists (an
// IPv6 address is keyed by address alone, so fd00::2/64 cannot be added
// while fd00::2/48 exists). conflicts may be nil.
//
// Within each group, operations are in netip.Prefix.Compare order, so the
// result is deterministic.
func diff(current, desired []netip.Prefix, conflicts func(stale, wanted netip.Prefix) bool) []op {
	cur := sortedUnique(current)
	want := sortedUnique(desired)

	var adds, stale []netip.Prefix
	for _, p := range want {
		if _, found := slices.BinarySearchFunc(cur, p, netip.Prefix.Compare); !found {
			adds = append(adds, p)
		}
	}
	for _, p := range cur {
		if _, found := slices.BinarySearchFunc(want, p, netip.Prefix.Compare); !found {
			stale = append(stale, p)
		}
	}

	ops := make([]op, 0, len(adds)+len(stale))
	var late []netip.Prefix
	for _, s := range stale {
		if conflicts != nil && slices.ContainsFunc(adds, func(a netip.Prefix) bool { return conflicts(s, a) }) {
			ops = append(ops, op{add: false, prefix: s})
		} else {
			late = append(late, s)
		}
	}
	for _, a := range adds {
		ops = append(ops, op{add: true, prefix: a})
	}
	for _, s := range late {
		ops = append(ops, op{add: false, prefix: s})
	}
	return ops
}

// addrConflict is the conflict rule for interface addresses. A stale
// address must go before a wanted one is added when
//   - both carry the same address with different lengths: the kernel keys
//     IPv6 addresses by address alone and refuses the add; or
//   - both are IPv4 in the same subnet: the wanted one would become a
//     secondary address of the stale primary, and deleting a primary
//     deletes its secondaries unless promote_secondaries is set
//     (Documentation/networking/ip-sysctl.rst).
func addrConflict(stale, wanted netip.Prefix) bool {
	return stale.Addr() == wanted.Addr() ||
		stale.Addr().Is4() && stale.Masked() == wanted.Masked()
}
