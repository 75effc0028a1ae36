package state

import (
	"net/netip"

	"tlsvpn/routing"
)

// The leases of today are routing.Pool's.
var _ Leases = (*routing.Pool)(nil)

// OpenLeases returns the leases of subnet: kept in the file at path (a
// snapshot beside a journal, see routing.OpenPool) or, with path "", in
// memory only. warnings are leases found in the file that could not be
// kept (each is dropped and said why). On error the Leases is nil.
func OpenLeases(subnet netip.Prefix, path string) (_ Leases, warnings []error, err error) {
	if path == "" {
		p, err := routing.NewPool(subnet)
		if err != nil {
			return nil, nil, err
		}
		return p, nil, nil
	}
	p, warnings, err := routing.OpenPool(subnet, path)
	if err != nil {
		return nil, warnings, err
	}
	return p, warnings, nil
}
