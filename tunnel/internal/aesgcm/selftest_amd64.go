//go:build !purego

package aesgcm

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
)

var errSelfTest = errors.New("known-answer self-test failed")

// corruptSelfTest is a test hook: it makes the self-test flip a bit of the
// own code's output, so that the tests see a self-test failure and its
// effect.
var corruptSelfTest bool

// katVectors are the test cases with a 96-bit IV from McGrew and Viega,
// "The Galois/Counter Mode of Operation (GCM)" (revised 2005), appendix B:
// cases 1 to 4 with AES-128 and 13 to 16 with AES-256, each pair without
// and with additional data. They are checked against these constants, not
// against crypto/cipher, so that a fault both share would still show.
var katVectors = []struct {
	name                      string
	key, iv, aad, pt, ct, tag string // hex
}{
	{
		name: "McGrew-Viega test case 1 (AES-128, empty)",
		key:  "00000000000000000000000000000000",
		iv:   "000000000000000000000000",
		tag:  "58e2fccefa7e3061367f1d57a4e7455a",
	},
	{
		name: "McGrew-Viega test case 2 (AES-128, one block)",
		key:  "00000000000000000000000000000000",
		iv:   "000000000000000000000000",
		pt:   "00000000000000000000000000000000",
		ct:   "0388dace60b6a392f328c2b971b2fe78",
		tag:  "ab6e47d42cec13bdf53a67b21257bddf",
	},
	{
		name: "McGrew-Viega test case 3 (AES-128, 64 bytes)",
		key:  "feffe9928665731c6d6a8f9467308308",
		iv:   "cafebabefacedbaddecaf888",
		pt:   kat64,
		ct:   "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
		tag:  "4d5c2af327cd64a62cf35abd2ba6fab4",
	},
	{
		name: "McGrew-Viega test case 4 (AES-128, 60 bytes, additional data)",
		key:  "feffe9928665731c6d6a8f9467308308",
		iv:   "cafebabefacedbaddecaf888",
		aad:  katAAD,
		pt:   kat64[:120],
		ct:   "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
		tag:  "5bc94fbc3221a5db94fae95ae7121a47",
	},
	{
		name: "McGrew-Viega test case 13 (AES-256, empty)",
		key:  "0000000000000000000000000000000000000000000000000000000000000000",
		iv:   "000000000000000000000000",
		tag:  "530f8afbc74536b9a963b4f1c4cb738b",
	},
	{
		name: "McGrew-Viega test case 14 (AES-256, one block)",
		key:  "0000000000000000000000000000000000000000000000000000000000000000",
		iv:   "000000000000000000000000",
		pt:   "00000000000000000000000000000000",
		ct:   "cea7403d4d606b6e074ec5d3baf39d18",
		tag:  "d0d1c8a799996bf0265b98b5d48ab919",
	},
	{
		name: "McGrew-Viega test case 15 (AES-256, 64 bytes)",
		key:  "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
		iv:   "cafebabefacedbaddecaf888",
		pt:   kat64,
		ct:   "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
		tag:  "b094dac5d93471bdec1a502270e3cc6c",
	},
	{
		name: "McGrew-Viega test case 16 (AES-256, 60 bytes, additional data)",
		key:  "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
		iv:   "cafebabefacedbaddecaf888",
		aad:  katAAD,
		pt:   kat64[:120],
		ct:   "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
		tag:  "76fc6ece0f4e1768cddf8853bb2d551b",
	},
}

// The plaintext and additional data the McGrew-Viega cases share.
const (
	kat64  = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
	katAAD = "feedfacedeadbeeffeedfacedeadbeefabaddad2"
)

// sweepLengths reach every branch of the one-pass path: no data, partial
// and whole single blocks, less than one 256-byte chunk, one chunk (Open
// stitches it, Seal does not), two chunks (Seal stitches too), and a
// partial block after many chunks, up to a full TLS record and more.
var sweepLengths = []int{0, 1, 15, 16, 17, 255, 256, 257, 511, 512, 513, 4096 + 7, 16384 + 17}

// sweepAADLengths: none, a TLS 1.3 record header, and more than two
// blocks with a partial one.
var sweepAADLengths = []int{0, 5, 33}

// selfTest runs the known-answer vectors and the comparison with
// crypto/cipher on the path New returns (the one-pass AVX-512 path). Check
// has made sure that the CPU can run it and that FIPS mode is off (in
// GODEBUG=fips140=only, crypto/cipher.NewGCM would refuse).
func selfTest() (err error) {
	// A panic here must not take the process down: it disables the own
	// code like any other failure, and the caller uses Go's AES-GCM.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: panic: %v", errSelfTest, r)
		}
	}()
	for _, v := range katVectors {
		if err := selfTestKAT(v.key, v.iv, v.aad, v.pt, v.ct, v.tag); err != nil {
			return fmt.Errorf("%w: %s: %v", errSelfTest, v.name, err)
		}
	}
	for _, keyLen := range []int{16, 32} {
		if err := selfTestSweep(keyLen); err != nil {
			return fmt.Errorf("%w: AES-%d against crypto/cipher: %v", errSelfTest, keyLen*8, err)
		}
	}
	return nil
}

func selfTestKAT(keyHex, ivHex, aadHex, ptHex, ctHex, tagHex string) error {
	key, iv, aad := unhex(keyHex), unhex(ivHex), unhex(aadHex)
	pt, want := unhex(ptHex), unhex(ctHex+tagHex)
	g := newOwn(key, true)
	got := selfTestSeal(g, nil, iv, pt, aad)
	if !bytes.Equal(got, want) {
		return errors.New("sealing gives other bytes than the published ciphertext and tag")
	}
	back, err := g.Open(nil, iv, want, aad)
	if err != nil || !bytes.Equal(back, pt) {
		return fmt.Errorf("opening the published ciphertext fails or gives other bytes (%v)", err)
	}
	return selfTestTampered(g, iv, want, aad)
}

// selfTestSweep seals and opens sweepLengths with each of sweepAADLengths
// on deterministic inputs, separately and in place (as the record layer
// does), and compares every byte with crypto/cipher's GCM.
func selfTestSweep(keyLen int) error {
	// Deterministic, so that a failure is the same in every process; the
	// seed differs per key size only to vary the inputs.
	rng := rand.NewChaCha8([32]byte{'a', 'e', 's', 'g', 'c', 'm', byte(keyLen)})
	key := make([]byte, keyLen)
	rng.Read(key)
	b, err := aes.NewCipher(key)
	if err != nil {
		return err
	}
	std, err := cipher.NewGCM(b)
	if err != nil {
		return err
	}
	g := newOwn(key, true)
	nonce := make([]byte, nonceSize)
	for _, adLen := range sweepAADLengths {
		ad := make([]byte, adLen)
		rng.Read(ad)
		for _, n := range sweepLengths {
			rng.Read(nonce)
			pt := make([]byte, n)
			rng.Read(pt)
			want := std.Seal(nil, nonce, pt, ad)
			if got := selfTestSeal(g, nil, nonce, pt, ad); !bytes.Equal(got, want) {
				return fmt.Errorf("%d bytes, %d of additional data: sealing differs", n, adLen)
			}
			buf := make([]byte, n+tagSize)
			copy(buf, pt)
			if got := selfTestSeal(g, buf[:0], nonce, buf[:n], ad); !bytes.Equal(got, want) {
				return fmt.Errorf("%d bytes, %d of additional data: sealing in place differs", n, adLen)
			}
			if got, err := g.Open(nil, nonce, want, ad); err != nil || !bytes.Equal(got, pt) {
				return fmt.Errorf("%d bytes, %d of additional data: opening fails or differs (%v)", n, adLen, err)
			}
			copy(buf, want)
			if got, err := g.Open(buf[:0], nonce, buf, ad); err != nil || !bytes.Equal(got, pt) {
				return fmt.Errorf("%d bytes, %d of additional data: opening in place fails or differs (%v)", n, adLen, err)
			}
			if err := selfTestTampered(g, nonce, want, ad); err != nil {
				return fmt.Errorf("%d bytes, %d of additional data: %v", n, adLen, err)
			}
		}
	}
	return nil
}

// selfTestTampered checks that sealed with one bit of its tag flipped, or
// of its first ciphertext byte, does not open, returns no plaintext and
// leaves none in the destination buffer.
func selfTestTampered(g cipher.AEAD, nonce, sealed, ad []byte) error {
	positions := []int{len(sealed) - 1}
	if len(sealed) > tagSize {
		positions = append(positions, 0)
	}
	for _, i := range positions {
		bad := bytes.Clone(sealed)
		bad[i] ^= 0x01
		dst := make([]byte, 0, len(bad))
		out, err := g.Open(dst, nonce, bad, ad)
		if err == nil || out != nil {
			return fmt.Errorf("a message with byte %d of %d changed opened", i, len(sealed))
		}
		for _, c := range dst[:cap(dst)] {
			if c != 0 {
				return fmt.Errorf("a failed opening (byte %d of %d changed) left data in its destination", i, len(sealed))
			}
		}
	}
	return nil
}

// selfTestSeal is g.Seal, with the output corrupted when a test asks for
// it (corruptSelfTest), to see the self-test fail.
func selfTestSeal(g cipher.AEAD, dst, nonce, pt, ad []byte) []byte {
	out := g.Seal(dst, nonce, pt, ad)
	if corruptSelfTest {
		out[len(out)-1] ^= 0x80
	}
	return out
}

// unhex decodes the constants above; they are valid hex, so an error is a
// bug in this file and panics (recovered by selfTest).
func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic("aesgcm: bad hex in a self-test vector: " + err.Error())
	}
	return b
}
