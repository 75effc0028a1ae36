//go:build !linux

package routing

import (
	"context"
	"errors"
	"net/netip"
)

// Bypass is only implemented on Linux.
type Bypass struct{}

// AddBypass is only implemented on Linux.
func AddBypass(ctx context.Context, addr netip.Addr, tunIf string) (*Bypass, error) {
	return nil, errors.ErrUnsupported
}

// Refresh is only implemented on Linux.
func (b *Bypass) Refresh(ctx context.Context) (bool, error) { return false, errors.ErrUnsupported }

// Close is only implemented on Linux.
func (b *Bypass) Close() error { return nil }
