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
	c := &Client{cfg: Config{Server: "vpn.example.com:443", TUN: "tunnelc0", FullTunnel: true, KillSwitch: true},
		stats: tc.Stats, tc: tc.Client}
	rc, _ := clientRouting("tunnelc0", tc.Config, true)
	c.view.set(rc, []netip.Addr{netip.MustParseAddr("100.64.0.1")})

	res, err := c.handle(context.Background(), "status", nil)
	if err != nil {
		t.Fatal(err)
	}
	st := res.(control.ClientStatus)
	half := netip.MustParsePrefix("0.0.0.0/1")
	if st.State != "up" || st.Server != "vpn.example.com:443" || st.ServerAddr == "" || !slices.Contains(st.Addresses, tc.Config.Addr) ||
		!slices.Contains(st.Routes, half) || len(st.DNS) != 1 || !st.KillSwitch || !st.FullTunnel || st.Since.IsZero() || st.RTTMillis <= 0 {
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
	}{{"kick", []string{"x"}}, {"status", []string{"now"}}} {
		if _, err := c.handle(context.Background(), tt.cmd, tt.args); err == nil {
			t.Errorf("tunnelc answered %s %v", tt.cmd, tt.args)
		}
	}
}
