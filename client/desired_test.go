package client

import (
	"context"
	"net/netip"
	"testing"

	"tlsvpn/routing/routingtest"
	"tlsvpn/tunnel"
)

// TestDesiredState renders what tunnelc installs in each scenario, as the
// fake routing manager and firewall see it, without root.
func TestDesiredState(t *testing.T) {
	pfx := netip.MustParsePrefix
	base := tunnel.Config{Addr: pfx("100.64.0.2/24"), ServerAddr: netip.MustParseAddr("100.64.0.1"), MTU: 1500}
	dual := base
	dual.Addr6, dual.Server6 = pfx("fd00:64::2/64"), netip.MustParseAddr("fd00:64::1")
	server := []netip.AddrPort{netip.MustParseAddrPort("198.18.0.1:443"), netip.MustParseAddrPort("[2001:db8:1::1]:443")}
	with := func(c tunnel.Config, routes ...string) tunnel.Config {
		for _, r := range routes {
			c.Routes = append(c.Routes, pfx(r))
		}
		return c
	}
	for _, tc := range []struct {
		name                string
		cfg                 tunnel.Config
		full, kill, gateway bool
		wantRouting, wantFW string
		wantFull            bool
	}{
		{
			name:        "split tunnel to a LAN (pushed --route)",
			cfg:         with(base, "198.18.10.0/24"),
			wantRouting: "addr 100.64.0.2/24 dev tunnelc0\nmtu 1500 dev tunnelc0\nroute 198.18.10.0/24 dev tunnelc0\n",
			wantFW:      "",
		},
		{
			name: "split tunnel, dual stack",
			cfg:  with(dual, "198.18.10.0/24", "2001:db8:10::/64"),
			wantRouting: "addr 100.64.0.2/24 dev tunnelc0\naddr fd00:64::2/64 dev tunnelc0\nmtu 1500 dev tunnelc0\n" +
				"route 198.18.10.0/24 dev tunnelc0\nroute 2001:db8:10::/64 dev tunnelc0\n",
		},
		{
			name: "full tunnel (--full-tunnel), IPv4 only",
			cfg:  base, full: true, wantFull: true,
			wantRouting: "addr 100.64.0.2/24 dev tunnelc0\nmtu 1500 dev tunnelc0\nroute 0.0.0.0/1 dev tunnelc0\nroute 128.0.0.0/1 dev tunnelc0\n",
		},
		{
			name: "full tunnel pushed by the server (0.0.0.0/0, ::/0), dual stack",
			cfg:  with(dual, "0.0.0.0/0", "::/0"), wantFull: true,
			wantRouting: "addr 100.64.0.2/24 dev tunnelc0\naddr fd00:64::2/64 dev tunnelc0\nmtu 1500 dev tunnelc0\n" +
				"route 0.0.0.0/1 dev tunnelc0\nroute 128.0.0.0/1 dev tunnelc0\nroute 8000::/1 dev tunnelc0\nroute ::/1 dev tunnelc0\n",
		},
		{
			name: "public Wi-Fi: full tunnel + kill switch, dual stack",
			cfg:  dual, full: true, kill: true, wantFull: true,
			wantRouting: "addr 100.64.0.2/24 dev tunnelc0\naddr fd00:64::2/64 dev tunnelc0\nmtu 1500 dev tunnelc0\n" +
				"route 0.0.0.0/1 dev tunnelc0\nroute 128.0.0.0/1 dev tunnelc0\nroute 8000::/1 dev tunnelc0\nroute ::/1 dev tunnelc0\n",
			wantFW: "kill-switch allow tcp 198.18.0.1:443\nkill-switch allow tcp [2001:db8:1::1]:443\nkill-switch dev tunnelc0\n",
		},
		{
			name: "site gateway (--advertise): the other site's LAN pushed, MSS clamped",
			cfg:  with(base, "198.18.10.0/24"), gateway: true,
			wantRouting: "addr 100.64.0.2/24 dev tunnelc0\nmtu 1500 dev tunnelc0\nroute 198.18.10.0/24 dev tunnelc0\n",
			wantFW:      "clamp-mss dev tunnelc0\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mgr routingtest.Recorder
			var fw routingtest.FirewallRecorder
			rc, full := clientRouting("tunnelc0", tc.cfg, tc.full)
			if err := mgr.Set(context.Background(), rc); err != nil {
				t.Fatal(err)
			}
			if tc.kill || tc.gateway {
				if err := fw.Set(context.Background(), clientFirewall("tunnelc0", tc.kill, tc.gateway, server)); err != nil {
					t.Fatal(err)
				}
			}
			if full != tc.wantFull {
				t.Errorf("full tunnel = %v, want %v", full, tc.wantFull)
			}
			if got := mgr.String(); got != tc.wantRouting {
				t.Errorf("routing:\n%s\nwant:\n%s", got, tc.wantRouting)
			}
			if got := fw.String(); got != tc.wantFW {
				t.Errorf("firewall:\n%s\nwant:\n%s", got, tc.wantFW)
			}
		})
	}
}
