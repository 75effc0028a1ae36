//go:build !linux

package client

import (
	"context"
	"errors"
	"net/netip"
)

// probeFunc returns a probe that fails with errors.ErrUnsupported: it
// marks and binds sockets the Linux way.
func probeFunc(url string, tunnelDNS func() []netip.Addr) func(ctx context.Context, ifname string) (probeResult, error) {
	return func(ctx context.Context, ifname string) (probeResult, error) {
		return probeResult{}, errors.ErrUnsupported
	}
}
