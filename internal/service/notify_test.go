package service

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// fakeSystemd listens where NOTIFY_SOCKET points, as systemd does for a
// Type=notify unit, and returns the datagrams it receives.
func fakeSystemd(t *testing.T) func() string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return func() string {
		t.Helper()
		buf := make([]byte, 4096)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no sd_notify message: %v", err)
		}
		return string(buf[:n])
	}
}

func TestNotifyReadyAndStatus(t *testing.T) {
	recv := fakeSystemd(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	NotifyReady(log, "listening on 0.0.0.0:443")
	if got, want := recv(), "READY=1\nSTATUS=listening on 0.0.0.0:443"; got != want {
		t.Errorf("ready: got %q, want %q", got, want)
	}
	NotifyStatus(log, "3 sessions")
	if got, want := recv(), "STATUS=3 sessions"; got != want {
		t.Errorf("status: got %q, want %q", got, want)
	}
	if logs.Len() > 0 {
		t.Errorf("logged: %s", logs.String())
	}
}

// A reload is bracketed: systemd hears RELOADING=1 (with the monotonic
// clock systemd 253+ wants) before the reload runs and READY=1 only after.
func TestNotifyReload(t *testing.T) {
	recv := fakeSystemd(t)
	done := NotifyReloading(slog.New(slog.DiscardHandler))
	before := recv()
	if !regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=[0-9]+\nSTATUS=reloading$`).MatchString(before) {
		t.Errorf("before the reload: %q", before)
	}
	done()
	if got := recv(); !strings.HasPrefix(got, "READY=1\n") {
		t.Errorf("after the reload: %q, want READY=1 first", got)
	}
}

func TestNotifyStoppingWhenContextEnds(t *testing.T) {
	recv := fakeSystemd(t)
	ctx, cancel := context.WithCancel(context.Background())
	NotifyStopping(ctx, slog.New(slog.DiscardHandler))
	cancel()
	if got, want := recv(), "STOPPING=1\nSTATUS=stopping"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// Outside systemd nothing is sent and nothing is logged; a socket that
// is gone is logged, not fatal.
func TestNotifyWithoutSystemd(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	t.Setenv("NOTIFY_SOCKET", "")
	NotifyReady(log, "up")
	if logs.Len() > 0 {
		t.Errorf("without NOTIFY_SOCKET, logged: %s", logs.String())
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone"))
	NotifyReady(log, "up")
	if !strings.Contains(logs.String(), "sd_notify") {
		t.Errorf("a failed notification was not logged: %q", logs.String())
	}
}
