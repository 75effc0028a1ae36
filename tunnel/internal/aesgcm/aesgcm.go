// Package aesgcm provides AES-GCM (the AEAD of the TLS 1.3 suites
// TLS_AES_128_GCM_SHA256 and TLS_AES_256_GCM_SHA384) for the data phase's
// record layer.
//
// On amd64 CPUs with VAES and VPCLMULQDQ it uses its own assembly, which
// works on several blocks per instruction with one GHASH reduction per 16
// blocks. With AVX-512 as well, counter mode and GHASH run in one pass
// over 256-byte chunks; with AVX2 only, in two passes. Go's crypto/aes
// does not use these instructions (golang/go#42726) and on an AMD EPYC
// (Zen 4) reaches about 60% of this speed. Everywhere else, and for
// AES-192, New returns crypto/cipher's GCM.
//
// The output is byte for byte that of crypto/cipher's GCM with a 12-byte
// nonce and a 16-byte tag; the tests and the fuzz target compare the two.
// Open returns plaintext only when the tag matches; on a mismatch it
// wipes whatever it has decrypted.
package aesgcm

import (
	"crypto/aes"
	"crypto/cipher"
)

// New returns an AES-GCM AEAD with a 12-byte nonce and a 16-byte tag for a
// 16-, 24- or 32-byte key.
func New(key []byte) (cipher.AEAD, error) {
	if a := newAccelerated(key); a != nil {
		return a, nil
	}
	return newStdlib(key)
}

func newStdlib(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// Accelerated reports whether New returns this package's own
// implementation for AES-128 and AES-256 keys on this machine.
func Accelerated() bool { return useAsm }
