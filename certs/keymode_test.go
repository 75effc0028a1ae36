package certs_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"tlsvpn/certs"
)

func TestCheckKeyFileMode(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		mode    fs.FileMode
		wantErr string // "" means no complaint; %s is the file
	}{
		{0o600, ""},
		{0o400, ""},
		{0o700, ""},
		{0o640, "private key %[1]s has mode 0640, so its group or others can access it: run chmod 600 %[1]s"},
		{0o644, "private key %[1]s has mode 0644, so its group or others can access it: run chmod 600 %[1]s"},
		{0o604, "private key %[1]s has mode 0604, so its group or others can access it: run chmod 600 %[1]s"},
		{0o620, "private key %[1]s has mode 0620, so its group or others can access it: run chmod 600 %[1]s"},
		{0o666, "private key %[1]s has mode 0666, so its group or others can access it: run chmod 600 %[1]s"},
	} {
		t.Run(tt.mode.String(), func(t *testing.T) {
			path := filepath.Join(dir, tt.mode.String()[1:]+".key")
			if err := os.WriteFile(path, []byte("key"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil { // exact, whatever the umask
				t.Fatal(err)
			}
			err := certs.CheckKeyFileMode(path)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckKeyFileMode(%v) = %v, want nil", tt.mode, err)
				}
				return
			}
			if want := fmt.Sprintf(tt.wantErr, path); err == nil || err.Error() != want {
				t.Fatalf("CheckKeyFileMode(%v) = %v, want %q", tt.mode, err, want)
			}
		})
	}
	// The mode that counts is the key's, not a symlink's (always 0777).
	link := filepath.Join(dir, "link.key")
	if err := os.Symlink(filepath.Join(dir, "rw-------.key"), link); err != nil {
		t.Fatal(err)
	}
	if err := certs.CheckKeyFileMode(link); err != nil {
		t.Errorf("CheckKeyFileMode(symlink to a 0600 key) = %v, want nil", err)
	}
	missing := filepath.Join(dir, "missing.key")
	err := certs.CheckKeyFileMode(missing)
	if want := "check permissions of private key " + missing + ": no such file or directory"; err == nil || err.Error() != want || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("CheckKeyFileMode(missing) = %v, want %q wrapping fs.ErrNotExist", err, want)
	}
}
