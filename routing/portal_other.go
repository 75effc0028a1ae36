//go:build !linux

package routing

import (
	"errors"
	"net/netip"
)

// EgressInterface returns errors.ErrUnsupported: it reads Linux routes.
func EgressInterface(addr netip.Addr, tunIf string) (string, error) {
	return "", errors.ErrUnsupported
}
