//go:build !linux

package routing

import (
	"errors"
	"net/netip"
)

// CheckFree returns errors.ErrUnsupported: only Linux is supported.
func CheckFree(ifname string, subnets []netip.Prefix) error {
	return errors.ErrUnsupported
}
