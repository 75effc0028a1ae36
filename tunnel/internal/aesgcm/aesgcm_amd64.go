//go:build !purego

package aesgcm

import (
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unsafe"

	"golang.org/x/sys/cpu"
)

// The assembly needs VAES and VPCLMULQDQ with AVX2 (hasAsm): Intel from
// Ice Lake and Alder Lake on, AMD from Zen 3 on. With AVX-512 (F, VL, BW)
// as well (hasAVX512; AMD Zen 4 and later, Intel server and Ice Lake
// clients), it stitches counter mode and GHASH into one pass and runs
// GHASH on 512-bit registers; without, it makes two passes on 256-bit
// registers. Check admits only CPUs with AVX-512 (see the package
// documentation); the AVX2 path runs in the tests only.
var (
	hasAsm    = cpu.X86.HasAVX2 && cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ && hasVAES()
	hasAVX512 = hasAsm && cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL && cpu.X86.HasAVX512BW
)

// platformErr reports why this CPU may not run the own code, naming each
// missing feature so that the caller's log says what the machine lacks.
func platformErr() error {
	if hasAVX512 {
		return nil
	}
	var missing []string
	for _, f := range []struct {
		name string
		has  bool
	}{
		{"AES", cpu.X86.HasAES},
		{"PCLMULQDQ", cpu.X86.HasPCLMULQDQ},
		{"AVX2", cpu.X86.HasAVX2},
		{"VAES/VPCLMULQDQ", hasVAES()},
		{"AVX-512F", cpu.X86.HasAVX512F},
		{"AVX-512VL", cpu.X86.HasAVX512VL},
		{"AVX-512BW", cpu.X86.HasAVX512BW},
	} {
		if !f.has {
			missing = append(missing, f.name)
		}
	}
	return fmt.Errorf("the CPU (or the OS, for AVX state) lacks %s; the own AES-GCM runs only on the one-pass AVX-512 path", strings.Join(missing, ", "))
}

// hasVAES reports whether CPUID leaf 7 lists VAES and VPCLMULQDQ.
// (x/sys/cpu reports them only together with AVX-512.)
func hasVAES() bool {
	if maxLeaf, _, _, _ := cpuid(0, 0); maxLeaf < 7 {
		return false
	}
	_, _, ecx, _ := cpuid(7, 0)
	const vaes, vpclmulqdq = 1 << 9, 1 << 10
	return ecx&vaes != 0 && ecx&vpclmulqdq != 0
}

//go:noescape
func cpuid(leaf, subleaf uint32) (eax, ebx, ecx, edx uint32)

// ctrBlocks encrypts nblocks 16-byte blocks of counter-mode keystream and
// XORs them from src into dst (which may be src). ctr holds two counter
// blocks: the 12-byte nonce, then the block's counter as a little-endian
// uint32 (the assembly byte-swaps it), for the first block and the next.
//
//go:noescape
func ctrBlocks(rk *byte, rounds int, ctr *[32]byte, dst, src *byte, nblocks int)

// ghashBlocks folds nblocks 16-byte blocks from src into the GHASH state
// acc (kept byte-reversed, as the assembly holds it), using the key powers
// in htab: H^16 first, H^1 last. wide allows AVX-512.
//
//go:noescape
func ghashBlocks(htab *[33][16]byte, acc *[16]byte, src *byte, nblocks int, wide bool)

// cryptHash is counter mode and GHASH in one pass over nchunks chunks of
// 256 bytes: it XORs the keystream from src into dst and, meanwhile,
// folds the 256 bytes at hsrc into acc, each pointer advancing 256 bytes
// per chunk. Open passes hsrc = src; Seal passes hsrc = dst - 256, hashing
// each chunk of ciphertext while it encrypts the next.
//
//go:noescape
func cryptHash(rk *byte, rounds int, htab *[33][16]byte, acc *[16]byte, ctr *[32]byte, dst, src, hsrc *byte, nchunks int)

// gcmAsm is one key's AES-GCM: the expanded AES key, the GHASH key
// powers and the path.
type gcmAsm struct {
	rk     [15 * 16]byte
	rounds int
	// htab: H^16 ... H^1, then each one's two halves XORed (for
	// Karatsuba multiplication).
	htab [33][16]byte // the last entry is padding: MUL loads 32 bytes from the last power
	// wide selects the one-pass AVX-512 path; without it, the two-pass
	// AVX2 path. It is per key, not global, so that the self-test always
	// checks the path New returns, whatever path a test forces.
	wide bool
}

// newOwn returns the own AES-GCM for a 16- or 32-byte key on the AVX-512
// path (wide) or the AVX2 path. The caller has checked the key size and
// that the CPU can run the path.
func newOwn(key []byte, wide bool) cipher.AEAD {
	g := &gcmAsm{wide: wide}
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
	// Without a branch on H's top bit: mask is all ones when it is set.
	mask := -(hi >> 63)
	hi = hi<<1 | lo>>63
	lo <<= 1
	hi ^= 0xc200000000000000 & mask
	lo ^= 1 & mask
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
	var acc [16]byte
	g.ghash(&acc, additionalData)
	// With AVX-512, from two chunks of 256 bytes on, encrypt the first
	// alone, then each next one while hashing the one before; the rest
	// follows block-wise. Without, encrypt everything, then hash it.
	done, hashed := 0, 0
	if chunks := len(plaintext) / 256; g.wide && chunks >= 2 {
		g.counterXor(ct[:256], plaintext[:256], nonce, 2)
		ctr := counterBlocks(nonce, 2+16)
		cryptHash(&g.rk[0], g.rounds, &g.htab, &acc, &ctr, &ct[256], &plaintext[256], &ct[0], chunks-1)
		done, hashed = chunks*256, (chunks-1)*256
	}
	g.counterXor(ct[done:], plaintext[done:], nonce, 2+uint32(done/16))
	var tag [tagSize]byte
	g.finish(&tag, &acc, nonce, ct[hashed:], len(additionalData), len(ct))
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
	var acc [16]byte
	g.ghash(&acc, additionalData)
	// With AVX-512, whole 256-byte chunks are hashed and decrypted in one
	// pass; the rest (without AVX-512, everything) is decrypted only once
	// the tag matches. If it does not, the plaintext already written is
	// wiped.
	done := 0
	if chunks := len(ct) / 256; g.wide && chunks >= 1 {
		ctr := counterBlocks(nonce, 2)
		cryptHash(&g.rk[0], g.rounds, &g.htab, &acc, &ctr, &out[0], &ct[0], &ct[0], chunks)
		done = chunks * 256
	}
	var want [tagSize]byte
	g.finish(&want, &acc, nonce, ct[done:], len(additionalData), len(ct))
	if subtle.ConstantTimeCompare(want[:], tag) != 1 {
		clear(out[:done])
		return nil, errOpen
	}
	g.counterXor(out[done:], ct[done:], nonce, 2+uint32(done/16))
	return ret, nil
}

// counterXor XORs src into dst with the keystream from counter c on.
// The message starts at counter 2; counter 1 masks the tag.
func (g *gcmAsm) counterXor(dst, src, nonce []byte, c uint32) {
	ctr := counterBlocks(nonce, c)
	n := len(src) / 16
	if n > 0 {
		ctrBlocks(&g.rk[0], g.rounds, &ctr, &dst[0], &src[0], n)
	}
	if r := len(src) % 16; r > 0 {
		var buf [16]byte
		copy(buf[:], src[n*16:])
		setCounter(&ctr, c+uint32(n))
		ctrBlocks(&g.rk[0], g.rounds, &ctr, &buf[0], &buf[0], 1)
		copy(dst[n*16:], buf[:r])
	}
}

// counterBlocks returns the assembly's two counter blocks for counters c
// and c+1.
func counterBlocks(nonce []byte, c uint32) (ctr [32]byte) {
	copy(ctr[:12], nonce)
	copy(ctr[16:28], nonce)
	setCounter(&ctr, c)
	return
}

func setCounter(ctr *[32]byte, c uint32) {
	binary.LittleEndian.PutUint32(ctr[12:16], c)
	binary.LittleEndian.PutUint32(ctr[28:32], c+1)
}

// finish folds the ciphertext not yet hashed (rest, the end of a
// ctLen-byte ciphertext) and the lengths block into acc and computes the
// tag.
func (g *gcmAsm) finish(out *[tagSize]byte, acc *[16]byte, nonce, rest []byte, adLen, ctLen int) {
	full := len(rest) / 16
	if full > 0 {
		ghashBlocks(&g.htab, acc, &rest[0], full, g.wide)
	}
	// The ciphertext's last partial block, zero-padded, and the lengths
	// block go in one call.
	var last [32]byte
	nb := 1
	if copy(last[:16], rest[full*16:]) > 0 {
		nb = 2
	}
	lens := last[(nb-1)*16:]
	binary.BigEndian.PutUint64(lens[:8], uint64(adLen)*8)
	binary.BigEndian.PutUint64(lens[8:16], uint64(ctLen)*8)
	ghashBlocks(&g.htab, acc, &last[0], nb, g.wide)

	// E(K, J0), J0 = nonce || 1.
	ctr := counterBlocks(nonce, 1)
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
		ghashBlocks(&g.htab, acc, &b[0], full, g.wide)
	}
	if len(b)%16 != 0 {
		var buf [16]byte
		copy(buf[:], b[full*16:])
		ghashBlocks(&g.htab, acc, &buf[0], 1, g.wide)
	}
}

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
