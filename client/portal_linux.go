package client

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"tlsvpn/routing"
)

// newProbeClient returns the HTTP client of the portal probe: no proxy,
// no redirects, no connection reuse, and sockets (DNS included) marked
// portalProbeMark, which the kill switch lets out to DNS and TCP 80/443.
//
// With ifname set, the sockets are bound to that interface
// (SO_BINDTODEVICE): the route lookup is then restricted to it, so the
// probe leaves through the physical interface even while the full tunnel's
// routes send everything else into the TUN. A source address would not do
// that (the kernel still routes by destination), and a routing rule on
// the mark would change the host's policy routing for every process that
// uses the mark.
//
// Names are resolved with dns, the servers of the network the host is on
// (routing.ProbeNameservers): not those of the tunnel, which may be in
// resolv.conf while it is down, nor a stub resolver on the loopback, whose
// own queries the kill switch drops. Without any, the system's resolver
// settings are used.
func newProbeClient(ifname string, dns []netip.Addr) *http.Client {
	control := func(bind bool) func(network, address string, rc syscall.RawConn) error {
		return func(network, address string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(portalProbeMark))
				if serr == nil && bind && ifname != "" {
					serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname)
				}
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	dnsDialer := &net.Dialer{Control: control(true)}
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		if _, port, err := net.SplitHostPort(address); err == nil && len(dns) > 0 {
			address = netip.AddrPortFrom(dns[0], portNumber(port)).String()
		}
		return dnsDialer.DialContext(ctx, network, address)
	}}
	d := &net.Dialer{Control: control(true), Resolver: resolver}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:             nil,
			DialContext:       d.DialContext,
			DisableKeepAlives: true,
		},
		CheckRedirect: noRedirects,
		Timeout:       portalProbeTimeout,
	}
}

// portNumber parses a port the resolver gave; 53 if it cannot.
func portNumber(s string) uint16 {
	if n, err := strconv.ParseUint(s, 10, 16); err == nil {
		return uint16(n)
	}
	return 53
}

// probeFunc probes url through the interface it is given; tunnelDNS
// returns the tunnel's DNS servers, which the probe does not ask.
func probeFunc(url string, tunnelDNS func() []netip.Addr) func(ctx context.Context, ifname string) (probeResult, error) {
	return func(ctx context.Context, ifname string) (probeResult, error) {
		return probePortal(ctx, newProbeClient(ifname, routing.ProbeNameservers(tunnelDNS())), url)
	}
}
