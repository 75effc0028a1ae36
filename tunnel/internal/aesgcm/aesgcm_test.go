package aesgcm

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

func stdGCM(t testing.TB, key []byte) cipher.AEAD {
	t.Helper()
	b, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// mustNew is New for tests of the own code: it fails unless New returns
// the own implementation on the path the test asked for (forceAVX2), so
// that no test compares crypto/cipher with itself.
func mustNew(t testing.TB, key []byte) cipher.AEAD {
	t.Helper()
	g, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	if isStdlib(g) {
		t.Fatalf("New returned %T, not the own implementation", g)
	}
	if wide, ok := isWide(g); !ok || wide == forceAVX2 {
		t.Fatalf("New returned the wrong path: wide %v (known %v), forceAVX2 %v", wide, ok, forceAVX2)
	}
	return g
}

// newOnPath is mustNew on the AVX2 path (avx2) or the AVX-512 one.
func newOnPath(t testing.TB, key []byte, avx2 bool) cipher.AEAD {
	t.Helper()
	defer func(old bool) { forceAVX2 = old }(forceAVX2)
	forceAVX2 = avx2
	return mustNew(t, key)
}

// TestMatchesStdlib seals and opens every length up to a few hundred
// bytes, and record-sized ones, with both key sizes and several
// additional-data lengths, and compares each byte with crypto/cipher.
func TestMatchesStdlib(t *testing.T) {
	paths(t, func(t *testing.T) {
		lengths := []int{}
		for n := 0; n <= 300; n++ {
			lengths = append(lengths, n)
		}
		lengths = append(lengths, 511, 512, 513, 4095, 4096, 4097, 16383, 16384, 16385, 16401, 65536+7)
		for _, keyLen := range []int{16, 32} {
			key := make([]byte, keyLen)
			rand.Read(key)
			ours, std := mustNew(t, key), stdGCM(t, key)
			nonce := make([]byte, 12)
			for _, adLen := range []int{0, 5, 13, 16, 17, 40, 300} {
				ad := make([]byte, adLen)
				rand.Read(ad)
				for _, n := range lengths {
					rand.Read(nonce)
					pt := make([]byte, n)
					rand.Read(pt)
					want := std.Seal(nil, nonce, pt, ad)
					got := ours.Seal(nil, nonce, pt, ad)
					if !bytes.Equal(got, want) {
						t.Fatalf("key %d, ad %d, len %d: Seal differs from crypto/cipher", keyLen, adLen, n)
					}
					back, err := ours.Open(nil, nonce, want, ad)
					if err != nil || !bytes.Equal(back, pt) {
						t.Fatalf("key %d, ad %d, len %d: Open: %v", keyLen, adLen, n, err)
					}
				}
			}
		}
	})
}

// TestOpenRejects flips each bit of a sealed message, its tag and its
// additional data in turn; every change must fail. A failed Open leaves no
// plaintext behind, neither in a separate buffer nor in place (a message
// of 1000 bytes is decrypted in whole chunks before the tag is known).
func TestOpenRejects(t *testing.T) {
	paths(t, func(t *testing.T) {
		key := make([]byte, 16)
		rand.Read(key)
		g := mustNew(t, key)
		nonce := make([]byte, 12)
		ad := []byte{23, 3, 3, 0, 50}
		for _, n := range []int{35, 1000} {
			pt := bytes.Repeat([]byte("secret!"), n/7)
			sealed := g.Seal(nil, nonce, pt, ad)
			for i := range len(sealed) * 8 {
				bad := bytes.Clone(sealed)
				bad[i/8] ^= 1 << (i % 8)
				dst := make([]byte, 0, len(bad))
				if _, err := g.Open(dst, nonce, bad, ad); err == nil {
					t.Fatalf("%d bytes, bit %d flipped: Open accepted it", n, i)
				}
				if bytes.Contains(dst[:cap(dst)], []byte("secret")) {
					t.Fatalf("%d bytes, bit %d flipped: Open left plaintext in dst", n, i)
				}
				if _, err := g.Open(bad[:0], nonce, bad, ad); err == nil {
					t.Fatalf("%d bytes, bit %d flipped: in-place Open accepted it", n, i)
				}
				if bytes.Contains(bad, []byte("secret")) {
					t.Fatalf("%d bytes, bit %d flipped: in-place Open left plaintext", n, i)
				}
			}
			for i := range len(ad) * 8 {
				badAD := bytes.Clone(ad)
				badAD[i/8] ^= 1 << (i % 8)
				if _, err := g.Open(nil, nonce, sealed, badAD); err == nil {
					t.Fatalf("%d bytes, additional data bit %d flipped: Open accepted it", n, i)
				}
			}
		}
		if _, err := g.Open(nil, nonce, make([]byte, 15), ad); err == nil {
			t.Fatal("Open accepted a message shorter than the tag")
		}
	})
}

// TestNewIsOwn checks that New returns this package's own code on the
// one-pass AVX-512 path for both key sizes wherever Check passes (and the
// AVX2 path only when a test forces it), so the tests above test it, and
// that it refuses AES-192 instead of handing out crypto/cipher's GCM.
func TestNewIsOwn(t *testing.T) {
	requireOwn(t)
	defer func() { forceAVX2 = false }()
	for _, force := range []bool{false, true} {
		forceAVX2 = force
		for _, n := range []int{16, 32} {
			g, err := New(make([]byte, n))
			if err != nil {
				t.Fatalf("New with a %d-byte key: %v", n, err)
			}
			if isStdlib(g) {
				t.Fatalf("New with a %d-byte key returned %T although Check passed", n, g)
			}
			if wide, ok := isWide(g); !ok || wide == force {
				t.Fatalf("New with a %d-byte key, forceAVX2 %v: wide %v (known %v)", n, force, wide, ok)
			}
		}
	}
	forceAVX2 = false
	for _, n := range []int{0, 15, 24, 33} {
		if g, err := New(make([]byte, n)); err == nil || g != nil {
			t.Fatalf("New with a %d-byte key returned %T, %v; want an error", n, g, err)
		}
	}
}

// TestInPlace seals and opens in the same buffer, the way the record
// layer uses the AEAD, at every offset within 16 bytes (the record layer's
// buffers sit wherever framing puts them), with both key sizes.
func TestInPlace(t *testing.T) {
	paths(t, func(t *testing.T) {
		nonce := make([]byte, 12)
		ad := []byte{23, 3, 3, 64, 17}
		const n = 16384 + 1
		for _, keyLen := range []int{16, 32} {
			key := make([]byte, keyLen)
			rand.Read(key)
			ours, std := mustNew(t, key), stdGCM(t, key)
			for off := range 16 {
				buf := make([]byte, off+n+16)
				pt := buf[off : off+n]
				rand.Read(pt)
				orig := bytes.Clone(pt)
				want := std.Seal(nil, nonce, pt, ad)
				sealed := ours.Seal(pt[:0], nonce, pt, ad)
				if !bytes.Equal(sealed, want) {
					t.Fatalf("key %d, offset %d: in-place Seal differs from crypto/cipher", keyLen, off)
				}
				opened, err := ours.Open(sealed[:0], nonce, sealed, ad)
				if err != nil || !bytes.Equal(opened, orig) {
					t.Fatalf("key %d, offset %d: in-place Open: %v", keyLen, off, err)
				}
			}
		}
	})
}

func TestInexactOverlapPanics(t *testing.T) {
	paths(t, func(t *testing.T) {
		key := make([]byte, 16)
		g := mustNew(t, key)
		buf := make([]byte, 100)
		defer func() {
			if recover() == nil {
				t.Fatal("Seal into a shifted copy of its input did not panic")
			}
		}()
		g.Seal(buf[1:1], make([]byte, 12), buf[:50], nil)
	})
}

func TestAllocs(t *testing.T) {
	paths(t, func(t *testing.T) {
		key := make([]byte, 16)
		g := mustNew(t, key)
		nonce := make([]byte, 12)
		ad := make([]byte, 5)
		buf := make([]byte, 16385+16)
		n := testing.AllocsPerRun(100, func() {
			s := g.Seal(buf[:0], nonce, buf[:16385], ad)
			if _, err := g.Open(s[:0], nonce, s, ad); err != nil {
				t.Fatal(err)
			}
		})
		if n != 0 {
			t.Fatalf("Seal+Open allocate %v times, want 0", n)
		}
	})
}

// FuzzMatchesStdlib compares both own paths with crypto/cipher's GCM on
// arbitrary keys, nonces, messages and additional data.
func FuzzMatchesStdlib(f *testing.F) {
	requireOwn(f)
	f.Add([]byte("0123456789abcdef"), []byte("nonce-12byte"), []byte("hello"), []byte{23, 3, 3, 0, 21})
	f.Add([]byte("0123456789abcdef0123456789abcdef"), []byte("nonce-12byte"), bytes.Repeat([]byte("record!"), 100), []byte{23, 3, 3, 2, 188})
	f.Fuzz(func(t *testing.T, key, nonce, pt, ad []byte) {
		if len(key) != 16 && len(key) != 32 || len(nonce) != 12 {
			return
		}
		std := stdGCM(t, key)
		want := std.Seal(nil, nonce, pt, ad)
		b, errB := std.Open(nil, nonce, pt, ad)
		eachPath(func(string) {
			// New on each path: the path is fixed when the key is set up.
			ours := mustNew(t, key)
			if got := ours.Seal(nil, nonce, pt, ad); !bytes.Equal(got, want) {
				t.Fatal("Seal differs from crypto/cipher")
			}
			if got, err := ours.Open(nil, nonce, want, ad); err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("Open of crypto/cipher's output: %v", err)
			}
			// pt read as a sealed message: both must agree on accepting it.
			a, errA := ours.Open(nil, nonce, pt, ad)
			if (errA == nil) != (errB == nil) || !bytes.Equal(a, b) {
				t.Fatalf("Open disagrees with crypto/cipher: %v vs %v", errA, errB)
			}
		})
	})
}

// BenchmarkAEAD times Seal and Open (with a copy of the sealed record
// first, as Open works in place) against crypto/cipher's GCM, at an
// MTU-sized packet and a full TLS record; own-avx2 is the two-pass path
// for CPUs without AVX-512, which New never selects but the tests keep.
func BenchmarkAEAD(b *testing.B) {
	for _, impl := range []struct {
		name string
		own  bool
		avx2 bool
	}{{"own", true, false}, {"own-avx2", true, true}, {"stdlib", false, false}} {
		for _, op := range []string{"seal", "open"} {
			for _, size := range []int{1350, 16384} {
				b.Run(impl.name+"/"+op+"/"+strconv.Itoa(size), func(b *testing.B) {
					var g cipher.AEAD
					if impl.own {
						requireOwn(b)
						g = newOnPath(b, make([]byte, 16), impl.avx2)
					} else {
						g = stdGCM(b, make([]byte, 16))
					}
					nonce, ad := make([]byte, 12), make([]byte, 5)
					sealed := g.Seal(nil, nonce, make([]byte, size), ad)
					buf := make([]byte, len(sealed))
					b.SetBytes(int64(size))
					for b.Loop() {
						if op == "seal" {
							g.Seal(buf[:0], nonce, buf[:size], ad)
							continue
						}
						copy(buf, sealed)
						if _, err := g.Open(buf[:0], nonce, buf, ad); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}

// eachPath calls run once for each own path, named: "avx512", the path
// New returns, and "avx2", the one for CPUs without AVX-512, forced with
// forceAVX2 (an AVX-512 CPU runs both). Where Check fails, New refuses and
// there is no path to run: it calls run not at all.
func eachPath(run func(name string)) {
	if Check() != nil {
		return
	}
	run("avx512")
	forceAVX2 = true
	defer func() { forceAVX2 = false }()
	run("avx2")
}

// paths runs f as a subtest on each own path, or skips the test with
// Check's reason where there is none.
func paths(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	requireOwn(t)
	eachPath(func(name string) { t.Run(name, f) })
}

// requireOwn skips t where the own code may not run (FIPS mode, another
// platform or CPU), and fails it where it could but Check fails all the
// same: a failed self-test must not pass for a skip.
func requireOwn(t testing.TB) {
	t.Helper()
	err := Check()
	if err == nil {
		return
	}
	if fipsEnabled() || platformErr() != nil {
		t.Skipf("own AES-GCM not usable here: %v", err)
	}
	t.Fatalf("Check failed on a machine that can run the own code: %v", err)
}

// isStdlib reports whether g is not this package's own type.
func isStdlib(g cipher.AEAD) bool {
	return !strings.HasPrefix(fmt.Sprintf("%T", g), "*aesgcm.")
}
