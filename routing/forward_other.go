//go:build !linux

package routing

import "errors"

// EnableForwarding is only implemented on Linux.
func EnableForwarding(v6 bool) (restore func() error, err error) {
	return nil, errors.ErrUnsupported
}
