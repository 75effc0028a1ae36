// Package aesgcm is the project's own AES-GCM (the AEAD of the TLS 1.3
// suites TLS_AES_128_GCM_SHA256 and TLS_AES_256_GCM_SHA384) in amd64
// assembly, for the data phase's record layer.
//
// It is strictly opt-in. Go's crypto/cipher GCM is the project's default;
// the caller decides whether to use this package instead, and New never
// falls back to crypto/cipher on its own: where the own code may not run,
// New returns an error and the caller uses Go's AES-GCM.
//
// The assembly uses VAES and VPCLMULQDQ, working on several blocks per
// instruction with one GHASH reduction per 16 blocks; with AVX-512, counter
// mode and GHASH run in one pass over 256-byte chunks. Go's crypto/aes does
// not use these instructions (golang/go#42726) and on an AMD EPYC (Zen 4)
// reaches about 60% of this speed.
//
// Check decides whether the own code may run in this process. It requires
//   - amd64, built without the purego tag: there is no other assembly;
//   - a CPU with VAES, VPCLMULQDQ, AVX2 and AVX-512 F, VL and BW. Only the
//     one-pass AVX-512 path is ever selected, because that is the path CI
//     runs natively (an AMD EPYC Zen 4). The two-pass AVX2 path for CPUs
//     with VAES but without AVX-512 stays in the code and is tested, forced
//     on an AVX-512 CPU, but Check and New never select it;
//   - FIPS 140 mode off (GODEBUG=fips140=on or =only turns it on): this
//     code is outside Go's FIPS 140-3 module, so it must not replace it;
//   - a known-answer self-test that passed. It runs once per process, on
//     the first call of Check or New, on the path New returns: published
//     test vectors, then every branch of the one-pass path compared byte for
//     byte with crypto/cipher's GCM, and a tampered message that must not
//     open. A failure disables the own code for the rest of the process.
//
// The output is byte for byte that of crypto/cipher's GCM with a 12-byte
// nonce and a 16-byte tag; the tests (with Project Wycheproof's vectors)
// and the fuzz target compare the two. Open returns plaintext only when the
// tag matches; on a mismatch it wipes whatever it has decrypted. AES-192 is
// not supported: TLS 1.3 does not use it.
package aesgcm

import (
	"crypto/cipher"
	"crypto/fips140"
	"errors"
	"fmt"
	"sync"
)

// New returns this package's own AES-GCM (12-byte nonce, 16-byte tag) for
// a 16- or 32-byte key. It returns an error (wrapping the reason from
// Check) when the own implementation cannot be used in this process; it
// never silently returns crypto/cipher's GCM.
func New(key []byte) (cipher.AEAD, error) {
	if err := check(); err != nil {
		return nil, fmt.Errorf("aesgcm: New refuses: %w", err)
	}
	if len(key) != 16 && len(key) != 32 {
		return nil, fmt.Errorf("aesgcm: invalid key size %d: want 16 or 32 bytes (no AES-192)", len(key))
	}
	return newOwn(key, !forceAVX2), nil
}

// Check reports whether the own implementation may run in this process,
// and why not: see the package documentation. The first call runs the
// self-test; later calls return its result.
func Check() error {
	if err := check(); err != nil {
		return fmt.Errorf("aesgcm: %w", err)
	}
	return nil
}

// check is Check without the package's prefix, for New to wrap.
func check() error {
	// FIPS first: it is a policy decision that holds on every platform.
	if fipsEnabled() {
		return errFIPS
	}
	if err := platformErr(); err != nil {
		return err
	}
	return selfTestResult()
}

// The only sizes TLS 1.3 uses, and the only ones the own code takes.
const (
	nonceSize = 12
	tagSize   = 16
)

var errFIPS = errors.New("FIPS 140 mode is on (GODEBUG fips140=on or only): the own AES-GCM is outside Go's FIPS 140-3 module")

// Test hooks. Production code never writes them.
var (
	// fipsEnabled is crypto/fips140.Enabled, which cannot change after
	// the process starts; the tests swap it to reach Check's FIPS branch.
	fipsEnabled = fips140.Enabled

	// forceAVX2 makes New return the two-pass AVX2 path, so that the
	// tests run it on an AVX-512 CPU. The self-test ignores it.
	forceAVX2 bool

	// selfTestResult runs the self-test once per process. The tests
	// replace it with a fresh sync.OnceValue to run it again.
	selfTestResult = sync.OnceValue(selfTest)
)
