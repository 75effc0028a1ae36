package client

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// upstreamResolvConf lists the servers systemd-resolved forwards to, when
// /etc/resolv.conf names only its stub on the loopback.
const upstreamResolvConf = "/run/systemd/resolve/resolv.conf"

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
func newProbeClient(ifname string) *http.Client {
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
	dns := &net.Dialer{Control: control(true)}
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		return dns.DialContext(ctx, network, upstreamDNS(address))
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

// upstreamDNS returns the DNS server to ask instead of address: a stub
// resolver on the loopback (systemd-resolved's 127.0.0.53) forwards with
// sockets the kill switch drops, so ask the first server it forwards to
// instead; any other address as it is.
func upstreamDNS(address string) string {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return address
	}
	if a, err := netip.ParseAddr(host); err != nil || !a.IsLoopback() {
		return address
	}
	f, err := os.Open(upstreamResolvConf)
	if err != nil {
		return address
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			if a, err := netip.ParseAddr(fields[1]); err == nil && !a.IsLoopback() {
				return net.JoinHostPort(a.String(), port)
			}
		}
	}
	return address
}

// probeFunc probes url through the interface it is given.
func probeFunc(url string) func(ctx context.Context, ifname string) (probeResult, error) {
	return func(ctx context.Context, ifname string) (probeResult, error) {
		return probePortal(ctx, newProbeClient(ifname), url)
	}
}
