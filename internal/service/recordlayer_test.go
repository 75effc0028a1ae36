package service

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"tlsvpn/tunnel"
)

// TestRecordLayerDefault: the start-up line says which AES-GCM carries the
// records. By default (no --own-aes-gcm) it is Go's, and RecordLayer does
// not ask for the own one; with --own-aes-gcm it is the own one only where
// it can run, and a warning says so where it cannot.
func TestRecordLayerDefault(t *testing.T) {
	if err := tunnel.OwnRecordLayer(); err != nil {
		t.Skipf("the own record layer is off in this process (%v)", err)
	}
	for _, tc := range []struct {
		name   string
		stdlib bool
		own    bool
		want   bool   // RecordLayer's answer: use the own AES-GCM
		line   string // in the start-up line
	}{
		{"default", false, false, false, `msg="data phase: TLS records by tlsvpn's record layer with Go's AES-GCM"`},
		{"stdlib", true, false, false, `msg="data phase: TLS records by crypto/tls (--stdlib-tls-records)"`},
		{"stdlib with own", true, true, false, `msg="data phase: TLS records by crypto/tls (--stdlib-tls-records)"`},
		{"own", false, true, tunnel.OwnAESGCMCheck() == nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			got := RecordLayer(slog.New(slog.NewTextHandler(&buf, nil)), tc.stdlib, tc.own)
			if got != tc.want {
				t.Errorf("RecordLayer(stdlib %v, own %v) = %v, want %v", tc.stdlib, tc.own, got, tc.want)
			}
			line := tc.line
			if line == "" && tc.want {
				line = `level=INFO msg="data phase: TLS records by tlsvpn's record layer with tlsvpn's own AES-GCM (--own-aes-gcm)"`
			} else if line == "" {
				line = `level=WARN msg="--own-aes-gcm: tlsvpn's own AES-GCM cannot run here; using Go's"`
			}
			if out := buf.String(); strings.Count(out, "\n") != 1 || !strings.Contains(out, line) {
				t.Errorf("RecordLayer(stdlib %v, own %v) logged %q, want one line with %q", tc.stdlib, tc.own, out, line)
			}
		})
	}
}
