package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"testing"

	"tlsvpn/certs/certstest"
	"tlsvpn/internal/service"
	"tlsvpn/tunnel"
)

// testConfig returns a Config with a CA and a client certificate written
// to a temporary directory.
func testConfig(t *testing.T) Config {
	t.Helper()
	dir := t.TempDir()
	ca := certstest.NewCA(t)
	caFile := ca.WriteFiles(t, dir)
	certFile, keyFile := certstest.WriteCert(t, dir, "laptop", ca.ClientCert(t, "laptop"))
	return Config{Server: "vpn.example.com:443", Cert: certFile, Key: keyFile, CA: caFile, Congestion: service.SystemCongestion}
}

// TestNewRefuses checks New's messages, which tunnelc prints as they are,
// and that a bad setting is a usage error (exit status 2).
func TestNewRefuses(t *testing.T) {
	good := testConfig(t)
	tests := []struct {
		name  string
		edit  func(*Config)
		want  string
		usage bool
	}{
		{"no server", func(c *Config) { c.Server = "" }, "--server is required, e.g. --server vpn.example.com:443", true},
		{"no port", func(c *Config) { c.Server = "vpn.example.com" }, `--server "vpn.example.com": want HOST:PORT, e.g. vpn.example.com:443`, true},
		{"bad port", func(c *Config) { c.Server = "vpn.example.com:0" },
			`--server "vpn.example.com:0": the port must be a number from 1 to 65535 or a service name such as https`, true},
		{"server twice", func(c *Config) { c.Servers = []string{"vpn.example.com:443"} }, `--server "vpn.example.com:443" is given twice`, true},
		{"second server bad", func(c *Config) { c.Servers = []string{"vpn2.example.com"} }, `--server "vpn2.example.com": want HOST:PORT, e.g. vpn.example.com:443`, true},
		{"kill switch alone", func(c *Config) { c.KillSwitch = true }, "--kill-switch needs --full-tunnel", true},
		{"advertise not a CIDR", func(c *Config) { c.Advertise = []string{"198.18.20.1"} }, `--advertise "198.18.20.1": want a CIDR such as 198.18.20.0/24`, true},
		{"advertise host bits", func(c *Config) { c.Advertise = []string{"198.18.20.1/24"} },
			`--advertise "198.18.20.1/24" has host bits set; did you mean 198.18.20.0/24?`, true},
		{"advertise default", func(c *Config) { c.Advertise = []string{"::/0"} }, `--advertise "::/0": a default route cannot be advertised`, true},
		{"too many advertised", func(c *Config) {
			c.Advertise = nil
			for range tunnel.MaxRoutes + 1 {
				c.Advertise = append(c.Advertise, "198.18.20.0/24")
			}
		}, fmt.Sprintf("at most %d --advertise flags", tunnel.MaxRoutes), true},
		{"no key", func(c *Config) { c.Key = "" }, "--cert, --key and --ca are required, e.g. --cert laptop.crt --key laptop.key --ca ca.crt", true},
		{"missing CA file", func(c *Config) { c.CA = filepath.Join(filepath.Dir(c.CA), "missing.crt") }, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.edit(&cfg)
			c, err := New(cfg, nil)
			if err == nil {
				c.Close()
				t.Fatalf("New(%+v) = nil error", cfg)
			}
			if tt.want != "" && err.Error() != tt.want {
				t.Errorf("New: %q, want %q", err, tt.want)
			}
			var ue *service.UsageError
			if errors.As(err, &ue) != tt.usage {
				t.Errorf("New: %v is a usage error: %v, want %v", err, !tt.usage, tt.usage)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	cfg := testConfig(t)
	adv := []string{"198.18.20.0/24"}
	cfg.Advertise = adv
	var logs bytes.Buffer
	c, err := New(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	adv[0] = "10.0.0.0/8" // New keeps its own copy
	if c.cfg.TUN != DefaultTUN || c.cfg.Advertise[0] != "198.18.20.0/24" || c.congest != "" {
		t.Errorf("New filled in %+v (congestion %q)", c.cfg, c.congest)
	}
	if c.tls.ServerName != "vpn.example.com" {
		t.Errorf("TLS server name = %q, want the host of Server", c.tls.ServerName)
	}
	if logs.Len() != 0 {
		t.Errorf("New logged for a certificate that is fine:\n%s", &logs)
	}
}

// TestStatusBeforeRun: a client that has not started reports its settings,
// connecting, and nothing installed.
func TestStatusBeforeRun(t *testing.T) {
	cfg := testConfig(t)
	cfg.TUN, cfg.FullTunnel = "vpn0", true
	c, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st := c.Status()
	if st.Server != cfg.Server || st.TUN != "vpn0" || st.State != tunnel.StateConnecting || !st.FullTunnel || st.KillSwitch ||
		len(st.Addresses)+len(st.Routes)+len(st.DNS) != 0 || st.BytesIn+st.BytesOut != 0 {
		t.Errorf("Status() = %+v", st)
	}
}

// TestRunAfterClose: Close before Run leaves nothing to run, and Run then
// touches nothing (it would need root and a TUN device otherwise).
func TestRunAfterClose(t *testing.T) {
	c, err := New(testConfig(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Run(context.Background()); !errors.Is(err, errClosed) {
		t.Errorf("Run after Close = %v, want %v", err, errClosed)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

// TestRunMetricsTaken: the first thing Run opens is the metrics listener;
// when it fails, Run returns the listen error naming the flag once and
// has changed nothing, root or not.
func TestRunMetricsTaken(t *testing.T) {
	cfg := testConfig(t)
	busy := newBusyListener(t)
	cfg.Metrics = busy
	c, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Run(context.Background())
	if want := "--metrics " + busy + ": bind: address already in use"; err == nil || err.Error() != want {
		t.Fatalf("Run = %v, want %q", err, want)
	}
}

// newBusyListener returns the address of a TCP listener on loopback that
// stays open for the test.
func newBusyListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}
