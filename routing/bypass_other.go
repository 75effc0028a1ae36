//go:build !linux

package routing

import (
	"context"
	"errors"
	"net/netip"
)

// AddBypass is only implemented on Linux.
func AddBypass(ctx context.Context, addr netip.Addr) (remove func() error, err error) {
	return nil, errors.ErrUnsupported
}
