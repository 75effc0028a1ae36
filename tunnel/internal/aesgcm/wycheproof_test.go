package aesgcm

import (
	"bytes"
	"crypto/cipher"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

// The record layer's AEADs are checked against Project Wycheproof's
// vectors (testdata/wycheproof, see its README.md): AES-GCM on the own
// one-pass AVX-512 path, the own AVX2 path and crypto/cipher's GCM, and
// ChaCha20-Poly1305 from golang.org/x/crypto. Only vectors with a 12-byte
// nonce and a 16-byte tag apply: TLS 1.3 uses no others. Each result is
// checked as follows.
//
//   - "valid": Seal gives exactly ct||tag, Open (into a new buffer and in
//     place) gives msg.
//   - "invalid": Open fails, returns nil and leaves nothing in the
//     destination buffer's capacity.
//   - "acceptable": parameters that are legal but discouraged. Open may
//     accept or reject, but must decide like the reference (crypto/cipher
//     for AES-GCM; x/crypto is its own reference), and when it accepts,
//     Open gives msg and Seal gives ct||tag; when it rejects, as "invalid".
//     The files in testdata have no such vector with a 12-byte nonce and a
//     16-byte tag today; the count in the log shows if that changes.

// wycheproofFile is the part of Wycheproof's aead_test_schema_v1.json
// these tests read.
type wycheproofFile struct {
	Algorithm     string `json:"algorithm"`
	Schema        string `json:"schema"`
	NumberOfTests int    `json:"numberOfTests"`
	TestGroups    []struct {
		Type    string           `json:"type"`
		KeySize int              `json:"keySize"` // bits
		IVSize  int              `json:"ivSize"`  // bits
		TagSize int              `json:"tagSize"` // bits
		Tests   []wycheproofTest `json:"tests"`
	} `json:"testGroups"`
}

type wycheproofTest struct {
	TcID    int      `json:"tcId"`
	Comment string   `json:"comment"`
	Flags   []string `json:"flags"`
	Key     hexBytes `json:"key"`
	IV      hexBytes `json:"iv"`
	AAD     hexBytes `json:"aad"`
	Msg     hexBytes `json:"msg"`
	CT      hexBytes `json:"ct"`
	Tag     hexBytes `json:"tag"`
	Result  string   `json:"result"`
}

func (v *wycheproofTest) String() string {
	return fmt.Sprintf("tcId %d (%s; %s)", v.TcID, strings.Join(v.Flags, ","), v.Comment)
}

type hexBytes []byte

func (h *hexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	d, err := hex.DecodeString(s)
	*h = d
	return err
}

// loadWycheproof reads testdata/wycheproof/name and checks that it holds
// algorithm's AEAD vectors, as many as the file says.
func loadWycheproof(t *testing.T, name, algorithm string) *wycheproofFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "wycheproof", name))
	if err != nil {
		t.Fatal(err)
	}
	var f wycheproofFile
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if f.Algorithm != algorithm || f.Schema != "aead_test_schema_v1.json" {
		t.Fatalf("%s: algorithm %q, schema %q; want %q, aead_test_schema_v1.json", name, f.Algorithm, f.Schema, algorithm)
	}
	n := 0
	for _, g := range f.TestGroups {
		if g.Type != "AeadTest" {
			t.Fatalf("%s: group of type %q", name, g.Type)
		}
		n += len(g.Tests)
	}
	if n != f.NumberOfTests || n == 0 {
		t.Fatalf("%s: %d vectors read, the file says %d", name, n, f.NumberOfTests)
	}
	return &f
}

// vectorCounts counts the vectors a path ran, by result, and those it
// skipped, by reason.
type vectorCounts struct {
	ran     map[string]int
	skipped map[string]int
}

func (c *vectorCounts) total() int {
	n := 0
	for _, v := range c.ran {
		n += v
	}
	return n
}

func (c *vectorCounts) String() string {
	var skipped []string
	for _, reason := range slices.Sorted(maps.Keys(c.skipped)) {
		skipped = append(skipped, fmt.Sprintf("%d %s", c.skipped[reason], reason))
	}
	if len(skipped) == 0 {
		skipped = []string{"none"}
	}
	return fmt.Sprintf("%d vectors ran (valid %d, invalid %d, acceptable %d); skipped: %s",
		c.total(), c.ran["valid"], c.ran["invalid"], c.ran["acceptable"], strings.Join(skipped, ", "))
}

// aeadPath is one implementation to run vectors through. newAEAD returns
// nil, err for a key it does not take; reference is the implementation
// whose decision "acceptable" vectors must match (nil: newAEAD itself).
type aeadPath struct {
	name      string
	newAEAD   func(t *testing.T, key []byte) (cipher.AEAD, error)
	reference func(t *testing.T, key []byte) cipher.AEAD
	// skipKey is why a key size (bits) does not apply, or "".
	skipKey func(bits int) string
}

// runWycheproof runs every vector of f with a 12-byte nonce and a 16-byte
// tag through p and fails if none ran.
func runWycheproof(t *testing.T, f *wycheproofFile, p aeadPath) {
	c := vectorCounts{ran: map[string]int{}, skipped: map[string]int{}}
	for _, g := range f.TestGroups {
		var skip string
		switch {
		case g.IVSize != 8*nonceSize:
			skip = "with a nonce other than 12 bytes"
		case g.TagSize != 8*tagSize:
			skip = "with a tag other than 16 bytes"
		case p.skipKey != nil:
			skip = p.skipKey(g.KeySize)
		}
		if skip != "" {
			c.skipped[skip] += len(g.Tests)
			continue
		}
		for _, v := range g.Tests {
			if len(v.Key)*8 != g.KeySize || len(v.IV)*8 != g.IVSize || len(v.Tag)*8 != g.TagSize {
				t.Fatalf("%v: sizes differ from its group's", &v)
			}
			a, err := p.newAEAD(t, v.Key)
			if err != nil {
				t.Fatalf("%v: %v", &v, err)
			}
			want := true // whether Open must accept
			switch v.Result {
			case "valid":
			case "invalid":
				want = false
			case "acceptable":
				ref := a
				if p.reference != nil {
					ref = p.reference(t, v.Key)
				}
				_, err := ref.Open(nil, v.IV, append(bytes.Clone(v.CT), v.Tag...), v.AAD)
				want = err == nil
				t.Logf("%v: acceptable, reference accepts: %v", &v, want)
			default:
				t.Fatalf("%v: unknown result %q", &v, v.Result)
			}
			checkVector(t, a, &v, want)
			c.ran[v.Result]++
		}
	}
	t.Logf("%s: %v", p.name, &c)
	if c.total() == 0 {
		t.Fatalf("%s: no vector ran", p.name)
	}
}

// checkVector runs v through a: either (open) Seal must give ct||tag and
// Open, separately and in place, msg; or Open must reject it without
// leaving plaintext anywhere.
func checkVector(t *testing.T, a cipher.AEAD, v *wycheproofTest, open bool) {
	t.Helper()
	sealed := append(bytes.Clone(v.CT), v.Tag...)
	if !open {
		dst := make([]byte, 0, len(sealed))
		if out, err := a.Open(dst, v.IV, sealed, v.AAD); err == nil || out != nil {
			t.Errorf("%v: Open accepted an invalid message (%x, %v)", v, out, err)
		}
		if !allZero(dst[:cap(dst)]) {
			t.Errorf("%v: a failed Open left data in its destination", v)
		}
		inPlace := bytes.Clone(sealed)
		if out, err := a.Open(inPlace[:0], v.IV, inPlace, v.AAD); err == nil || out != nil {
			t.Errorf("%v: in-place Open accepted an invalid message (%x, %v)", v, out, err)
		}
		return
	}
	if got := a.Seal(nil, v.IV, v.Msg, v.AAD); !bytes.Equal(got, sealed) {
		t.Errorf("%v: Seal = %x, want %x", v, got, sealed)
	}
	if got, err := a.Open(nil, v.IV, sealed, v.AAD); err != nil || !bytes.Equal(got, v.Msg) {
		t.Errorf("%v: Open = %x, %v; want %x", v, got, err, []byte(v.Msg))
	}
	inPlace := bytes.Clone(sealed)
	if got, err := a.Open(inPlace[:0], v.IV, inPlace, v.AAD); err != nil || !bytes.Equal(got, v.Msg) {
		t.Errorf("%v: in-place Open = %x, %v; want %x", v, got, err, []byte(v.Msg))
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// TestWycheproofAESGCM runs Wycheproof's AES-GCM vectors through the own
// one-pass AVX-512 path (what New returns), the own AVX2 path (forced)
// and crypto/cipher's GCM, the project's default.
func TestWycheproofAESGCM(t *testing.T) {
	f := loadWycheproof(t, "aes_gcm_test.json", "AES-GCM")
	ownKeys := func(bits int) string {
		if bits != 128 && bits != 256 {
			return fmt.Sprintf("with %d-bit keys (New refuses them, as checked)", bits)
		}
		return ""
	}
	std := func(t *testing.T, key []byte) cipher.AEAD { return stdGCM(t, key) }
	for _, p := range []struct {
		aeadPath
		avx2 bool
	}{
		{aeadPath{name: "own-avx512", reference: std, skipKey: ownKeys}, false},
		{aeadPath{name: "own-avx2", reference: std, skipKey: ownKeys}, true},
	} {
		t.Run(p.name, func(t *testing.T) {
			requireOwn(t)
			// New must refuse a key size it skips rather than hand out
			// crypto/cipher's GCM.
			for _, g := range f.TestGroups {
				if p.skipKey(g.KeySize) != "" {
					if a, err := New(make([]byte, g.KeySize/8)); err == nil || a != nil {
						t.Fatalf("New with a %d-bit key: %T, %v; want an error", g.KeySize, a, err)
					}
				}
			}
			p.newAEAD = func(t *testing.T, key []byte) (cipher.AEAD, error) { return newOnPath(t, key, p.avx2), nil }
			runWycheproof(t, f, p.aeadPath)
		})
	}
	t.Run("stdlib", func(t *testing.T) {
		runWycheproof(t, f, aeadPath{
			name:    "stdlib",
			newAEAD: func(t *testing.T, key []byte) (cipher.AEAD, error) { return stdGCM(t, key), nil },
			// AES-192 works here, but TLS 1.3 and the record layer never
			// use it: skipped like on the own paths, so the counts match.
			skipKey: func(bits int) string {
				if bits != 128 && bits != 256 {
					return fmt.Sprintf("with %d-bit keys (not used by TLS 1.3)", bits)
				}
				return ""
			},
		})
	})
}

// TestWycheproofChaCha20Poly1305 runs Wycheproof's ChaCha20-Poly1305
// vectors through golang.org/x/crypto/chacha20poly1305, the record
// layer's AEAD for TLS_CHACHA20_POLY1305_SHA256, so that every AEAD the
// record layer can use is checked against the same vectors.
func TestWycheproofChaCha20Poly1305(t *testing.T) {
	f := loadWycheproof(t, "chacha20_poly1305_test.json", "CHACHA20-POLY1305")
	runWycheproof(t, f, aeadPath{
		name:    "x/crypto/chacha20poly1305",
		newAEAD: func(_ *testing.T, key []byte) (cipher.AEAD, error) { return chacha20poly1305.New(key) },
	})
}
