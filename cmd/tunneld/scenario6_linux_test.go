package main

// The scenarios of scenario_linux_test.go over IPv6: tunneld listens on an
// IPv6 underlay address, hands out fd00:64::/64 inside the tunnel, and the
// far hosts are reachable by IPv6 only.
// Topology: laptop --2001:db8:1::/64-- server --2001:db8:10::/64 (LAN) or
// 2001:db8:20::/64 (internet)-- far host.

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"tlsvpn/routing"
	"tlsvpn/routing/netnstest"
)

const (
	server6     = "2001:db8:1::1"
	server6Addr = "[" + server6 + "]:443"
)

var clientAddr6 = netip.MustParsePrefix("fd00:64::2/64")

// underlay6 is a server and a laptop namespace joined by a veth in
// 2001:db8:1::/64, with the tunnel daemons to run in them.
type underlay6 struct {
	tunneld, tunnelc   string
	server, laptop     *netnstest.NS
	serverIf, laptopIf string
	pki, state         string
	srvArgs            []string
	srv, cli           *proc
}

// newUnderlay6 creates the namespaces and the veth. Duplicate address
// detection is off in both namespaces, so that no address (link-local
// ones included) stays tentative while the test runs.
func newUnderlay6(t *testing.T) *underlay6 {
	t.Helper()
	u := &underlay6{server: netnstest.New(t), laptop: netnstest.New(t)}
	u.tunneld, u.tunnelc = binaries(t)
	for _, ns := range []*netnstest.NS{u.server, u.laptop} {
		noDAD(t, ns)
	}
	u.serverIf, u.laptopIf = netnstest.Veth(t, u.server, netip.MustParsePrefix(server6+"/64"), u.laptop, netip.MustParsePrefix("2001:db8:1::2/64"))
	return u
}

func noDAD(t *testing.T, ns *netnstest.NS) {
	t.Helper()
	ns.Run(t, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
}

// connect issues the certificates, starts tunneld on server6Addr (dual
// stack inside the tunnel) with serverFlags and tunnelc with clientFlags,
// and waits until the laptop has both tunnel addresses.
func (u *underlay6) connect(t *testing.T, serverFlags []string, clientFlags ...string) {
	t.Helper()
	u.pki, u.state = t.TempDir(), t.TempDir()
	e := &env{}
	e.run(t, u.tunneld, "pki", "init", "--dir", u.pki)
	e.run(t, u.tunneld, "pki", "issue", "--dir", u.pki, "--server", "--name", "server", "--ip", server6)
	e.run(t, u.tunneld, "pki", "issue", "--dir", u.pki, "--client", "--name", "laptop")
	u.srvArgs = append([]string{"--listen", server6Addr,
		"--cert", u.pki + "/server.crt", "--key", u.pki + "/server.key", "--ca", u.pki + "/ca.crt",
		"--subnet", "100.64.0.0/24", "--subnet6", "fd00:64::/64", "--state-dir", u.state}, serverFlags...)
	u.startServer(t)
	u.cli = start(t, u.laptop, u.tunnelc, append([]string{"--server", server6Addr,
		"--cert", u.pki + "/laptop.crt", "--key", u.pki + "/laptop.key", "--ca", u.pki + "/ca.crt"}, clientFlags...)...)
	eventually(t, "client addresses", func() bool {
		return hasAddr(u.laptop, "tunnelc0", clientAddr) && hasAddr(u.laptop, "tunnelc0", clientAddr6)
	})
}

func (u *underlay6) startServer(t *testing.T) {
	t.Helper()
	u.srv = start(t, u.server, u.tunneld, u.srvArgs...)
	eventually(t, "tunneld listening", func() bool { return strings.Contains(u.srv.log.String(), "msg=listening") })
}

// routeGet6 returns `ip -6 route get dst` in ns, or its error output if
// there is no route.
func routeGet6(ns *netnstest.NS, dst string) string {
	out, _ := ns.Cmd(context.Background(), "ip", "-6", "route", "get", dst).CombinedOutput()
	return strings.TrimSpace(string(out))
}

// hasRoute reports whether `ip route show` output has a route to dst.
func hasRoute(out, dst string) bool {
	for line := range strings.Lines(out) {
		if f := strings.Fields(line); len(f) > 0 && f[0] == dst {
			return true
		}
	}
	return false
}

// TestNetNSSplitTunnelToLAN6: over an IPv6 underlay, the laptop reaches an
// IPv6 LAN behind the server through the pushed prefix only; the LAN host
// sees the laptop's tunnel address (routed) or the server's (--nat).
func TestNetNSSplitTunnelToLAN6(t *testing.T) {
	for _, tc := range []struct {
		name     string
		flags    []string
		lanRoute bool   // the LAN host has a route back to the tunnel subnet
		wantSrc  string // source address the LAN host sees
	}{
		{name: "routed", lanRoute: true, wantSrc: clientAddr6.Addr().String()},
		{name: "nat", flags: []string{"--nat"}, wantSrc: "2001:db8:10::1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newUnderlay6(t)
			lan := netnstest.New(t)
			noDAD(t, lan)
			netnstest.Veth(t, u.server, netip.MustParsePrefix("2001:db8:10::1/64"), lan, netip.MustParsePrefix("2001:db8:10::2/64"))
			if tc.lanRoute {
				lan.Run(t, "ip", "-6", "route", "add", "fd00:64::/64", "via", "2001:db8:10::1")
			}
			// The laptop's own default route, which everything but the
			// pushed prefix keeps using.
			u.laptop.Run(t, "ip", "-6", "route", "add", "default", "via", server6)
			u.connect(t, append([]string{"--route", "2001:db8:10::/64"}, tc.flags...))

			// Only the pushed prefix enters the tunnel.
			if out := u.laptop.Run(t, "ip", "-6", "route", "show", "proto", strconv.Itoa(routing.RouteProtocol)); !strings.Contains(out, "2001:db8:10::/64 dev tunnelc0") {
				t.Fatalf("pushed IPv6 route not installed via tunnelc0:\n%s", out)
			}
			if out := routeGet6(u.laptop, "2001:db8:10::2"); !strings.Contains(out, "dev tunnelc0") {
				t.Fatalf("route to the LAN host does not use the tunnel: %s", out)
			}
			if out := routeGet6(u.laptop, "2001:db8:50::1"); strings.Contains(out, "tunnelc0") || !strings.Contains(out, "via "+server6+" dev "+u.laptopIf) {
				t.Fatalf("traffic outside the pushed routes does not take the default route: %s", out)
			}
			if err := ping(t, u.laptop, "-6", "2001:db8:10::2"); err != nil {
				t.Fatal(err)
			}

			if got := sourceSeen(t, u.laptop, lan, "[2001:db8:10::2]:7101"); got != tc.wantSrc {
				t.Fatalf("LAN host saw the connection from %s, want %s", got, tc.wantSrc)
			}
			transfer(t, u.laptop, lan, "[2001:db8:10::2]:7102", 8<<20)
			if tc.lanRoute {
				transfer(t, lan, u.laptop, "[fd00:64::2]:7103", 4<<20) // the LAN can reach the laptop too
			}
		})
	}
}

// TestNetNSFullTunnelKillSwitch6: tunnelc --full-tunnel --kill-switch with
// the server on an IPv6 address and an IPv6-only host past it. Everything
// goes through the tunnel, both families; the far host sees the server's
// IPv6 address; while the tunnel is down nothing IPv6 leaves outside it but
// the connection to the server; on exit the original routes come back and
// nothing of ours remains.
func TestNetNSFullTunnelKillSwitch6(t *testing.T) {
	u := newUnderlay6(t)
	inet := netnstest.New(t)
	noDAD(t, inet)
	netnstest.Veth(t, u.server, netip.MustParsePrefix("2001:db8:20::1/64"), inet, netip.MustParsePrefix("2001:db8:20::2/64"))
	// The laptop's link is dual stack, with a default route of each family
	// via the server.
	u.server.Run(t, "ip", "addr", "add", "198.18.0.1/29", "dev", u.serverIf)
	u.laptop.Run(t, "ip", "addr", "add", "198.18.0.2/29", "dev", u.laptopIf)
	u.laptop.Run(t, "ip", "route", "add", "default", "via", "198.18.0.1")
	u.laptop.Run(t, "ip", "-6", "route", "add", "default", "via", server6)
	u.connect(t, []string{"--nat"}, "--full-tunnel", "--kill-switch")

	routes := u.laptop.Run(t, "ip", "-6", "route", "show", "dev", "tunnelc0")
	for _, want := range []string{"::/1", "8000::/1"} {
		if !hasRoute(routes, want) {
			t.Fatalf("no %s route through tunnelc0:\n%s", want, routes)
		}
	}
	if out := routeGet6(u.laptop, "2001:db8:20::2"); !strings.Contains(out, "dev tunnelc0") {
		t.Fatalf("IPv6 internet traffic does not use the tunnel: %s", out)
	}
	if out := u.laptop.Run(t, "ip", "route", "get", "198.18.30.1"); !strings.Contains(out, "dev tunnelc0") {
		t.Fatalf("IPv4 internet traffic does not use the tunnel: %s", out)
	}
	if out := routeGet6(u.laptop, server6); strings.Contains(out, "tunnelc0") {
		t.Fatalf("the route to the server goes into the tunnel: %s", out)
	}
	if err := ping(t, u.laptop, "-6", "2001:db8:20::2"); err != nil {
		t.Fatal(err)
	}
	// The host "on the internet" sees the server's IPv6 address.
	if got := sourceSeen(t, u.laptop, inet, "[2001:db8:20::2]:8101"); got != "2001:db8:20::1" {
		t.Fatalf("internet host saw %s, want the server's 2001:db8:20::1", got)
	}
	transfer(t, u.laptop, inet, "[2001:db8:20::2]:8102", 8<<20)

	// Tunnel down (server stopped): the kill switch lets nothing IPv6 out
	// but the server endpoint.
	u.srv.stop(t)
	eventually(t, "client notices", func() bool { return strings.Contains(u.cli.log.String(), "reconnecting") })
	dial := func(addr string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := u.laptop.Dial(ctx, "tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	}
	// Port 80 on the server is closed: without the kill switch the dial
	// would be refused at once; dropped, it fails with EPERM or times out.
	closed := "[" + server6 + "]:80"
	if err := dial(closed); err == nil || strings.Contains(err.Error(), "refused") {
		t.Fatalf("IPv6 dial outside the tunnel while it is down = %v, want it dropped by the kill switch", err)
	}
	if err := dial(server6Addr); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("dial to the (stopped) IPv6 server endpoint = %v, want 'connection refused' (allowed through)", err)
	}
	if err := ping(t, u.laptop, "-6", "-I", u.laptopIf, server6); err == nil {
		t.Fatal("IPv6 ping outside the tunnel got through the kill switch")
	}

	// Server back: the client reconnects over IPv6 through the kill switch.
	u.startServer(t)
	eventually(t, "client reconnected", func() bool { return strings.Contains(u.cli.log.String(), "msg=reconnected") })

	// Exit: the halves, the bypass route and the kill switch are gone, the
	// original routes apply and the plain path is open again.
	if err := u.cli.stop(t); err != nil {
		t.Fatalf("tunnelc exit: %v", err)
	}
	if out := routeGet6(u.laptop, "2001:db8:20::2"); !strings.Contains(out, "via "+server6+" dev "+u.laptopIf) {
		t.Fatalf("after exit the original IPv6 route is not back: %s", out)
	}
	if out := u.laptop.Run(t, "ip", "route", "get", "198.18.30.1"); !strings.Contains(out, "via 198.18.0.1") {
		t.Fatalf("after exit the original IPv4 route is not back: %s", out)
	}
	for _, fam := range []string{"-4", "-6"} {
		for _, proto := range []int{routing.RouteProtocol, routing.BypassProtocol} {
			if out := u.laptop.Run(t, "ip", fam, "route", "show", "proto", strconv.Itoa(proto)); strings.TrimSpace(out) != "" {
				t.Errorf("ip %s: routes of ours (proto %d) left after exit:\n%s", fam, proto, out)
			}
		}
	}
	if out := u.laptop.Run(t, "ip", "-6", "route", "show"); hasRoute(out, "::/1") || hasRoute(out, "8000::/1") {
		t.Errorf("full-tunnel halves left after exit:\n%s", out)
	}
	if out := u.laptop.Run(t, "nft", "list", "tables"); strings.Contains(out, "inet tlsvpn") {
		t.Errorf("kill switch table left after exit:\n%s", out)
	}
	if err := dial(closed); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("after exit, IPv6 dial to a closed port = %v, want 'connection refused' (not dropped)", err)
	}
}
