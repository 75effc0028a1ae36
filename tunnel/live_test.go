package tunnel_test

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"tlsvpn/tunnel"
	"tlsvpn/tunnel/tunneltest"
)

// TestSetLive: a change of the pushed routes closes only the sessions
// that use them (not those with routes of their own), a DNS change closes
// every session, and other settings apply to new sessions without closing
// any.
func TestSetLive(t *testing.T) {
	lanA, lanA2 := netip.MustParsePrefix("198.18.10.0/24"), netip.MustParsePrefix("198.18.11.0/24")
	own := []netip.Prefix{netip.MustParsePrefix("198.18.99.0/24")}
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{
		Routes:    []netip.Prefix{lanA},
		Keepalive: 15 * time.Second,
		Policy: func(id string) tunnel.Policy {
			if id == "own" {
				return tunnel.Policy{Routes: own}
			}
			return tunnel.Policy{}
		},
	})
	plain, mine := srv.StartClient(t, "plain"), srv.StartClient(t, "own")
	if !slices.Equal(plain.Config.Routes, []netip.Prefix{lanA}) || !slices.Equal(mine.Config.Routes, own) {
		t.Fatalf("routes: plain %v, own %v", plain.Config.Routes, mine.Config.Routes)
	}
	base := srv.Server.Live()

	for _, tc := range []struct {
		name   string
		change func(*tunnel.Live)
		closed []string
	}{
		{"nothing changed", func(*tunnel.Live) {}, nil},
		{"keepalive and limits: new sessions only", func(l *tunnel.Live) {
			l.Keepalive, l.MaxConnections, l.QueueLen, l.HandshakeTimeout = 5*time.Second, 100, 64, 3*time.Second
		}, nil},
		{"routes: the sessions without routes of their own", func(l *tunnel.Live) { l.Routes = []netip.Prefix{lanA, lanA2} }, []string{"plain"}},
		{"DNS: every session (plain is gone)", func(l *tunnel.Live) { l.DNS = []netip.Addr{netip.MustParseAddr("100.64.0.53")} }, []string{"own"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := srv.Server.Live()
			tc.change(&l)
			if got := srv.Server.SetLive(l); !slices.Equal(got, tc.closed) {
				t.Errorf("SetLive closed %v, want %v", got, tc.closed)
			}
			// These test clients do not reconnect: the next step starts
			// once the closed sessions are gone.
			waitGone(t, srv.Server, tc.closed)
		})
	}
	// A new session gets the settings in force.
	c := srv.StartClient(t, "late")
	want := tunnel.Config{Routes: []netip.Prefix{lanA, lanA2}, DNS: []netip.Addr{netip.MustParseAddr("100.64.0.53")}, Keepalive: 5 * time.Second}
	if !slices.Equal(c.Config.Routes, want.Routes) || !slices.Equal(c.Config.DNS, want.DNS) || c.Config.Keepalive != want.Keepalive {
		t.Errorf("new session's CONFIG: routes %v dns %v keepalive %v, want %v %v %v",
			c.Config.Routes, c.Config.DNS, c.Config.Keepalive, want.Routes, want.DNS, want.Keepalive)
	}
	// Zero values are the defaults, as in ServerConfig.
	srv.Server.SetLive(tunnel.Live{})
	if got := srv.Server.Live(); got.HandshakeTimeout != base.HandshakeTimeout || got.HelloTimeout != base.HelloTimeout {
		t.Errorf("Live after SetLive(zero) = %+v, want default timeouts %v and %v", got, base.HandshakeTimeout, base.HelloTimeout)
	}
}

// waitGone waits until no identity in ids has a session.
func waitGone(t *testing.T, srv *tunnel.Server, ids []string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := 0
		for _, si := range srv.SessionList() {
			if slices.Contains(ids, si.Identity) {
				left++
			}
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the sessions of %v still registered 10 s after they were closed", left, ids)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLimiterSetConfig: limits change on a running Limiter without taking
// back what is held; the handshake slots keep their size.
func TestLimiterSetConfig(t *testing.T) {
	lim := tunnel.NewLimiter(tunnel.LimitConfig{MaxClients: 1, MaxHandshakes: 4})
	releaseA, err := lim.AcquireSession("a")
	if err != nil {
		t.Fatal(err)
	}
	defer releaseA()
	if _, err := lim.AcquireSession("b"); !errors.Is(err, tunnel.ErrTooManyClients) {
		t.Fatalf("b at MaxClients 1: %v, want ErrTooManyClients", err)
	}
	lim.SetConfig(tunnel.LimitConfig{MaxClients: 2, MaxHandshakes: 100, HandshakeRate: 7})
	releaseB, err := lim.AcquireSession("b")
	if err != nil {
		t.Fatalf("b at MaxClients 2: %v", err)
	}
	defer releaseB()
	got := lim.Config()
	if got.MaxClients != 2 || got.HandshakeRate != 7 || got.MaxHandshakes != 4 || got.HandshakeBurst != tunnel.DefaultHandshakeBurst {
		t.Errorf("Config() = %+v, want MaxClients 2, HandshakeRate 7, MaxHandshakes kept at 4, default burst", got)
	}
	// Lowering the limit refuses newcomers and keeps who is there.
	lim.SetConfig(tunnel.LimitConfig{MaxClients: 1})
	if _, err := lim.AcquireSession("c"); !errors.Is(err, tunnel.ErrTooManyClients) {
		t.Errorf("c at MaxClients 1: %v, want ErrTooManyClients", err)
	}
	if u := lim.Usage(); u.Clients != 2 {
		t.Errorf("clients held = %d, want 2", u.Clients)
	}
}
