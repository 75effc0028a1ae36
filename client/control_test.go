package client

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"tlsvpn/control"
	"tlsvpn/tunnel"
	"tlsvpn/tunnel/tunneltest"
)

func TestStatusOverControl(t *testing.T) {
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{})
	tc := srv.StartClient(t, "laptop")
	tunneltest.Eventually(t, func() bool { return tc.Client.Status().State == tunnel.StateUp }, "client not up")
	sd, _ := testServers(t, nil, "vpn.example.com:443", "vpn2.example.com:443")
	c := &Client{cfg: Config{Server: "vpn.example.com:443", TUN: "tunnelc0", FullTunnel: true, KillSwitch: true},
		sd: sd, stats: tc.Stats, tc: tc.Client}
	rc, _ := clientRouting("tunnelc0", tc.Config, true)
	c.view.set(rc, []netip.Addr{netip.MustParseAddr("100.64.0.1")})

	res, err := c.handle(context.Background(), "status", nil)
	if err != nil {
		t.Fatal(err)
	}
	st := res.(control.ClientStatus)
	half := netip.MustParsePrefix("0.0.0.0/1")
	if st.State != "up" || st.Server != "vpn.example.com:443" || st.ServerAddr == "" || !slices.Contains(st.Addresses, tc.Config.Addr) ||
		!slices.Contains(st.Routes, half) || len(st.DNS) != 1 || len(st.Servers) != 2 || !st.KillSwitch || !st.FullTunnel || st.Since.IsZero() || st.RTTMillis <= 0 {
		t.Errorf("status = %+v", st)
	}
	// The view is a copy: a later change of the routing config does not
	// alter what was reported.
	rc.Routes[0] = netip.MustParsePrefix("10.0.0.0/8")
	if again := c.Status(); !slices.Equal(again.Routes, st.Routes) {
		t.Errorf("status routes changed with the caller's slice: %v", again.Routes)
	}
	for _, tt := range []struct {
		cmd  string
		args []string
	}{{"kick", []string{"x"}}, {"status", []string{"now"}}, {"reconnect", []string{"elsewhere.example.com:443"}},
		{"reconnect", []string{"vpn.example.com:443", "vpn2.example.com:443"}}} {
		if _, err := c.handle(context.Background(), tt.cmd, tt.args); err == nil {
			t.Errorf("tunnelc answered %s %v", tt.cmd, tt.args)
		}
	}
}

// TestReconnectOverControl: 'tunnelc reconnect' replaces a live session
// at once and says what it does; naming a server makes it go first.
func TestReconnectOverControl(t *testing.T) {
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{})
	tc := srv.StartClient(t, "laptop")
	tunneltest.Eventually(t, func() bool { return tc.Client.Status().State == tunnel.StateUp }, "client not up")
	sd, _ := testServers(t, nil, "vpn1.example.com:443", "vpn2.example.com:443")
	c := &Client{sd: sd, stats: tc.Stats, tc: tc.Client}

	res, err := c.handle(context.Background(), "reconnect", []string{"vpn2.example.com:443"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := res.(Message).Message, "reconnecting to vpn2.example.com:443 first"; got != want {
		t.Errorf("reconnect answered %q, want %q", got, want)
	}
	tunneltest.Eventually(t, func() bool {
		st := tc.Client.Status()
		return st.State == tunnel.StateUp && st.Reconnects == 1
	}, "no new session after reconnect")
	sd.mu.Lock()
	first := sd.order.next(false)[0]
	sd.mu.Unlock()
	if first != 1 {
		t.Errorf("after 'reconnect vpn2.example.com:443' the next attempt starts with server %d, want 1", first)
	}
}
