//go:build !purego

#include "textflag.h"

// Byte reversal of each 128-bit lane (GHASH works on byte-reversed blocks).
DATA bswapMask<>+0x00(SB)/8, $0x08090a0b0c0d0e0f
DATA bswapMask<>+0x08(SB)/8, $0x0001020304050607
DATA bswapMask<>+0x10(SB)/8, $0x08090a0b0c0d0e0f
DATA bswapMask<>+0x18(SB)/8, $0x0001020304050607
GLOBL bswapMask<>(SB), RODATA|NOPTR, $32

// Keeps the nonce's 12 bytes and byte-swaps the little-endian counter in
// the last 4, giving a GCM counter block.
DATA ctrMask<>+0x00(SB)/8, $0x0706050403020100
DATA ctrMask<>+0x08(SB)/8, $0x0c0d0e0f0b0a0908
DATA ctrMask<>+0x10(SB)/8, $0x0706050403020100
DATA ctrMask<>+0x18(SB)/8, $0x0c0d0e0f0b0a0908
GLOBL ctrMask<>(SB), RODATA|NOPTR, $32

// Adds 2 to the counter of each lane.
DATA inc2<>+0x00(SB)/8, $0
DATA inc2<>+0x08(SB)/8, $0x0000000200000000
DATA inc2<>+0x10(SB)/8, $0
DATA inc2<>+0x18(SB)/8, $0x0000000200000000
GLOBL inc2<>(SB), RODATA|NOPTR, $32

// The bit-reflected GHASH polynomial's reduction constant (high half used).
DATA ghashPoly<>+0x00(SB)/8, $1
DATA ghashPoly<>+0x08(SB)/8, $0xc200000000000000
GLOBL ghashPoly<>(SB), RODATA|NOPTR, $16

#define AESROUND8(k) \
	VAESENC k, Y0, Y0; VAESENC k, Y1, Y1; VAESENC k, Y2, Y2; VAESENC k, Y3, Y3; \
	VAESENC k, Y4, Y4; VAESENC k, Y5, Y5; VAESENC k, Y6, Y6; VAESENC k, Y7, Y7

#define AESLAST8(k) \
	VAESENCLAST k, Y0, Y0; VAESENCLAST k, Y1, Y1; VAESENCLAST k, Y2, Y2; VAESENCLAST k, Y3, Y3; \
	VAESENCLAST k, Y4, Y4; VAESENCLAST k, Y5, Y5; VAESENCLAST k, Y6, Y6; VAESENCLAST k, Y7, Y7

#define XOR8(k) \
	VPXOR k, Y0, Y0; VPXOR k, Y1, Y1; VPXOR k, Y2, Y2; VPXOR k, Y3, Y3; \
	VPXOR k, Y4, Y4; VPXOR k, Y5, Y5; VPXOR k, Y6, Y6; VPXOR k, Y7, Y7

#define NEXTCTR(r) \
	VPSHUFB Y11, Y9, r; VPADDD Y10, Y9, Y9

// func ctrBlocks(rk *byte, rounds int, ctr *[32]byte, dst, src *byte, nblocks int)
TEXT ·ctrBlocks(SB), NOSPLIT, $0-48
	MOVQ rk+0(FP), AX
	MOVQ rounds+8(FP), R8
	MOVQ ctr+16(FP), BX
	MOVQ dst+24(FP), DI
	MOVQ src+32(FP), SI
	MOVQ nblocks+40(FP), CX

	VMOVDQU (BX), Y9
	VMOVDQU ctrMask<>(SB), Y11
	VMOVDQU inc2<>(SB), Y10
	// R9: the last round key.
	MOVQ R8, R9
	SHLQ $4, R9
	ADDQ AX, R9

loop16:
	CMPQ CX, $16
	JB   loop2
	NEXTCTR(Y0)
	NEXTCTR(Y1)
	NEXTCTR(Y2)
	NEXTCTR(Y3)
	NEXTCTR(Y4)
	NEXTCTR(Y5)
	NEXTCTR(Y6)
	NEXTCTR(Y7)
	VBROADCASTI128 (AX), Y8
	XOR8(Y8)
	LEAQ 16(AX), DX

rounds16:
	VBROADCASTI128 (DX), Y8
	AESROUND8(Y8)
	ADDQ $16, DX
	CMPQ DX, R9
	JB   rounds16
	VBROADCASTI128 (R9), Y8
	AESLAST8(Y8)

	VPXOR   0(SI), Y0, Y0
	VPXOR   32(SI), Y1, Y1
	VPXOR   64(SI), Y2, Y2
	VPXOR   96(SI), Y3, Y3
	VPXOR   128(SI), Y4, Y4
	VPXOR   160(SI), Y5, Y5
	VPXOR   192(SI), Y6, Y6
	VPXOR   224(SI), Y7, Y7
	VMOVDQU Y0, 0(DI)
	VMOVDQU Y1, 32(DI)
	VMOVDQU Y2, 64(DI)
	VMOVDQU Y3, 96(DI)
	VMOVDQU Y4, 128(DI)
	VMOVDQU Y5, 160(DI)
	VMOVDQU Y6, 192(DI)
	VMOVDQU Y7, 224(DI)
	ADDQ    $256, SI
	ADDQ    $256, DI
	SUBQ    $16, CX
	JMP     loop16

loop2:
	CMPQ CX, $2
	JB   tail1
	NEXTCTR(Y0)
	VBROADCASTI128 (AX), Y8
	VPXOR Y8, Y0, Y0
	LEAQ 16(AX), DX

rounds2:
	VBROADCASTI128 (DX), Y8
	VAESENC Y8, Y0, Y0
	ADDQ $16, DX
	CMPQ DX, R9
	JB   rounds2
	VBROADCASTI128 (R9), Y8
	VAESENCLAST Y8, Y0, Y0
	VPXOR   (SI), Y0, Y0
	VMOVDQU Y0, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	SUBQ    $2, CX
	JMP     loop2

tail1:
	TESTQ CX, CX
	JZ    ctrdone
	// The next counter is in Y9's low lane.
	VPSHUFB X11, X9, X0
	VMOVDQU (AX), X8
	VPXOR   X8, X0, X0
	LEAQ    16(AX), DX

rounds1:
	VMOVDQU (DX), X8
	VAESENC X8, X0, X0
	ADDQ $16, DX
	CMPQ DX, R9
	JB   rounds1
	VMOVDQU (R9), X8
	VAESENCLAST X8, X0, X0
	VPXOR   (SI), X0, X0
	VMOVDQU X0, (DI)

ctrdone:
	VZEROUPPER
	RET

// MUL multiplies the two blocks of d by the two key powers at off(p)
// (Karatsuba: the powers' folded halves are 256 bytes further on), adding
// the low and high products into Y8 and Y10 and the middle product, before
// its correction, into Y9. Clobbers Y13 to Y15.
#define MUL(off, p, d) \
	VPCLMULQDQ $0x00, off(p), d, Y13; VPXOR Y13, Y8, Y8; \
	VPCLMULQDQ $0x11, off(p), d, Y14; VPXOR Y14, Y10, Y10; \
	VPSHUFD $0x4e, d, Y15; VPXOR d, Y15, Y15; \
	VPCLMULQDQ $0x00, off+256(p), Y15, Y15; VPXOR Y15, Y9, Y9

// GHASHPAIR multiplies the two blocks at off(SI) by the key powers at
// off(AX).
#define GHASHPAIR(off) \
	VMOVDQU off(SI), Y1; VPSHUFB Y11, Y1, Y1; MUL(off, AX, Y1)

// REDUCE completes the Karatsuba middle product, adds the two lanes of Y8,
// Y9 and Y10, joins the middle part into the 256-bit product, and reduces
// it modulo the GHASH polynomial into X12.
#define REDUCE \
	VPXOR Y8, Y9, Y9; VPXOR Y10, Y9, Y9; \
	VEXTRACTI128 $1, Y8, X13; VPXOR X13, X8, X8; \
	VEXTRACTI128 $1, Y9, X13; VPXOR X13, X9, X9; \
	VEXTRACTI128 $1, Y10, X13; VPXOR X13, X10, X10; \
	VPSLLDQ $8, X9, X13; VPXOR X13, X8, X8; \
	VPSRLDQ $8, X9, X9; VPXOR X9, X10, X10; \
	VPCLMULQDQ $0x10, ghashPoly<>(SB), X8, X13; VPSHUFD $0x4e, X8, X8; VPXOR X13, X8, X8; \
	VPCLMULQDQ $0x10, ghashPoly<>(SB), X8, X13; VPSHUFD $0x4e, X8, X8; VPXOR X13, X8, X8; \
	VPXOR X10, X8, X12

// func ghashBlocks(htab *[33][16]byte, acc *[16]byte, src *byte, nblocks int)
TEXT ·ghashBlocks(SB), NOSPLIT, $0-32
	MOVQ htab+0(FP), AX
	MOVQ acc+8(FP), BX
	MOVQ src+16(FP), SI
	MOVQ nblocks+24(FP), CX

	VMOVDQU bswapMask<>(SB), Y11
	// The state, in X12; a VEX.128 load clears the upper lane.
	VMOVDQU (BX), X12

loop16:
	CMPQ CX, $16
	JB   tail
	VPXOR Y8, Y8, Y8
	VPXOR Y9, Y9, Y9
	VPXOR Y10, Y10, Y10
	// Blocks 2 to 15 first: they do not wait for the state.
	GHASHPAIR(32)
	GHASHPAIR(64)
	GHASHPAIR(96)
	GHASHPAIR(128)
	GHASHPAIR(160)
	GHASHPAIR(192)
	GHASHPAIR(224)
	// Blocks 0 and 1, with the state added to block 0, last, so that the
	// chain from one reduction to the next is as short as it can be.
	VMOVDQU 0(SI), Y0
	VPSHUFB Y11, Y0, Y0
	VPXOR   Y12, Y0, Y0
	MUL(0, AX, Y0)
	REDUCE
	ADDQ $256, SI
	SUBQ $16, CX
	JMP  loop16

tail:
	TESTQ CX, CX
	JZ    ghashdone
	// Fewer than 16 blocks: block i of n takes H^(n-i), from htab[16-n+i].
	MOVQ  $16, DX
	SUBQ  CX, DX
	SHLQ  $4, DX
	ADDQ  AX, DX
	VPXOR Y8, Y8, Y8
	VPXOR Y9, Y9, Y9
	VPXOR Y10, Y10, Y10

tail2:
	CMPQ CX, $2
	JB   tail1
	VMOVDQU (SI), Y0
	VPSHUFB Y11, Y0, Y0
	// The state goes into the first block only.
	VPXOR   Y12, Y0, Y0
	VPXOR   Y12, Y12, Y12
	MUL(0, DX, Y0)
	ADDQ $32, SI
	ADDQ $32, DX
	SUBQ $2, CX
	JMP  tail2

tail1:
	TESTQ CX, CX
	JZ    tailreduce
	VMOVDQU (SI), X0
	VPSHUFB X11, X0, X0
	VPXOR   X12, X0, X0
	// A VEX.128 load leaves the upper lane zero, so its products are zero
	// and MUL adds only this block's (the power loaded beside it is unused).
	MUL(0, DX, Y0)

tailreduce:
	REDUCE

ghashdone:
	VMOVDQU X12, (BX)
	VZEROUPPER
	RET
