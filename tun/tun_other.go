//go:build !linux

package tun

import "errors"

// Open is only implemented on Linux.
func Open(name string, mtu int, opts Options) (Device, error) {
	return nil, errors.ErrUnsupported
}
