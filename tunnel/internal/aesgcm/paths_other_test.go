//go:build !amd64 || purego

package aesgcm

import "crypto/cipher"

// isWide: there is no own code here (Check fails, New refuses).
func isWide(cipher.AEAD) (wide, ok bool) { return false, false }
