//go:build !linux

package routing

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
)

// SetDNS is only implemented on Linux.
func SetDNS(ctx context.Context, ifname string, servers []netip.Addr, log *slog.Logger) (restore func() error, err error) {
	if len(servers) == 0 {
		return func() error { return nil }, nil
	}
	return nil, errors.ErrUnsupported
}
