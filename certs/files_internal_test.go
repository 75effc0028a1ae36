package certs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestPairWriteCleansUp checks that when the certificate cannot be written, the key written
// just before it is removed, and that an existing file is never replaced.
func TestPairWriteCleansUp(t *testing.T) {
	dir := t.TempDir()
	existing := filepath.Join(dir, "taken.crt")
	if err := os.WriteFile(existing, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		certFile string
		wantErr  string
	}{
		{"cert dir missing", filepath.Join(dir, "missing", "x.crt"), "create "},
		{"cert appeared after check", existing, "already exists: refusing to overwrite"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keyFile := filepath.Join(dir, "x.key")
			p := pair{certFile: tt.certFile, keyFile: keyFile, certPEM: []byte("cert"), keyPEM: []byte("key")}
			err := p.write()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("write() = %v, want error containing %q", err, tt.wantErr)
			}
			if _, err := os.Stat(keyFile); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("key file left behind after failed write (stat: %v)", err)
			}
			if b, _ := os.ReadFile(existing); string(b) != "keep me" {
				t.Errorf("existing file changed to %q", b)
			}
		})
	}
}

func TestIsHostname(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"vpn", true},
		{"vpn.example.com", true},
		{"a-b.c1", true},
		{"", false},
		{"10.0.0.1", false},
		{"::1", false},
		{"under_score", false},
		{"-lead.example", false},
		{"trail-.example", false},
		{"a..b", false},
		{"trailing.", false},
		{"*.example.com", false},
		{strings.Repeat("a", 64) + ".com", false},
	}
	for _, tt := range tests {
		if got := isHostname(tt.in); got != tt.want {
			t.Errorf("isHostname(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// TestFileErrorsSayThePathOnce checks the errors of reading and writing files: the os
// package's errors already name the path, and a message names it once.
func TestFileErrorsSayThePathOnce(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.key")
	crt := filepath.Join(dir, "x.crt")
	if err := os.WriteFile(crt, []byte("read before the key"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"missing key", func() error {
			_, err := loadKeyPair(crt, missing, "server")
			return err
		}(), "server key " + missing + " not found: create it with 'tunneld pki issue --dir DIR --server --name NAME' (it writes NAME.crt and NAME.key together)"},
		{"key is a directory", func() error {
			_, err := readFile(dir, "server key", "unused")
			return err
		}(), "read server key " + dir + ": is a directory"},
		{"missing file", func() error {
			_, err := readFile(missing, "client key", "create it with 'tunneld pki issue'")
			return err
		}(), "client key " + missing + " not found: create it with 'tunneld pki issue'"},
		{"create in missing directory", writeExclusive(filepath.Join(dir, "no", "x.key"), nil, keyFileMode),
			"create " + filepath.Join(dir, "no", "x.key") + ": no such file or directory"},
		{"path error of another path", pathError("read CRL", "a.pem", &fs.PathError{Op: "open", Path: "b.pem", Err: fs.ErrPermission}),
			"read CRL a.pem: open b.pem: permission denied"},
		{"rename", pathError("replace", "crl.pem", &os.LinkError{Op: "rename", Old: "crl.pem.tmp", New: "crl.pem", Err: fs.ErrPermission}),
			"replace crl.pem: permission denied"},
	}
	for _, tt := range tests {
		if tt.err == nil || tt.err.Error() != tt.want {
			t.Errorf("%s: error = %v, want %q", tt.name, tt.err, tt.want)
		}
	}
	// The cause stays visible to errors.Is.
	if err := pathError("read", "x", &fs.PathError{Op: "open", Path: "x", Err: syscall.ENOENT}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("pathError(ENOENT) = %v, not fs.ErrNotExist", err)
	}
}
