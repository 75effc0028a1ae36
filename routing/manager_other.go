//go:build !linux

package routing

import (
	"context"
	"errors"
	"log/slog"
)

// Options configures NewManager. On this system no Manager is available.
type Options struct {
	// Logger receives one record per change. Nil discards.
	Logger *slog.Logger
}

// NewManager returns errors.ErrUnsupported: only Linux is supported.
func NewManager(opts Options) (Manager, error) {
	return nil, errors.ErrUnsupported
}

// Cleanup returns errors.ErrUnsupported: only Linux is supported.
func Cleanup(ctx context.Context, ifname string) error {
	return errors.ErrUnsupported
}
