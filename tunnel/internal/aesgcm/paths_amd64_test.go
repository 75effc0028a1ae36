//go:build !purego

package aesgcm

// eachPath calls run once for each path this CPU can run, named: the
// AVX-512 one and the AVX2 one (an AVX-512 CPU runs both), or
// crypto/cipher's GCM where the assembly does not run.
func eachPath(run func(name string)) {
	if useAVX512 {
		run("avx512")
	}
	undo, ok := narrow()
	if !ok {
		run("stdlib")
		return
	}
	defer undo()
	run("avx2")
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
