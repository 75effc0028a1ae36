package aesgcm

import (
	"bytes"
	"crypto/fips140"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestCheck: on a machine that meets Check's conditions (amd64 with VAES
// and AVX-512, FIPS mode off), Check passes, which means the self-test
// passed; elsewhere it fails and New refuses with the same reason.
func TestCheck(t *testing.T) {
	err := Check()
	switch perr := platformErr(); {
	case fipsEnabled():
		if err == nil {
			t.Fatal("Check passed in FIPS 140 mode")
		}
		t.Skipf("FIPS 140 mode is on: %v", err)
	case perr != nil:
		if err == nil {
			t.Fatalf("Check passed although the platform cannot run the own code: %v", perr)
		}
		if _, nerr := New(make([]byte, 16)); nerr == nil || !strings.Contains(nerr.Error(), perr.Error()) {
			t.Fatalf("New on an unsupported platform: %v; want an error with %q", nerr, perr)
		}
		t.Skipf("own AES-GCM not usable here: %v", err)
	case err != nil:
		t.Fatalf("Check failed on a machine that can run the own code: %v", err)
	}
	if err := Check(); err != nil {
		t.Fatalf("second Check: %v", err)
	}
}

// TestCheckFIPS takes Check's FIPS branch through the fipsEnabled seam:
// Check fails with a reason that names FIPS, on every platform, and New
// refuses.
func TestCheckFIPS(t *testing.T) {
	defer func() { fipsEnabled = fips140.Enabled }()
	fipsEnabled = func() bool { return true }
	err := Check()
	if !errors.Is(err, errFIPS) || !strings.Contains(err.Error(), "FIPS") {
		t.Fatalf("Check in FIPS mode: %v; want %v", err, errFIPS)
	}
	if g, err := New(make([]byte, 16)); g != nil || !errors.Is(err, errFIPS) {
		t.Fatalf("New in FIPS mode: %T, %v; want %v", g, err, errFIPS)
	}
}

// fipsChildEnv marks the test binary's child process in
// TestCheckFIPSProcess.
const fipsChildEnv = "AESGCM_TEST_FIPS_CHILD"

// TestCheckFIPSProcess runs TestCheckFIPSChild in a copy of this test
// binary with GODEBUG=fips140=on and =only, which can only be set when a
// process starts: there, crypto/fips140.Enabled itself must make Check
// fail.
func TestCheckFIPSProcess(t *testing.T) {
	if os.Getenv(fipsChildEnv) != "" {
		t.Skip("in the child process")
	}
	if testing.Short() {
		t.Skip("starts a process")
	}
	for _, mode := range []string{"on", "only"} {
		t.Run(mode, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestCheckFIPSChild$", "-test.v", "-test.count=1")
			godebug := "fips140=" + mode
			if old := os.Getenv("GODEBUG"); old != "" {
				// Later settings win.
				godebug = old + "," + godebug
			}
			cmd.Env = append(os.Environ(), fipsChildEnv+"=1", "GODEBUG="+godebug)
			out, err := cmd.CombinedOutput()
			if i := bytes.Index(out, []byte("panic: fips140: ")); err != nil && i >= 0 {
				// Go's FIPS module refuses to start in this build (purego,
				// ASAN) or on this platform: nothing of ours ran.
				line, _, _ := bytes.Cut(out[i:], []byte("\n"))
				t.Skipf("GODEBUG=%s cannot run here: %s", godebug, line)
			}
			if err != nil {
				t.Fatalf("child with GODEBUG=%s: %v\n%s", godebug, err, out)
			}
			if !bytes.Contains(out, []byte("--- PASS: TestCheckFIPSChild")) {
				t.Fatalf("child with GODEBUG=%s did not run TestCheckFIPSChild:\n%s", godebug, out)
			}
			for _, line := range strings.Split(string(out), "\n") {
				if strings.Contains(line, "Check:") {
					t.Log(strings.TrimSpace(line))
				}
			}
		})
	}
}

// TestCheckFIPSChild is TestCheckFIPSProcess's child; run on its own, it
// skips.
func TestCheckFIPSChild(t *testing.T) {
	if os.Getenv(fipsChildEnv) == "" {
		t.Skip("runs only as TestCheckFIPSProcess's child")
	}
	if !fips140.Enabled() {
		t.Fatal("crypto/fips140.Enabled is false: GODEBUG fips140 did not reach the child")
	}
	err := Check()
	if !errors.Is(err, errFIPS) || !strings.Contains(err.Error(), "FIPS") {
		t.Fatalf("Check in FIPS mode: %v; want %v", err, errFIPS)
	}
	t.Logf("Check: %v", err)
	if g, err := New(make([]byte, 32)); g != nil || !errors.Is(err, errFIPS) {
		t.Fatalf("New in FIPS mode: %T, %v; want %v", g, err, errFIPS)
	}
}
