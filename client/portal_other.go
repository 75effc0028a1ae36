//go:build !linux

package client

import (
	"context"
	"errors"
)

// probeFunc returns a probe that fails with errors.ErrUnsupported: it
// marks and binds sockets the Linux way.
func probeFunc(url string) func(ctx context.Context, ifname string) (probeResult, error) {
	return func(ctx context.Context, ifname string) (probeResult, error) {
		return probeResult{}, errors.ErrUnsupported
	}
}
