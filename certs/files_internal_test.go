package certs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
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
