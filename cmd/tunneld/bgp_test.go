package main

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestParseBGP(t *testing.T) {
	peer := []string{"65000@198.18.41.1"}
	for _, c := range []struct {
		name     string
		b        bgpOptions
		listen   string
		routerID string // want, if no error
		errs     []string
	}{
		{name: "off", b: bgpOptions{}},
		{name: "router ID from --listen", b: bgpOptions{asn: 65001, peers: peer}, listen: "198.18.40.1:443", routerID: "198.18.40.1"},
		{name: "router ID from the next hop", b: bgpOptions{asn: 65001, peers: peer, nextHop: "198.18.41.2"}, listen: "0.0.0.0:443", routerID: "198.18.41.2"},
		{name: "router ID given", b: bgpOptions{asn: 65001, peers: peer, routerID: "192.0.2.9"}, listen: "198.18.40.1:443", routerID: "192.0.2.9"},
		{name: "no router ID", b: bgpOptions{asn: 65001, peers: peer}, listen: "0.0.0.0:443", errs: []string{"--bgp-router-id: required"}},
		{name: "no peer", b: bgpOptions{asn: 65001}, listen: "198.18.40.1:443", errs: []string{"--bgp-peer: required"}},
		{name: "bad peer", b: bgpOptions{asn: 65001, peers: []string{"router"}}, listen: "198.18.40.1:443", errs: []string{"--bgp-peer:", "ASN@ADDRESS"}},
		{name: "bad next hops", b: bgpOptions{asn: 65001, peers: peer, routerID: "192.0.2.9", nextHop: "2001:db8::1", nextHop6: "192.0.2.1"},
			errs: []string{"--bgp-next-hop: \"2001:db8::1\": want an IPv4 address", "--bgp-next-hop6: \"192.0.2.1\": want an IPv6 address"}},
		{name: "settings without --bgp-asn", b: bgpOptions{peers: peer}, errs: []string{"--bgp-peer: needs --bgp-asn"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var errs []string
			got := parseBGP(c.b, c.listen, func(flag, format string, args ...any) {
				errs = append(errs, "--"+flag+": "+fmt.Sprintf(format, args...))
			})
			all := strings.Join(errs, "\n")
			for _, want := range c.errs {
				if !strings.Contains(all, want) {
					t.Errorf("errors %q, want one with %q", errs, want)
				}
			}
			if len(c.errs) > 0 {
				return
			}
			if len(errs) > 0 {
				t.Fatalf("errors %q", errs)
			}
			if c.b.asn == 0 {
				if got != nil {
					t.Errorf("parseBGP = %+v, want nil without --bgp-asn", got)
				}
				return
			}
			if got == nil || got.RouterID != netip.MustParseAddr(c.routerID) || len(got.Peers) != 1 {
				t.Errorf("parseBGP = %+v, want router ID %s and one peer", got, c.routerID)
			}
		})
	}
}
