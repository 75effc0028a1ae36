package server

import (
	"context"
	"net/netip"
	"testing"

	"tlsvpn/routing"
	"tlsvpn/routing/routingtest"
	"tlsvpn/tunnel"
)

// TestDesiredState renders what tunneld installs in each scenario, as the
// fake routing manager and firewall see it, without root.
func TestDesiredState(t *testing.T) {
	pfx, addr := netip.MustParsePrefix, netip.MustParseAddr
	v4 := routing.Config{Interface: "tunneld0", MTU: 1500, Addresses: []netip.Prefix{pfx("100.64.0.1/24")}}
	dual := v4
	dual.Addresses = append(dual.Addresses, pfx("fd00:64::1/64"))
	laptop := tunnel.Peer{Identity: "laptop", Addrs: []netip.Addr{addr("100.64.0.2")}}
	laptop6 := tunnel.Peer{Identity: "laptop", Addrs: []netip.Addr{addr("100.64.0.2"), addr("fd00:64::2")}}
	siteB := tunnel.Peer{Identity: "site-b", Addrs: []netip.Addr{addr("100.64.0.20"), addr("fd00:64::20")},
		Nets: []netip.Prefix{pfx("198.18.20.0/24"), pfx("2001:db8:20::/64")}, ReachClients: true}
	const addrs4 = "addr 100.64.0.1/24 dev tunneld0\nmtu 1500 dev tunneld0\n"
	const addrs6 = "addr 100.64.0.1/24 dev tunneld0\naddr fd00:64::1/64 dev tunneld0\nmtu 1500 dev tunneld0\n"
	for _, tc := range []struct {
		name                string
		base                routing.Config
		nat                 bool
		subnet6             netip.Prefix
		peers               []tunnel.Peer
		wantRouting, wantFW string
	}{
		{
			name: "split tunnel, routed (--route)", base: v4, peers: []tunnel.Peer{laptop},
			wantRouting: addrs4,
			wantFW:      "clamp-mss dev tunneld0\nisolate-clients dev tunneld0\n",
		},
		{
			name: "split or full tunnel with --nat, dual stack", base: dual, nat: true, subnet6: pfx("fd00:64::/64"), peers: []tunnel.Peer{laptop6},
			wantRouting: addrs6,
			wantFW: "clamp-mss dev tunneld0\nisolate-clients dev tunneld0\n" +
				"masquerade 100.64.0.0/24 not-via tunneld0\nmasquerade fd00:64::/64 not-via tunneld0\n",
		},
		{
			name: "site-to-site: site-b's networks routed to it, reach_clients", base: dual, subnet6: pfx("fd00:64::/64"),
			peers:       []tunnel.Peer{laptop6, siteB},
			wantRouting: addrs6 + "route 198.18.20.0/24 dev tunneld0\nroute 2001:db8:20::/64 dev tunneld0\n",
			wantFW: "clamp-mss dev tunneld0\nisolate-clients dev tunneld0\n" +
				"reach-clients 100.64.0.20/32\nreach-clients 198.18.20.0/24\nreach-clients 2001:db8:20::/64\nreach-clients fd00:64::20/128\n",
		},
		{
			name: "site-b gone: its routes go with it", base: dual, subnet6: pfx("fd00:64::/64"), peers: []tunnel.Peer{laptop6},
			wantRouting: addrs6,
			wantFW:      "clamp-mss dev tunneld0\nisolate-clients dev tunneld0\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mgr routingtest.Recorder
			var fw routingtest.FirewallRecorder
			rc, fc := peerState(tc.base, serverFirewall("tunneld0", tc.nat, pfx("100.64.0.0/24"), tc.subnet6), tc.peers)
			if err := mgr.Set(context.Background(), rc); err != nil {
				t.Fatal(err)
			}
			if err := fw.Set(context.Background(), fc); err != nil {
				t.Fatal(err)
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
