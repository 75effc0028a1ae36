//go:build !purego

package aesgcm

import "crypto/cipher"

// isWide reports whether g is the own code on the one-pass AVX-512 path;
// ok is false if g is not the own code.
func isWide(g cipher.AEAD) (wide, ok bool) {
	a, ok := g.(*gcmAsm)
	return ok && a.wide, ok
}
