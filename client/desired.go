package client

import (
	"net/netip"
	"slices"

	"tlsvpn/routing"
	"tlsvpn/tunnel"
)

// What the client installs on the host for a session's configuration:
// pure functions, rendered with the routing fakes in desired_test.go.

// fullTunnelRoutes returns the routes to install: the pushed ones, with a
// default route (pushed, or asked for with --full-tunnel) replaced by two
// halves that win over the system's default without removing it.
func fullTunnelRoutes(pushed []netip.Prefix, force, have6 bool) ([]netip.Prefix, bool) {
	var out []netip.Prefix
	full4, full6 := force, force && have6
	for _, r := range pushed {
		switch {
		case r.Bits() == 0 && r.Addr().Is4():
			full4 = true
		case r.Bits() == 0:
			full6 = true
		default:
			out = append(out, r)
		}
	}
	if full4 {
		out = append(out, netip.MustParsePrefix("0.0.0.0/1"), netip.MustParsePrefix("128.0.0.0/1"))
	}
	if full6 {
		out = append(out, netip.MustParsePrefix("::/1"), netip.MustParsePrefix("8000::/1"))
	}
	return out, full4 || full6
}

// clientRouting is the interface state for the configuration the server
// pushed: its addresses, MTU and routes, the full tunnel's halves in place
// of default routes. full reports a full tunnel (a route to the server
// must then bypass it).
func clientRouting(ifname string, cfg tunnel.Config, fullTunnel bool) (rc routing.Config, full bool) {
	routes, full := fullTunnelRoutes(cfg.Routes, fullTunnel, cfg.Addr6.IsValid())
	rc = routing.Config{Interface: ifname, MTU: cfg.MTU, Addresses: []netip.Prefix{cfg.Addr}, Routes: routes}
	if cfg.Addr6.IsValid() {
		rc.Addresses = append(rc.Addresses, cfg.Addr6)
	}
	return rc, full
}

// clientFirewall is the client's nftables state: the kill switch letting
// only the server endpoints out, and MSS clamping for a site gateway that
// forwards its LAN into the tunnel.
func clientFirewall(ifname string, killSwitch, gateway bool, server []netip.AddrPort) routing.FirewallConfig {
	fc := routing.FirewallConfig{TunnelIf: ifname, ClampMSS: gateway}
	if killSwitch {
		fc.KillSwitch, fc.ServerEndpoints = true, server
	}
	return fc
}

// notIn returns the prefixes of want that are not in got.
func notIn(want, got []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range want {
		if !slices.Contains(got, p) {
			out = append(out, p)
		}
	}
	return out
}
