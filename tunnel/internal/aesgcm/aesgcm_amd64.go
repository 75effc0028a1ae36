//go:build !purego

package aesgcm

import (
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"unsafe"

	"golang.org/x/sys/cpu"
)

// useAsm: the assembly uses VEX-encoded 256-bit VAES and VPCLMULQDQ, and
// AVX2. x/sys/cpu reports VAES and VPCLMULQDQ only together with AVX-512,
// so CPUs with VAES but without AVX-512 use crypto/cipher.
var useAsm = cpu.X86.HasAVX2 && cpu.X86.HasAVX512VAES && cpu.X86.HasAVX512VPCLMULQDQ

// ctrBlocks encrypts nblocks 16-byte blocks of counter-mode keystream and
// XORs them from src into dst (which may be src). ctr holds two counter
// blocks: the 12-byte nonce, then the block's counter as a little-endian
// uint32 (the assembly byte-swaps it), for the first block and the next.
//
//go:noescape
func ctrBlocks(rk *byte, rounds int, ctr *[32]byte, dst, src *byte, nblocks int)

// ghashBlocks folds nblocks 16-byte blocks from src into the GHASH state
// acc (kept byte-reversed, as the assembly holds it), using the key powers
// in htab: H^16 first, H^1 last.
//
//go:noescape
func ghashBlocks(htab *[33][16]byte, acc *[16]byte, src *byte, nblocks int)

// gcmAsm is one key's AES-GCM: the expanded AES key and the GHASH key
// powers.
type gcmAsm struct {
	rk     [15 * 16]byte
	rounds int
	// htab: H^16 ... H^1, then each one's two halves XORed (for
	// Karatsuba multiplication).
	htab [33][16]byte // the last entry is padding: MUL loads 32 bytes from the last power
}

func newAccelerated(key []byte) cipher.AEAD {
	if !useAsm || (len(key) != 16 && len(key) != 32) {
		return nil
	}
	g := new(gcmAsm)
	g.rounds = expandKey(&g.rk, key)
	// H = E(K, 0^128): counter mode over a zero block with a zero nonce and
	// counter.
	var zero [32]byte
	var h [16]byte
	ctrBlocks(&g.rk[0], g.rounds, &zero, &h[0], &h[0], 1)
	g.initPowers(h)
	return g
}

// initPowers stores H^16 ... H^1 in the form the assembly multiplies with:
// byte-reversed and multiplied by x^-1 (a one-bit left shift with
// reduction), which cancels the one-bit offset of a carry-less product of
// bit-reflected operands.
func (g *gcmAsm) initPowers(h [16]byte) {
	hi := binary.BigEndian.Uint64(h[:8])
	lo := binary.BigEndian.Uint64(h[8:])
	carry := hi >> 63
	hi = hi<<1 | lo>>63
	lo <<= 1
	if carry != 0 {
		hi ^= 0xc200000000000000
		lo ^= 1
	}
	h1 := u128{lo, hi}
	p := h1
	for i := 15; i >= 0; i-- {
		binary.LittleEndian.PutUint64(g.htab[i][:8], p.lo)
		binary.LittleEndian.PutUint64(g.htab[i][8:], p.hi)
		binary.LittleEndian.PutUint64(g.htab[16+i][:8], p.lo^p.hi)
		binary.LittleEndian.PutUint64(g.htab[16+i][8:], p.lo^p.hi)
		p = gfMul(p, h1)
	}
}

func (g *gcmAsm) NonceSize() int { return nonceSize }
func (g *gcmAsm) Overhead() int  { return tagSize }

func (g *gcmAsm) Seal(dst, nonce, plaintext, additionalData []byte) []byte {
	if len(nonce) != nonceSize {
		panic("aesgcm: incorrect nonce length given to GCM")
	}
	if uint64(len(plaintext)) > (1<<32-2)*16 {
		panic("aesgcm: message too large for GCM")
	}
	ret, out := sliceForAppend(dst, len(plaintext)+tagSize)
	if inexactOverlap(out, plaintext) {
		panic("aesgcm: invalid buffer overlap of output and input")
	}
	if anyOverlap(out, additionalData) {
		panic("aesgcm: invalid buffer overlap of output and additional data")
	}
	ct := out[:len(plaintext)]
	g.counterXor(ct, plaintext, nonce)
	var tag [tagSize]byte
	g.tag(&tag, nonce, ct, additionalData)
	copy(out[len(plaintext):], tag[:])
	return ret
}

func (g *gcmAsm) Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error) {
	if len(nonce) != nonceSize {
		panic("aesgcm: incorrect nonce length given to GCM")
	}
	if len(ciphertext) < tagSize || uint64(len(ciphertext)) > (1<<32-2)*16+tagSize {
		return nil, errOpen
	}
	ct, tag := ciphertext[:len(ciphertext)-tagSize], ciphertext[len(ciphertext)-tagSize:]
	ret, out := sliceForAppend(dst, len(ct))
	if inexactOverlap(out, ciphertext) {
		panic("aesgcm: invalid buffer overlap of output and input")
	}
	if anyOverlap(out, additionalData) {
		panic("aesgcm: invalid buffer overlap of output and additional data")
	}
	// Authenticate first: nothing is decrypted unless the tag matches.
	var want [tagSize]byte
	g.tag(&want, nonce, ct, additionalData)
	if subtle.ConstantTimeCompare(want[:], tag) != 1 {
		return nil, errOpen
	}
	g.counterXor(out, ct, nonce)
	return ret, nil
}

// counterXor XORs src into dst with the keystream that starts at counter
// 2 (counter 1 masks the tag).
func (g *gcmAsm) counterXor(dst, src, nonce []byte) {
	var ctr [32]byte
	copy(ctr[:12], nonce)
	copy(ctr[16:28], nonce)
	setCounter(&ctr, 2)
	n := len(src) / 16
	if n > 0 {
		ctrBlocks(&g.rk[0], g.rounds, &ctr, &dst[0], &src[0], n)
	}
	if r := len(src) % 16; r > 0 {
		var buf [16]byte
		copy(buf[:], src[n*16:])
		setCounter(&ctr, 2+uint32(n))
		ctrBlocks(&g.rk[0], g.rounds, &ctr, &buf[0], &buf[0], 1)
		copy(dst[n*16:], buf[:r])
	}
}

func setCounter(ctr *[32]byte, c uint32) {
	binary.LittleEndian.PutUint32(ctr[12:16], c)
	binary.LittleEndian.PutUint32(ctr[28:32], c+1)
}

// tag computes GCM's tag over additionalData and the ciphertext ct.
func (g *gcmAsm) tag(out *[tagSize]byte, nonce, ct, additionalData []byte) {
	var acc [16]byte
	g.ghash(&acc, additionalData)
	full := len(ct) / 16
	if full > 0 {
		ghashBlocks(&g.htab, &acc, &ct[0], full)
	}
	// The ciphertext's last partial block, zero-padded, and the lengths
	// block go in one call.
	var last [32]byte
	nb := 1
	if copy(last[:16], ct[full*16:]) > 0 {
		nb = 2
	}
	lens := last[(nb-1)*16:]
	binary.BigEndian.PutUint64(lens[:8], uint64(len(additionalData))*8)
	binary.BigEndian.PutUint64(lens[8:16], uint64(len(ct))*8)
	ghashBlocks(&g.htab, &acc, &last[0], nb)

	// E(K, J0), J0 = nonce || 1.
	var ctr [32]byte
	copy(ctr[:12], nonce)
	setCounter(&ctr, 1)
	var mask [16]byte
	ctrBlocks(&g.rk[0], g.rounds, &ctr, &mask[0], &mask[0], 1)

	// The state is byte-reversed: its high 8 bytes are the tag's first 8.
	binary.BigEndian.PutUint64(out[:8], binary.LittleEndian.Uint64(acc[8:])^binary.BigEndian.Uint64(mask[:8]))
	binary.BigEndian.PutUint64(out[8:], binary.LittleEndian.Uint64(acc[:8])^binary.BigEndian.Uint64(mask[8:]))
}

// ghash folds b, zero-padded to whole blocks, into acc.
func (g *gcmAsm) ghash(acc *[16]byte, b []byte) {
	full := len(b) / 16
	if full > 0 {
		ghashBlocks(&g.htab, acc, &b[0], full)
	}
	if len(b)%16 != 0 {
		var buf [16]byte
		copy(buf[:], b[full*16:])
		ghashBlocks(&g.htab, acc, &buf[0], 1)
	}
}

const (
	nonceSize = 12
	tagSize   = 16
)

var errOpen = errors.New("cipher: message authentication failed")

// sliceForAppend extends in by n bytes, reallocating only when the
// capacity is short, and returns the whole slice and the n new bytes.
func sliceForAppend(in []byte, n int) (head, tail []byte) {
	if total := len(in) + n; cap(in) >= total {
		head = in[:total]
	} else {
		head = make([]byte, total)
		copy(head, in)
	}
	tail = head[len(in):]
	return
}

// anyOverlap reports whether x and y share memory.
func anyOverlap(x, y []byte) bool {
	return len(x) > 0 && len(y) > 0 &&
		uintptr(unsafe.Pointer(&x[0])) <= uintptr(unsafe.Pointer(&y[len(y)-1])) &&
		uintptr(unsafe.Pointer(&y[0])) <= uintptr(unsafe.Pointer(&x[len(x)-1]))
}

// inexactOverlap reports whether x and y share memory at different
// offsets, the one kind of aliasing an AEAD cannot work in place with.
func inexactOverlap(x, y []byte) bool {
	if len(x) == 0 || len(y) == 0 || &x[0] == &y[0] {
		return false
	}
	return anyOverlap(x, y)
}
