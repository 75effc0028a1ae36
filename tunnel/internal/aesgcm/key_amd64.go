//go:build !purego

package aesgcm

import (
	"crypto/subtle"
	"encoding/binary"
	"math/bits"
)

// sbox is AES's S-box, computed once from its definition (FIPS 197
// section 5.1.1): the multiplicative inverse in GF(2^8), then the affine
// map.
var sbox = func() (s [256]byte) {
	// p walks GF(2^8)^* by multiplying by 3; q walks the inverses by
	// dividing by 3.
	p, q := byte(1), byte(1)
	for {
		// p *= 3
		hi := p & 0x80
		p ^= p << 1
		if hi != 0 {
			p ^= 0x1b
		}
		// q /= 3
		q ^= q << 1
		q ^= q << 2
		q ^= q << 4
		if q&0x80 != 0 {
			q ^= 0x09
		}
		x := q ^ bits.RotateLeft8(q, 1) ^ bits.RotateLeft8(q, 2) ^ bits.RotateLeft8(q, 3) ^ bits.RotateLeft8(q, 4)
		s[p] = x ^ 0x63
		if p == 1 {
			break
		}
	}
	s[0] = 0x63
	return
}()

// subByte is sbox[x] read without a key-dependent memory address: it
// reads all 256 entries and keeps the one at x, so the key schedule leaks
// nothing through the cache. It costs about 10 µs per key.
func subByte(x byte) byte {
	var r byte
	for i := range 256 {
		r |= sbox[i] & byte(subtle.ConstantTimeByteEq(byte(i), x)*0xff)
	}
	return r
}

// expandKey writes the AES key schedule (FIPS 197 section 5.2) of a 16- or
// 32-byte key into rk, round key after round key in the byte order AESENC
// takes, and returns the number of rounds.
func expandKey(rk *[15 * 16]byte, key []byte) int {
	nk := len(key) / 4
	rounds := nk + 6
	var w [60]uint32
	for i := range nk {
		w[i] = binary.BigEndian.Uint32(key[4*i:])
	}
	subWord := func(x uint32) uint32 {
		return uint32(subByte(byte(x>>24)))<<24 | uint32(subByte(byte(x>>16)))<<16 | uint32(subByte(byte(x>>8)))<<8 | uint32(subByte(byte(x)))
	}
	rcon := uint32(1)
	for i := nk; i < 4*(rounds+1); i++ {
		t := w[i-1]
		switch {
		case i%nk == 0:
			t = subWord(bits.RotateLeft32(t, 8)) ^ rcon<<24
			rcon <<= 1
			if rcon&0x100 != 0 {
				rcon ^= 0x11b
			}
		case nk > 6 && i%nk == 4:
			t = subWord(t)
		}
		w[i] = w[i-nk] ^ t
	}
	for i := range 4 * (rounds + 1) {
		binary.BigEndian.PutUint32(rk[4*i:], w[i])
	}
	return rounds
}

// u128 is a GHASH field element as the assembly holds it: byte-reversed,
// as two little-endian 64-bit halves.
type u128 struct{ lo, hi uint64 }

// clmul64 is the carry-less product of a and b, without a branch on
// either: the operands are GHASH key powers.
func clmul64(a, b uint64) (hi, lo uint64) {
	for i := range 64 {
		mask := -(b >> i & 1)
		lo ^= a << i & mask
		// For i = 0 the shift is by 64, which is 0 in Go.
		hi ^= a >> (64 - i) & mask
	}
	return
}

// gfMul is the assembly's multiplication, in Go: the 256-bit carry-less
// product of a and b, reduced by folding its low half in twice with the
// bit-reflected GHASH polynomial. It is used only to compute key powers.
func gfMul(a, b u128) u128 {
	llh, lll := clmul64(a.lo, b.lo)
	hhh, hhl := clmul64(a.hi, b.hi)
	m1h, m1l := clmul64(a.lo, b.hi)
	m2h, m2l := clmul64(a.hi, b.lo)
	low := u128{lo: lll, hi: llh ^ m1l ^ m2l}
	high := u128{lo: hhl ^ m1h ^ m2h, hi: hhh}
	for range 2 {
		th, tl := clmul64(low.lo, 0xc200000000000000)
		low = u128{lo: low.hi ^ tl, hi: low.lo ^ th}
	}
	return u128{lo: low.lo ^ high.lo, hi: low.hi ^ high.hi}
}
