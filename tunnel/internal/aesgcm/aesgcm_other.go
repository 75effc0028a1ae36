//go:build !amd64 || purego

package aesgcm

import (
	"crypto/cipher"
	"errors"
)

// platformErr: the own AES-GCM is amd64 assembly, which purego builds
// leave out.
func platformErr() error {
	return errors.New("the own AES-GCM is amd64 assembly: not supported on this platform or with -tags purego")
}

// newOwn is never reached here: Check fails, so New refuses before it.
func newOwn([]byte, bool) cipher.AEAD {
	panic("aesgcm: no own AES-GCM on this platform")
}

// selfTest is never reached here either: Check fails before it.
func selfTest() error { return platformErr() }
