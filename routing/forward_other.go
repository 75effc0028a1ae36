//go:build !linux

package routing

import (
	"errors"
	"log/slog"
)

// EnableForwarding is only implemented on Linux.
func EnableForwarding(instance string, v6 bool, log *slog.Logger) (restore func() error, err error) {
	return nil, errors.ErrUnsupported
}
