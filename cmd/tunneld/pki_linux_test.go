package main

import (
	"io/fs"
	"path/filepath"
	"syscall"
	"testing"

	"tlsvpn/certs"
)

// TestPKIKeysPrivateUnderAnyUmask checks that 'tunneld pki' sets the modes of what it writes
// exactly, whatever the umask: keys 0600 (so the daemons do not warn about them),
// certificates and the CRL 0644, the directory 0700. Umask 0 narrows nothing, so only an
// explicit mode passes.
func TestPKIKeysPrivateUnderAnyUmask(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := pkiNewDir(t)
	pkiMustRun(t, "issue", "--dir", dir, "--server", "--name", "vpn.test")
	pkiMustRun(t, "issue", "--dir", dir, "--client", "--name", "laptop")
	for file, want := range map[string]fs.FileMode{
		"ca.key": 0o600, "vpn.test.key": 0o600, "laptop.key": 0o600,
		"ca.crt": 0o644, "vpn.test.crt": 0o644, "laptop.crt": 0o644, "crl.pem": 0o644,
	} {
		path := filepath.Join(dir, file)
		if got := pkiMode(t, path); got != want {
			t.Errorf("mode of %s = %04o, want %04o", file, got, want)
		}
		if want == 0o600 {
			if err := certs.CheckKeyFileMode(path); err != nil {
				t.Errorf("CheckKeyFileMode(%s) = %v", file, err)
			}
		}
	}
	if got := pkiMode(t, dir); got != 0o700 {
		t.Errorf("mode of %s = %04o, want 0700", dir, got)
	}
	// A revocation rewrites crl.pem through a temporary file: still 0644.
	pkiMustRun(t, "revoke", "--dir", dir, "--name", "laptop")
	if got := pkiMode(t, filepath.Join(dir, "crl.pem")); got != 0o644 {
		t.Errorf("mode of crl.pem after revoke = %04o, want 0644", got)
	}
}
