//go:build !purego

package aesgcm

import "testing"

// paths runs f once for each assembly path this CPU can run: the
// AVX-512 one and the AVX2 one (which an AVX-512 CPU runs too).
func paths(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	wide := useAVX512
	t.Cleanup(func() { useAVX512 = wide })
	if wide {
		t.Run("avx512", f)
	}
	useAVX512 = false
	t.Run("avx2", f)
	useAVX512 = wide
}

// forEachPath is paths for fuzz targets: it runs f on each path.
func forEachPath(f func()) {
	wide := useAVX512
	defer func() { useAVX512 = wide }()
	if wide {
		f()
	}
	useAVX512 = false
	f()
}

// narrow switches to the AVX2 path and returns the function that switches
// back; ok is false where the assembly does not run.
func narrow() (undo func(), ok bool) {
	if !useAsm {
		return nil, false
	}
	wide := useAVX512
	useAVX512 = false
	return func() { useAVX512 = wide }, true
}
