//go:build !purego

#include "textflag.h"

// Byte reversal of each 128-bit lane (GHASH works on byte-reversed blocks).
DATA bswapMask<>+0x00(SB)/8, $0x08090a0b0c0d0e0f
DATA bswapMask<>+0x08(SB)/8, $0x0001020304050607
DATA bswapMask<>+0x10(SB)/8, $0x08090a0b0c0d0e0f
DATA bswapMask<>+0x18(SB)/8, $0x0001020304050607
DATA bswapMask<>+0x20(SB)/8, $0x08090a0b0c0d0e0f
DATA bswapMask<>+0x28(SB)/8, $0x0001020304050607
DATA bswapMask<>+0x30(SB)/8, $0x08090a0b0c0d0e0f
DATA bswapMask<>+0x38(SB)/8, $0x0001020304050607
GLOBL bswapMask<>(SB), RODATA|NOPTR, $64

// Keeps the nonce's 12 bytes and byte-swaps the little-endian counter in
// the last 4, giving a GCM counter block.
DATA ctrMask<>+0x00(SB)/8, $0x0706050403020100
DATA ctrMask<>+0x08(SB)/8, $0x0c0d0e0f0b0a0908
DATA ctrMask<>+0x10(SB)/8, $0x0706050403020100
DATA ctrMask<>+0x18(SB)/8, $0x0c0d0e0f0b0a0908
DATA ctrMask<>+0x20(SB)/8, $0x0706050403020100
DATA ctrMask<>+0x28(SB)/8, $0x0c0d0e0f0b0a0908
DATA ctrMask<>+0x30(SB)/8, $0x0706050403020100
DATA ctrMask<>+0x38(SB)/8, $0x0c0d0e0f0b0a0908
GLOBL ctrMask<>(SB), RODATA|NOPTR, $64

// Adds 2 to the counter of each lane.
DATA inc2<>+0x00(SB)/8, $0
DATA inc2<>+0x08(SB)/8, $0x0000000200000000
DATA inc2<>+0x10(SB)/8, $0
DATA inc2<>+0x18(SB)/8, $0x0000000200000000
GLOBL inc2<>(SB), RODATA|NOPTR, $32

// Adds 4 to the counter of each lane of a 512-bit register.
DATA inc4<>+0x00(SB)/8, $0
DATA inc4<>+0x08(SB)/8, $0x0000000400000000
DATA inc4<>+0x10(SB)/8, $0
DATA inc4<>+0x18(SB)/8, $0x0000000400000000
DATA inc4<>+0x20(SB)/8, $0
DATA inc4<>+0x28(SB)/8, $0x0000000400000000
DATA inc4<>+0x30(SB)/8, $0
DATA inc4<>+0x38(SB)/8, $0x0000000400000000
GLOBL inc4<>(SB), RODATA|NOPTR, $64

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

// GHASH keeps its products in Y8/Z8 (low), Y9/Z9 (middle, before the
// Karatsuba correction) and Y10/Z10 (high), the byte-reversal mask in
// Y11/Z11 and the state in X12 (its upper bits zero). The key powers are
// at p: H^16 ... H^1, then 256 bytes on, each one's halves XORed.
//
// On this CPU family a 512-bit VPCLMULQDQ costs what a 256-bit one does,
// so the 16-block loops multiply four blocks per instruction.

// MUL multiplies the two blocks of d by the two key powers at off(p).
// Clobbers Y13 to Y15.
#define MUL(off, p, d) \
	VPCLMULQDQ $0x00, off(p), d, Y13; VPXOR Y13, Y8, Y8; \
	VPCLMULQDQ $0x11, off(p), d, Y14; VPXOR Y14, Y10, Y10; \
	VPSHUFD $0x4e, d, Y15; VPXOR d, Y15, Y15; \
	VPCLMULQDQ $0x00, off+256(p), Y15, Y15; VPXOR Y15, Y9, Y9

// MULZ multiplies the four blocks of d by the four key powers at off(p).
// Clobbers Z13 to Z15.
#define MULZ(off, p, d) \
	VPCLMULQDQ $0x00, off(p), d, Z13; VPXORQ Z13, Z8, Z8; \
	VPCLMULQDQ $0x11, off(p), d, Z14; VPXORQ Z14, Z10, Z10; \
	VPSHUFD $0x4e, d, Z15; VPXORQ d, Z15, Z15; \
	VPCLMULQDQ $0x00, off+256(p), Z15, Z15; VPXORQ Z15, Z9, Z9

// HQUAD multiplies the four blocks at off(src) by the powers at off(p).
#define HQUAD(off, src, p) \
	VMOVDQU64 off(src), Z1; VPSHUFB Z11, Z1, Z1; MULZ(off, p, Z1)

// HSTATE multiplies the first four blocks at src, the state added to the
// first, by the powers at p. It goes last in a loop, so that the chain
// from one reduction to the next is as short as it can be.
#define HSTATE(src, p) \
	VMOVDQU64 (src), Z0; VPSHUFB Z11, Z0, Z0; VPXORQ Z12, Z0, Z0; MULZ(0, p, Z0)

// REDUCEY completes the Karatsuba middle product, adds the two lanes of
// Y8, Y9 and Y10, joins the middle part into the 256-bit product, and
// reduces it modulo the GHASH polynomial into X12. AVX2 only.
#define REDUCEY \
	VPXOR Y8, Y9, Y9; VPXOR Y10, Y9, Y9; \
	VEXTRACTI128 $1, Y8, X13; VPXOR X13, X8, X8; \
	VEXTRACTI128 $1, Y9, X13; VPXOR X13, X9, X9; \
	VEXTRACTI128 $1, Y10, X13; VPXOR X13, X10, X10; \
	VPSLLDQ $8, X9, X13; VPXOR X13, X8, X8; \
	VPSRLDQ $8, X9, X9; VPXOR X9, X10, X10; \
	VPCLMULQDQ $0x10, ghashPoly<>(SB), X8, X13; VPSHUFD $0x4e, X8, X8; VPXOR X13, X8, X8; \
	VPCLMULQDQ $0x10, ghashPoly<>(SB), X8, X13; VPSHUFD $0x4e, X8, X8; VPXOR X13, X8, X8; \
	VPXOR X10, X8, X12

// REDUCEZ first adds the upper halves of Z8, Z9 and Z10 into their lower
// halves, then is REDUCEY.
#define REDUCEZ \
	VEXTRACTI64X4 $1, Z8, Y13; VPXOR Y13, Y8, Y8; \
	VEXTRACTI64X4 $1, Z9, Y13; VPXOR Y13, Y9, Y9; \
	VEXTRACTI64X4 $1, Z10, Y13; VPXOR Y13, Y10, Y10; \
	REDUCEY

// GPAIR multiplies the two blocks at off(SI) by the key powers at off(AX).
#define GPAIR(off) \
	VMOVDQU off(SI), Y1; VPSHUFB Y11, Y1, Y1; MUL(off, AX, Y1)

// func ghashBlocks(htab *[33][16]byte, acc *[16]byte, src *byte, nblocks int, wide bool)
//
// With wide, whole 16-block groups use 512-bit registers (AVX-512);
// without, only AVX2 instructions run.
TEXT ·ghashBlocks(SB), NOSPLIT, $0-33
	MOVQ    htab+0(FP), AX
	MOVQ    acc+8(FP), BX
	MOVQ    src+16(FP), SI
	MOVQ    nblocks+24(FP), CX
	MOVBQZX wide+32(FP), R8

	VMOVDQU bswapMask<>(SB), Y11
	// A VEX.128 load clears the upper bits.
	VMOVDQU (BX), X12
	TESTQ   R8, R8
	JZ      loop16y
	VMOVDQU64 bswapMask<>(SB), Z11

loop16z:
	CMPQ CX, $16
	JB   tail
	VPXORQ Z8, Z8, Z8
	VPXORQ Z9, Z9, Z9
	VPXORQ Z10, Z10, Z10
	HQUAD(64, SI, AX)
	HQUAD(128, SI, AX)
	HQUAD(192, SI, AX)
	HSTATE(SI, AX)
	REDUCEZ
	ADDQ $256, SI
	SUBQ $16, CX
	JMP  loop16z

loop16y:
	CMPQ CX, $16
	JB   tail
	VPXOR Y8, Y8, Y8
	VPXOR Y9, Y9, Y9
	VPXOR Y10, Y10, Y10
	// Blocks 2 to 15 first: they do not wait for the state.
	GPAIR(32)
	GPAIR(64)
	GPAIR(96)
	GPAIR(128)
	GPAIR(160)
	GPAIR(192)
	GPAIR(224)
	VMOVDQU 0(SI), Y0
	VPSHUFB Y11, Y0, Y0
	VPXOR   Y12, Y0, Y0
	MUL(0, AX, Y0)
	REDUCEY
	ADDQ $256, SI
	SUBQ $16, CX
	JMP  loop16y

tail:
	TESTQ CX, CX
	JZ    ghashdone
	// Fewer than 16 blocks: block i of n takes H^(n-i), from htab[16-n+i].
	MOVQ  $16, DX
	SUBQ  CX, DX
	SHLQ  $4, DX
	ADDQ  AX, DX
	// VEX writes clear the upper bits of any 512-bit register too.
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
	REDUCEY

ghashdone:
	VMOVDQU X12, (BX)
	VZEROUPPER
	RET

// The stitched loop keeps four blocks of AES state in each of Z16 to Z19,
// the round key in Z24 and the counters in Z25, leaving Z0 to Z15 to
// GHASH.

#define ROUNDZ(off) \
	VBROADCASTI32X4 off(AX), Z24; \
	VAESENC Z24, Z16, Z16; VAESENC Z24, Z17, Z17; VAESENC Z24, Z18, Z18; VAESENC Z24, Z19, Z19

#define NEXTCTRZ(r) \
	VPSHUFB Z26, Z25, r; VPADDD Z27, Z25, Z25

// func cryptHash(rk *byte, rounds int, htab *[33][16]byte, acc *[16]byte, ctr *[32]byte, dst, src, hsrc *byte, nchunks int)
TEXT ·cryptHash(SB), NOSPLIT, $0-72
	MOVQ rk+0(FP), AX
	MOVQ rounds+8(FP), R8
	MOVQ htab+16(FP), R12
	MOVQ acc+24(FP), BX
	MOVQ ctr+32(FP), DX
	MOVQ dst+40(FP), DI
	MOVQ src+48(FP), SI
	MOVQ hsrc+56(FP), R11
	MOVQ nchunks+64(FP), CX

	// Z25: counters c to c+3 from the two blocks at ctr.
	VMOVDQU64    (DX), Y25
	VPADDD       inc2<>(SB), Y25, Y13
	VINSERTI64X4 $1, Y13, Z25, Z25
	VMOVDQU64    ctrMask<>(SB), Z26
	VMOVDQU64    inc4<>(SB), Z27
	VMOVDQU64    bswapMask<>(SB), Z11
	VMOVDQU      (BX), X12
	// R9: the last round key.
	MOVQ R8, R9
	SHLQ $4, R9
	ADDQ AX, R9

chunk:
	NEXTCTRZ(Z16)
	NEXTCTRZ(Z17)
	NEXTCTRZ(Z18)
	NEXTCTRZ(Z19)
	VBROADCASTI32X4 (AX), Z24
	VPXORQ Z24, Z16, Z16
	VPXORQ Z24, Z17, Z17
	VPXORQ Z24, Z18, Z18
	VPXORQ Z24, Z19, Z19
	VPXORQ Z8, Z8, Z8
	VPXORQ Z9, Z9, Z9
	VPXORQ Z10, Z10, Z10

	// The hashing spread over the first AES rounds.
	ROUNDZ(16)
	HQUAD(64, R11, R12)
	ROUNDZ(32)
	HQUAD(128, R11, R12)
	ROUNDZ(48)
	HQUAD(192, R11, R12)
	ROUNDZ(64)
	HSTATE(R11, R12)
	ROUNDZ(80)
	REDUCEZ
	ROUNDZ(96)
	ROUNDZ(112)
	ROUNDZ(128)
	ROUNDZ(144)
	CMPQ R8, $10
	JE   lastround
	ROUNDZ(160)
	ROUNDZ(176)
	ROUNDZ(192)
	ROUNDZ(208)

lastround:
	VBROADCASTI32X4 (R9), Z24
	VAESENCLAST Z24, Z16, Z16
	VAESENCLAST Z24, Z17, Z17
	VAESENCLAST Z24, Z18, Z18
	VAESENCLAST Z24, Z19, Z19
	// Stores come after every load of this chunk, so src, dst and hsrc
	// may all be the same (in-place Open).
	VPXORQ    0(SI), Z16, Z16
	VPXORQ    64(SI), Z17, Z17
	VPXORQ    128(SI), Z18, Z18
	VPXORQ    192(SI), Z19, Z19
	VMOVDQU64 Z16, 0(DI)
	VMOVDQU64 Z17, 64(DI)
	VMOVDQU64 Z18, 128(DI)
	VMOVDQU64 Z19, 192(DI)
	ADDQ      $256, SI
	ADDQ      $256, DI
	ADDQ      $256, R11
	DECQ      CX
	JNZ       chunk

	VMOVDQU X12, (BX)
	VZEROUPPER
	RET
