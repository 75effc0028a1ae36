//go:build !purego

package aesgcm

import "testing"

// BenchmarkParts times the assembly's loops alone on a 16 KiB record:
// counter mode, GHASH on either path, and (AVX-512) the two stitched.
func BenchmarkParts(b *testing.B) {
	if !hasAsm {
		b.Skip("no VAES on this CPU")
	}
	g := newOwn(make([]byte, 16), hasAVX512).(*gcmAsm)
	buf := make([]byte, 16384)
	var ctr [32]byte
	var acc [16]byte
	b.Run("ctr", func(b *testing.B) {
		b.SetBytes(16384)
		for b.Loop() {
			ctrBlocks(&g.rk[0], g.rounds, &ctr, &buf[0], &buf[0], 1024)
		}
	})
	for _, wide := range []bool{false, true} {
		name := "ghash-avx2"
		if wide {
			if !hasAVX512 {
				continue
			}
			name = "ghash-avx512"
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(16384)
			for b.Loop() {
				ghashBlocks(&g.htab, &acc, &buf[0], 1024, wide)
			}
		})
	}
	if !hasAVX512 {
		return
	}
	b.Run("stitched", func(b *testing.B) {
		b.SetBytes(16384)
		for b.Loop() {
			cryptHash(&g.rk[0], g.rounds, &g.htab, &acc, &ctr, &buf[0], &buf[0], &buf[0], 64)
		}
	})
}
