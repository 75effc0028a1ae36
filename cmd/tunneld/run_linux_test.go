package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRunStartErrors runs tunneld with arguments that fail before it needs root and checks
// the whole message: each thing is said once (no "listen X: listen tcp X: ..."), and a key
// readable by others is warned about with the fix.
func TestRunStartErrors(t *testing.T) {
	dir := pkiNewDir(t)
	pkiMustRun(t, "issue", "--dir", dir, "--server", "--name", "vpn.test")
	crt, key, ca := filepath.Join(dir, "vpn.test.crt"), filepath.Join(dir, "vpn.test.key"), filepath.Join(dir, "ca.crt")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	missing := filepath.Join(dir, "missing.key")
	looseKey := filepath.Join(dir, "loose.key")
	b, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(looseKey, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(looseKey, 0o644); err != nil {
		t.Fatal(err)
	}
	warning := "private key " + looseKey + " has mode 0644, so its group or others can access it: run chmod 600 " + looseKey
	tests := []struct {
		name       string
		key        string
		want       string
		wantStderr string // "" means: no key warning
	}{
		{"missing key", missing,
			"server key " + missing + " not found: create it with 'tunneld pki issue --dir DIR --server --name NAME' (it writes NAME.crt and NAME.key together)", ""},
		{"key is a directory", dir, "read server key " + dir + ": is a directory", ""},
		{"listen address taken", key, "--listen " + addr + ": bind: address already in use", ""},
		{"key readable by others", looseKey, "--listen " + addr + ": bind: address already in use", warning},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The timeout only bounds a run that wrongly gets past the listen.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			err := run(ctx, []string{"--cert", crt, "--key", tt.key, "--ca", ca, "--listen", addr,
				"--state-dir", "", "--tun", "i14arun0"}, &stdout, &stderr)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("run = %v, want %q", err, tt.want)
			}
			if got := strings.Contains(stderr.String(), "chmod 600"); got != (tt.wantStderr != "") || !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr = %q, want a key warning %q", stderr.String(), tt.wantStderr)
			}
		})
	}
}
