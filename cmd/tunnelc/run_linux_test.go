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

	"tlsvpn/certs"
)

// TestRunStartErrors runs tunnelc with arguments that fail before it dials or needs root and
// checks the whole message: each thing is said once, and a key readable by others is warned
// about with the fix.
func TestRunStartErrors(t *testing.T) {
	dir := t.TempDir()
	ca, err := certs.InitCA(dir, certs.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := certs.Issue(dir, certs.IssueRequest{Name: "laptop", Client: true})
	if err != nil {
		t.Fatal(err)
	}
	looseKey := filepath.Join(dir, "loose.key")
	b, err := os.ReadFile(f.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(looseKey, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(looseKey, 0o640); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	missing := filepath.Join(dir, "missing.key")
	warning := "private key " + looseKey + " has mode 0640, so its group or others can access it: run chmod 600 " + looseKey
	tests := []struct {
		name       string
		key        string
		want       string
		wantStderr string // "" means: no key warning
	}{
		{"missing key", missing,
			"client key " + missing + " not found: create it with 'tunneld pki issue --dir DIR --client --name NAME' (it writes NAME.crt and NAME.key together)", ""},
		{"metrics address taken", f.KeyFile, "--metrics " + addr + ": bind: address already in use", ""},
		{"key readable by group", looseKey, "--metrics " + addr + ": bind: address already in use", warning},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The timeout only bounds a run that wrongly gets past the metrics listener.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			err := run(ctx, []string{"--server", "127.0.0.1:9", "--cert", f.CertFile, "--key", tt.key, "--ca", ca.CertFile,
				"--metrics", addr, "--tun", "i14arunc0"}, &stdout, &stderr)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("run = %v, want %q", err, tt.want)
			}
			if got := strings.Contains(stderr.String(), "chmod 600"); got != (tt.wantStderr != "") || !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr = %q, want a key warning %q", stderr.String(), tt.wantStderr)
			}
		})
	}
}
