package server

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"tlsvpn/control"
)

func TestConfigDefaults(t *testing.T) {
	c := Config{}.withDefaults()
	if c.Listen != "0.0.0.0:443" || c.Subnet != netip.MustParsePrefix("100.64.0.0/24") || c.TUN != "tunneld0" || c.MTU != 1500 ||
		c.Control != control.DefaultPath("tunneld0") || c.Subnet6.IsValid() {
		t.Errorf("defaults = %+v", c)
	}
	if c := (Config{TUN: "vpn1", NoControl: true}).withDefaults(); c.Control != "" {
		t.Errorf("NoControl: control socket %q, want none", c.Control)
	}
	for _, tc := range []struct {
		c    Config
		want string
	}{
		{Config{TUN: "tunneld0"}, "/var/lib/tlsvpn/tunneld0"},
		{Config{TUN: "vpn1"}, "/var/lib/tlsvpn/vpn1"},
		{Config{TUN: "vpn1", StateDir: "/srv/vpn"}, "/srv/vpn"},
		{Config{TUN: "vpn1", StateDir: "/srv/vpn", MemoryLeases: true}, ""},
	} {
		if got := tc.c.stateDir(); got != tc.want {
			t.Errorf("state dir of %+v = %q, want %q", tc.c, got, tc.want)
		}
	}
	if err := (Config{Cert: "c", Key: "k", CA: "ca"}).withDefaults().validate(); err != nil {
		t.Errorf("validate(defaults) = %v", err)
	}
	bad := Config{Subnet: netip.MustParsePrefix("fd00::/64"), MTU: 100}.withDefaults()
	err := bad.validate()
	for _, want := range []string{"a certificate, its key and a CA are required", "subnet fd00::/64: want IPv4", "MTU 100: want 576"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validate(%+v) = %v, want it to say %q", bad, err, want)
		}
	}
}

// shortDir is a temporary directory with a path short enough for a unix
// socket in it (t.TempDir's, named after the test, can exceed 108 bytes).
func shortDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "srv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// testConfig is a configuration that New accepts up to the files it
// names (none here): an instance name and subnet no host uses, and its
// state directory and control socket in dir.
func testConfig(dir string) Config {
	return Config{
		Cert: filepath.Join(dir, "missing.crt"), Key: filepath.Join(dir, "missing.key"), CA: filepath.Join(dir, "missing-ca.crt"),
		TUN: "srvunit0", Subnet: netip.MustParsePrefix("100.127.250.0/24"),
		StateDir: filepath.Join(dir, "state"), Control: filepath.Join(dir, "run", "srvunit0.sock"), Congestion: "system",
	}
}

// TestNewRefusesBeforeTouching: New checks in order and undoes what it
// took when a later step fails (no root needed: it fails before the TUN).
func TestNewRefusesBeforeTouching(t *testing.T) {
	ctx := context.Background()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	t.Run("a live control socket: another instance runs, nothing else is touched", func(t *testing.T) {
		cfg := testConfig(shortDir(t))
		other, err := control.Listen(cfg.Control, control.Options{})
		if err != nil {
			t.Fatal(err)
		}
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			other.Serve(sctx, func(context.Context, string, []string) (any, error) { return nil, nil })
		}()
		t.Cleanup(func() {
			cancel()
			<-done
			other.Close()
		})
		if _, err := New(ctx, cfg, Options{Logger: log}); err == nil || !strings.Contains(err.Error(), "another instance is running") {
			t.Fatalf("New = %v, want the control socket's refusal", err)
		}
		if _, err := os.Stat(cfg.StateDir); !os.IsNotExist(err) {
			t.Errorf("state dir after the refusal: %v; want none created", err)
		}
	})

	t.Run("certificates that do not load: the state dir and control socket are let go", func(t *testing.T) {
		cfg := testConfig(shortDir(t))
		if _, err := New(ctx, cfg, Options{Logger: log}); err == nil || !strings.Contains(err.Error(), "missing.crt") {
			t.Fatalf("New = %v, want the certificate's error", err)
		}
		if _, err := os.Stat(cfg.Control); !os.IsNotExist(err) {
			t.Errorf("control socket after the failure: %v; want it removed", err)
		}
		lock, err := lockStateDir(cfg.StateDir, "srvunit0")
		if err != nil {
			t.Fatalf("state dir still held after the failure: %v", err)
		}
		lock.Close()
		if _, err := os.Stat(filepath.Join(cfg.StateDir, "leases.json")); err != nil {
			t.Errorf("leases file after the failure: %v; want the one made at start", err)
		}
	})
}
