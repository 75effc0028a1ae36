package service

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWarnKeyFile(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "server.key")
	if err := os.WriteFile(key, []byte("key"), 0o600); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	WarnKeyFile(log, key)
	if buf.Len() != 0 {
		t.Errorf("WarnKeyFile(0600 key) logged %q, want nothing", buf.String())
	}
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	WarnKeyFile(log, key)
	if got, want := buf.String(), `level=WARN msg="private key `+key+` has mode 0644, so its group or others can access it: run chmod 600 `+key+`"`; !strings.Contains(got, want) {
		t.Errorf("WarnKeyFile(0644 key) logged %q, want %q", got, want)
	}
}
