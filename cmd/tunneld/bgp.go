package main

import (
	"net"
	"net/netip"

	"github.com/spf13/pflag"

	"tlsvpn/routing/bgp"
)

// bgpOptions are the --bgp- flags: routes that follow the client (a
// gateway announces the tunnel addresses of the clients it holds).
type bgpOptions struct {
	asn               uint32
	routerID          string
	peers             []string
	nextHop, nextHop6 string
}

func addBGPFlags(fs *pflag.FlagSet, b *bgpOptions) {
	fs.Uint32Var(&b.asn, "bgp-asn", 0, "announce over BGP, as this AS number, a host route to each connected client's tunnel addresses and the networks accepted behind it, so that routers send their traffic to the gateway holding the client now (routed mode; 0: no BGP). Needs --bgp-peer")
	fs.StringVar(&b.routerID, "bgp-router-id", "", "BGP router ID, an IPv4 address unique among the routers (default: --bgp-next-hop, else the --listen address when it is a specific IPv4 address)")
	fs.StringArrayVar(&b.peers, "bgp-peer", nil, "router to announce to, ASN@ADDRESS, e.g. 65000@198.18.20.1 (:PORT after the address if not 179; repeatable). tunneld opens the session; nothing the router announces is used")
	fs.StringVar(&b.nextHop, "bgp-next-hop", "", "IPv4 address routers send clients' traffic to: this gateway's address on their network (default: the local address of each BGP session)")
	fs.StringVar(&b.nextHop6, "bgp-next-hop6", "", "IPv6 next hop for the clients' IPv6 tunnel addresses (--subnet6); without it only IPv4 routes are announced")
}

// parseBGP checks the --bgp- flags and returns the speaker's
// configuration (nil: no BGP). listen is --listen, for the router ID.
func parseBGP(b bgpOptions, listen string, bad func(flag, format string, args ...any)) *bgp.Config {
	if b.asn == 0 {
		for flag, set := range map[string]bool{"bgp-router-id": b.routerID != "", "bgp-peer": len(b.peers) > 0,
			"bgp-next-hop": b.nextHop != "", "bgp-next-hop6": b.nextHop6 != ""} {
			if set {
				bad(flag, "needs --bgp-asn, the gateway's AS number")
			}
		}
		return nil
	}
	c := &bgp.Config{ASN: b.asn}
	addr := func(flag, s string, v6 bool) netip.Addr {
		if s == "" {
			return netip.Addr{}
		}
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" || a.Unmap().Is4() == v6 {
			want := "an IPv4 address"
			if v6 {
				want = "an IPv6 address"
			}
			bad(flag, "%q: want %s", s, want)
			return netip.Addr{}
		}
		return a.Unmap()
	}
	c.NextHop = addr("bgp-next-hop", b.nextHop, false)
	c.NextHop6 = addr("bgp-next-hop6", b.nextHop6, true)
	c.RouterID = addr("bgp-router-id", b.routerID, false)
	if !c.RouterID.IsValid() && b.routerID == "" {
		c.RouterID = c.NextHop
		if host, _, err := net.SplitHostPort(listen); err == nil && !c.RouterID.IsValid() {
			if a, err := netip.ParseAddr(host); err == nil && a.Unmap().Is4() && !a.IsUnspecified() {
				c.RouterID = a.Unmap()
			}
		}
		if !c.RouterID.IsValid() {
			bad("bgp-router-id", "required when neither --bgp-next-hop nor --listen names an IPv4 address, e.g. the gateway's address on the routers' network")
		}
	}
	for _, s := range b.peers {
		p, err := bgp.ParsePeer(s)
		if err != nil {
			bad("bgp-peer", "%v", err)
			continue
		}
		c.Peers = append(c.Peers, p)
	}
	if len(b.peers) == 0 {
		bad("bgp-peer", "required with --bgp-asn: the router(s) to announce to, ASN@ADDRESS")
	}
	return c
}
