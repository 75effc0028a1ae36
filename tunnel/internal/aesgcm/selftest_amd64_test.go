//go:build !purego

package aesgcm

import (
	"crypto/cipher"
	"errors"
	"sync"
	"testing"
)

// withSelfTest runs f with a fresh self-test (as if in a new process),
// with corruptSelfTest set to corrupt, and runs it afresh again for the
// tests that follow.
func withSelfTest(t *testing.T, corrupt bool, f func()) {
	t.Helper()
	if err := platformErr(); err != nil {
		t.Skipf("the self-test runs only where the own code can: %v", err)
	}
	if fipsEnabled() {
		t.Skip("FIPS 140 mode is on: Check fails before the self-test")
	}
	defer func() {
		corruptSelfTest = false
		selfTestResult = sync.OnceValue(selfTest)
	}()
	corruptSelfTest = corrupt
	selfTestResult = sync.OnceValue(selfTest)
	f()
}

// TestSelfTestFailure: when the own code's output disagrees with the
// known answers, Check fails, New refuses, and both stay so for the rest
// of the process, even once the output would be right again.
func TestSelfTestFailure(t *testing.T) {
	withSelfTest(t, true, func() {
		err := Check()
		if !errors.Is(err, errSelfTest) {
			t.Fatalf("Check with a corrupted self-test: %v; want %v", err, errSelfTest)
		}
		t.Logf("Check: %v", err)
		corruptSelfTest = false
		for range 2 {
			if err := Check(); !errors.Is(err, errSelfTest) {
				t.Fatalf("Check after a failed self-test: %v; want it to fail still", err)
			}
			for _, n := range []int{16, 32} {
				g, err := New(make([]byte, n))
				if g != nil || !errors.Is(err, errSelfTest) {
					t.Fatalf("New with a %d-byte key after a failed self-test: %T, %v", n, g, err)
				}
			}
		}
	})
	// And a fresh self-test passes again (the hook is off).
	withSelfTest(t, false, func() {
		if err := Check(); err != nil {
			t.Fatalf("Check with a fresh self-test: %v", err)
		}
	})
}

// TestSelfTestParts: each part of the self-test catches a wrong Seal on
// its own, and the tamper check catches an Open that accepts a forgery or
// leaves plaintext behind.
func TestSelfTestParts(t *testing.T) {
	if err := platformErr(); err != nil {
		t.Skipf("the self-test runs only where the own code can: %v", err)
	}
	defer func() { corruptSelfTest = false }()
	for _, corrupt := range []bool{false, true} {
		corruptSelfTest = corrupt
		for _, v := range katVectors {
			if err := selfTestKAT(v.key, v.iv, v.aad, v.pt, v.ct, v.tag); (err != nil) != corrupt {
				t.Errorf("%s, corrupted %v: %v", v.name, corrupt, err)
			}
		}
		for _, keyLen := range []int{16, 32} {
			if err := selfTestSweep(keyLen); (err != nil) != corrupt {
				t.Errorf("sweep AES-%d, corrupted %v: %v", keyLen*8, corrupt, err)
			}
		}
	}
	corruptSelfTest = false

	key := make([]byte, 16)
	sealed := stdGCM(t, key).Seal(nil, make([]byte, 12), []byte("some plaintext"), nil)
	if err := selfTestTampered(acceptingAEAD{stdGCM(t, key), false}, make([]byte, 12), sealed, nil); err == nil {
		t.Error("the tamper check missed an Open that accepts anything")
	}
	if err := selfTestTampered(acceptingAEAD{stdGCM(t, key), true}, make([]byte, 12), sealed, nil); err == nil {
		t.Error("the tamper check missed an Open that leaves data in its destination")
	}
	if err := selfTestTampered(stdGCM(t, key), make([]byte, 12), sealed, nil); err != nil {
		t.Errorf("the tamper check rejects crypto/cipher's GCM: %v", err)
	}
}

// acceptingAEAD is a broken AEAD for TestSelfTestParts: its Open fails
// but writes into dst (leak), or accepts every message (!leak).
type acceptingAEAD struct {
	cipher.AEAD
	leak bool
}

func (a acceptingAEAD) Open(dst, nonce, ciphertext, ad []byte) ([]byte, error) {
	out := append(dst, ciphertext[:len(ciphertext)-16]...)
	if a.leak {
		return nil, errors.New("rejected, but wrote into dst")
	}
	return out, nil
}
