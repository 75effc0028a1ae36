package tunnel_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"tlsvpn/tun"
	"tlsvpn/tun/tuntest"
	"tlsvpn/tunnel"
	"tlsvpn/tunnel/tunneltest"
)

// TestClientServerNameHook: the certificate name each connection checks
// comes from ServerName when set (a dialer that picked one of several
// servers), so a TLS config made for another name still connects to the
// server it reached, and a wrong answer is refused.
func TestClientServerNameHook(t *testing.T) {
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{})
	for _, tt := range []struct {
		name, hook string
		ok         bool
	}{
		{"hook names the server", "server", true},
		{"no answer keeps TLS.ServerName", "", false},
		{"hook names another", "elsewhere", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tunnel.NewClient(tunnel.ClientConfig{
				Dial:       srv.Listener.Dial,
				TLS:        srv.CA.ClientConfig(t, "laptop", "vpn-first.example.com"),
				ServerName: func() string { return tt.hook },
				Setup:      func(context.Context, tunnel.Config) (tun.Device, error) { return nil, nil },
			})
			if err != nil {
				t.Fatal(err)
			}
			tc, _, err := c.Connect(context.Background())
			if tc != nil {
				tc.Close()
			}
			if (err == nil) != tt.ok {
				t.Errorf("Connect with ServerName() = %q: err = %v, want success %v", tt.hook, err, tt.ok)
			}
		})
	}
}

// runClient runs a client with dial and backoff against srv until the
// test ends; up receives a value when a session is set up.
func runClient(t *testing.T, srv *tunneltest.Server, dial func(ctx context.Context) (net.Conn, error), backoff time.Duration) (c *tunnel.Client, up <-chan struct{}) {
	t.Helper()
	dev := tuntest.NewChannelDevice("cli0", 1500, 16, 16)
	ready := make(chan struct{}, 1)
	c, err := tunnel.NewClient(tunnel.ClientConfig{
		Dial:       dial,
		TLS:        srv.CA.ClientConfig(t, "laptop", "server"),
		MinBackoff: backoff,
		Setup: func(context.Context, tunnel.Config) (tun.Device, error) {
			select {
			case ready <- struct{}{}:
			default:
			}
			return dev, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		dev.Close()
	})
	return c, ready
}

// TestClientKickEndsBackoff: a Kick while the client waits to retry (a
// long backoff) starts the next attempt at once: after a wake-up or
// 'tunnelc reconnect' the user does not wait out a backoff of minutes.
func TestClientKickEndsBackoff(t *testing.T) {
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{})
	var dials atomic.Int32
	c, up := runClient(t, srv, func(ctx context.Context) (net.Conn, error) {
		if dials.Add(1) == 1 {
			return nil, errors.New("network down")
		}
		return srv.Listener.Dial(ctx)
	}, time.Hour) // only a kick gets past the first failure
	tunneltest.Eventually(t, func() bool { return c.Status().State == tunnel.StateBackingOff }, "client not backing off")
	c.Kick("test")
	select {
	case <-up:
	case <-time.After(10 * time.Second):
		t.Fatalf("no session 10s after a kick during a one-hour backoff (dials %d)", dials.Load())
	}
}

// TestClientKickWhileConnectingIgnored: a kick during an attempt (about
// a connection already gone) does not replace the session that attempt
// brings up.
func TestClientKickWhileConnectingIgnored(t *testing.T) {
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{})
	var c *tunnel.Client
	assigned := make(chan struct{})
	c, up := runClient(t, srv, func(ctx context.Context) (net.Conn, error) {
		<-assigned
		c.Kick("stale") // e.g. the old local address went away
		return srv.Listener.Dial(ctx)
	}, 0)
	close(assigned)
	<-up
	tunneltest.Eventually(t, func() bool { return c.Status().State == tunnel.StateUp }, "client not up")
	// A ping round trip on the session proves Run went back to its
	// select: a pending kick would have been taken by now.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	c.ProbeRTT(ctx, 0)
	cancel()
	if st := c.Status(); st.State != tunnel.StateUp || st.Reconnects != 0 {
		t.Errorf("after a kick during the attempt: state %s, %d reconnects; want up, 0", st.State, st.Reconnects)
	}
}
