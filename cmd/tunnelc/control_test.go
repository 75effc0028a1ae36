package main

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"tlsvpn/control"
	"tlsvpn/tunnel"
	"tlsvpn/tunnel/tunneltest"
)

func TestClientSourceStatus(t *testing.T) {
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{})
	c := srv.StartClient(t, "laptop")
	tunneltest.Eventually(t, func() bool { return c.Client.Status().State == tunnel.StateUp }, "client not up")
	view := new(tunnelView)
	rc, _ := clientRouting("tunnelc0", c.Config, true)
	view.set(rc, []netip.Addr{netip.MustParseAddr("100.64.0.1")})
	cs := &clientSource{client: c.Client, stats: c.Stats, view: view, server: "vpn.example.com:443", tun: "tunnelc0", fullTunnel: true, killSwitch: true}

	res, err := cs.handle(context.Background(), "status", nil)
	if err != nil {
		t.Fatal(err)
	}
	st := res.(control.ClientStatus)
	half := netip.MustParsePrefix("0.0.0.0/1")
	if st.State != "up" || st.Server != "vpn.example.com:443" || st.ServerAddr == "" || !slices.Contains(st.Addresses, c.Config.Addr) ||
		!slices.Contains(st.Routes, half) || len(st.DNS) != 1 || !st.KillSwitch || !st.FullTunnel || st.Since.IsZero() || st.RTTMillis <= 0 {
		t.Errorf("status = %+v", st)
	}
	// The view is a copy: a later change of the routing config does not
	// alter what was reported.
	rc.Routes[0] = netip.MustParsePrefix("10.0.0.0/8")
	if again := cs.status(); !slices.Equal(again.Routes, st.Routes) {
		t.Errorf("status routes changed with the caller's slice: %v", again.Routes)
	}
	if _, err := cs.handle(context.Background(), "kick", []string{"x"}); err == nil {
		t.Error("tunnelc answered kick")
	}
}
