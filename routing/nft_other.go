//go:build !linux

package routing

import (
	"context"
	"errors"
)

// NewFirewall returns errors.ErrUnsupported: nftables exists only on Linux.
func NewFirewall(opts FirewallOptions) (Firewall, error) {
	return nil, errors.ErrUnsupported
}

// CleanupFirewall returns errors.ErrUnsupported: nftables exists only on
// Linux.
func CleanupFirewall(ctx context.Context, opts FirewallOptions) error {
	return errors.ErrUnsupported
}
