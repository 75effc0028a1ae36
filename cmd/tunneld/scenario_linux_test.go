package main

// Scenario: a laptop reaches a LAN behind the server (split tunnel), with
// the server routing (the LAN knows the way back) or masquerading (--nat).
// Topology: laptop --198.18.0.0/29-- server --198.18.10.0/24-- lanhost.

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"tlsvpn/routing"
	"tlsvpn/routing/netnstest"
)

func TestNetNSSplitTunnelToLAN(t *testing.T) {
	for _, tc := range []struct {
		name     string
		flags    []string
		lanRoute bool   // the LAN host has a route back to the tunnel subnet
		wantSrc  string // source address the LAN host sees
		lanMTU   string // MTU of the LAN link ("" = default)
	}{
		{name: "routed", lanRoute: true, wantSrc: "100.64.0.2"},
		{name: "nat", flags: []string{"--nat"}, wantSrc: "198.18.10.1"},
		{name: "nat, LAN link MTU 1280 (MSS clamped)", flags: []string{"--nat"}, wantSrc: "198.18.10.1", lanMTU: "1280"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			server, laptop, lan := netnstest.New(t), netnstest.New(t), netnstest.New(t)
			tunneld, tunnelc := binaries(t)
			netnstest.Veth(t, server, netip.MustParsePrefix("198.18.0.1/29"), laptop, netip.MustParsePrefix("198.18.0.2/29"))
			srvLanIf, lanIf := netnstest.Veth(t, server, netip.MustParsePrefix("198.18.10.1/24"), lan, netip.MustParsePrefix("198.18.10.2/24"))
			if tc.lanRoute {
				lan.Run(t, "ip", "route", "add", "100.64.0.0/24", "via", "198.18.10.1")
			}
			if tc.lanMTU != "" {
				server.Run(t, "ip", "link", "set", srvLanIf, "mtu", tc.lanMTU)
				lan.Run(t, "ip", "link", "set", lanIf, "mtu", tc.lanMTU)
			}
			pki, state := t.TempDir(), t.TempDir()
			e := &env{}
			e.run(t, tunneld, "pki", "init", "--dir", pki)
			e.run(t, tunneld, "pki", "issue", "--dir", pki, "--server", "--name", "server", "--ip", "198.18.0.1")
			e.run(t, tunneld, "pki", "issue", "--dir", pki, "--client", "--name", "laptop")
			srv := start(t, server, tunneld, append([]string{"--listen", "198.18.0.1:443",
				"--cert", pki + "/server.crt", "--key", pki + "/server.key", "--ca", pki + "/ca.crt",
				"--subnet", "100.64.0.0/24", "--route", "198.18.10.0/24", "--state-dir", state}, tc.flags...)...)
			eventually(t, "tunneld listening", func() bool { return strings.Contains(srv.log.String(), "msg=listening") })
			start(t, laptop, tunnelc, "--server", "198.18.0.1:443",
				"--cert", pki+"/laptop.crt", "--key", pki+"/laptop.key", "--ca", pki+"/ca.crt")
			eventually(t, "client address", func() bool { return hasAddr(laptop, "tunnelc0", clientAddr) })

			// Only the pushed prefix enters the tunnel.
			if out := laptop.Run(t, "ip", "route", "get", "198.18.10.2"); !strings.Contains(out, "dev tunnelc0") {
				t.Fatalf("route to the LAN host does not use the tunnel: %s", out)
			}
			if out, _ := laptop.Cmd(context.Background(), "ip", "route", "get", "198.18.50.1").CombinedOutput(); strings.Contains(string(out), "tunnelc0") {
				t.Fatalf("traffic outside the pushed routes enters the tunnel: %s", out)
			}
			if err := ping(t, laptop, "198.18.10.2"); err != nil {
				t.Fatal(err)
			}

			// A TCP transfer to the LAN host: byte-exact, and the LAN host
			// sees the expected source address.
			if got := sourceSeen(t, laptop, lan, "198.18.10.2:7001"); got != tc.wantSrc {
				t.Fatalf("LAN host saw the connection from %s, want %s", got, tc.wantSrc)
			}
			transfer(t, laptop, lan, "198.18.10.2:7002", 8<<20)
			if tc.lanRoute {
				transfer(t, lan, laptop, "100.64.0.2:7003", 4<<20) // the LAN can reach the laptop too
			}
			if tc.lanMTU != "" {
				if out := server.Run(t, "nft", "list", "table", "inet", routing.FirewallTable("tunneld0")); !strings.Contains(out, "maxseg size set rt mtu") {
					t.Fatalf("no MSS clamp rule in the server's table:\n%s", out)
				}
			}
		})
	}
}

// TestNetNSFullTunnelKillSwitch: tunnelc --full-tunnel --kill-switch sends
// everything through the tunnel without cutting its own connection; a host
// past the server sees the server's address; while the tunnel is down
// nothing leaves outside it; on exit the original routes come back.
func TestNetNSFullTunnelKillSwitch(t *testing.T) {
	server, laptop, inet := netnstest.New(t), netnstest.New(t), netnstest.New(t)
	tunneld, tunnelc := binaries(t)
	_, lapIf := netnstest.Veth(t, server, netip.MustParsePrefix("198.18.0.1/29"), laptop, netip.MustParsePrefix("198.18.0.2/29"))
	netnstest.Veth(t, server, netip.MustParsePrefix("198.18.20.1/24"), inet, netip.MustParsePrefix("198.18.20.2/24"))
	laptop.Run(t, "ip", "route", "add", "default", "via", "198.18.0.1")
	server.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1") // the laptop's plain path, for the "after" check
	pki, state := t.TempDir(), t.TempDir()
	e := &env{}
	e.run(t, tunneld, "pki", "init", "--dir", pki)
	e.run(t, tunneld, "pki", "issue", "--dir", pki, "--server", "--name", "server", "--ip", "198.18.0.1")
	e.run(t, tunneld, "pki", "issue", "--dir", pki, "--client", "--name", "laptop")
	srvArgs := []string{"--listen", "198.18.0.1:443", "--cert", pki + "/server.crt", "--key", pki + "/server.key",
		"--ca", pki + "/ca.crt", "--subnet", "100.64.0.0/24", "--nat", "--state-dir", state}
	srv := start(t, server, tunneld, srvArgs...)
	eventually(t, "tunneld listening", func() bool { return strings.Contains(srv.log.String(), "msg=listening") })
	cli := start(t, laptop, tunnelc, "--server", "198.18.0.1:443", "--cert", pki+"/laptop.crt",
		"--key", pki+"/laptop.key", "--ca", pki+"/ca.crt", "--full-tunnel", "--kill-switch")
	eventually(t, "client address", func() bool { return hasAddr(laptop, "tunnelc0", clientAddr) })

	if out := laptop.Run(t, "ip", "route", "get", "198.18.20.2"); !strings.Contains(out, "dev tunnelc0") {
		t.Fatalf("internet traffic does not use the tunnel: %s", out)
	}
	if out := laptop.Run(t, "ip", "route", "get", "198.18.0.1"); strings.Contains(out, "tunnelc0") {
		t.Fatalf("the route to the server goes into the tunnel: %s", out)
	}
	// The host "on the internet" sees the server's address.
	if got := sourceSeen(t, laptop, inet, "198.18.20.2:8001"); got != "198.18.20.1" {
		t.Fatalf("internet host saw %s, want the server's 198.18.20.1", got)
	}

	// Tunnel down (server stopped): the client keeps reconnecting, and the
	// kill switch lets nothing out but the server endpoint.
	srv.stop(t)
	eventually(t, "client notices", func() bool { return strings.Contains(cli.log.String(), "reconnecting") })
	dial := func(addr string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := laptop.Dial(ctx, "tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	}
	// Port 80 on the server is closed: without the kill switch the dial
	// would be refused at once; dropped, it fails with EPERM or times out.
	if err := dial("198.18.0.1:80"); err == nil || strings.Contains(err.Error(), "refused") {
		t.Fatalf("dial outside the tunnel while it is down = %v, want it dropped by the kill switch", err)
	}
	if err := dial("198.18.0.1:443"); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("dial to the (stopped) server endpoint = %v, want 'connection refused' (allowed through)", err)
	}
	if err := ping(t, laptop, "-I", lapIf, "198.18.0.1"); err == nil {
		t.Fatal("ping outside the tunnel got through the kill switch")
	}

	// Server back: the client reconnects through the kill switch.
	srv = start(t, server, tunneld, srvArgs...)
	eventually(t, "client reconnected", func() bool { return strings.Contains(cli.log.String(), "msg=reconnected") })

	// Exit: routes, bypass route and kill switch are gone, the plain path works.
	if err := cli.stop(t); err != nil {
		t.Fatalf("tunnelc exit: %v", err)
	}
	if out := laptop.Run(t, "ip", "route", "get", "198.18.20.2"); !strings.Contains(out, "via 198.18.0.1") {
		t.Fatalf("after exit the original route is not back: %s", out)
	}
	if out := laptop.Run(t, "nft", "list", "tables"); strings.Contains(out, "inet tlsvpn") {
		t.Fatalf("kill switch table left after exit:\n%s", out)
	}
	if err := dial("198.18.0.1:80"); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("after exit, dial to a closed port = %v, want 'connection refused' (not dropped)", err)
	}
}

// TestNetNSDNS: the resolver the server pushes (--dns) is applied while
// the tunnel is up and the previous resolv.conf comes back at exit, or
// with --cleanup after a crash.
// (`ip netns exec` bind-mounts /etc/netns/NAME/resolv.conf over
// /etc/resolv.conf, so tunnelc's changes land in that file.)
func TestNetNSDNS(t *testing.T) {
	var file string
	p := newPairWith(t, []string{"--dns", "100.64.0.1", "--dns", "2001:db8:53::53"}, func(laptop *netnstest.NS) {
		file = netnsResolvConf(t, laptop, "nameserver 192.0.2.53\n")
	})
	eventually(t, "pushed resolver applied", func() bool {
		b, _ := os.ReadFile(file)
		return strings.Contains(string(b), "nameserver 100.64.0.1\nnameserver 2001:db8:53::53\n") && !strings.Contains(string(b), "\nnameserver 192.0.2.53")
	})
	if err := p.cli.stop(t); err != nil {
		t.Fatalf("tunnelc exit: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "nameserver 192.0.2.53\n" {
		t.Fatalf("resolv.conf after exit = %q, want the original back", b)
	}

	// A crashed tunnelc leaves its resolv.conf; --cleanup restores the
	// original from what it saved in the file.
	cli := start(t, p.laptop, p.tunnelc, "--server", "198.18.0.1:443",
		"--cert", p.pki+"/laptop.crt", "--key", p.pki+"/laptop.key", "--ca", p.pki+"/ca.crt")
	eventually(t, "pushed resolver applied again", func() bool {
		b, _ := os.ReadFile(file)
		return strings.Contains(string(b), "nameserver 100.64.0.1")
	})
	cli.cmd.Process.Kill()
	<-cli.done
	if b, _ := os.ReadFile(file); !strings.Contains(string(b), "nameserver 100.64.0.1") {
		t.Fatalf("after SIGKILL resolv.conf = %q; want tunnelc's still there", b)
	}
	p.laptop.Run(t, p.tunnelc, "--cleanup")
	if b, _ := os.ReadFile(file); string(b) != "nameserver 192.0.2.53\n" {
		t.Fatalf("resolv.conf after --cleanup = %q, want the original back", b)
	}
}

// sourceSeen connects from one namespace to a listener on addr in another
// and returns the source address the listener saw.
func sourceSeen(t *testing.T, from, to *netnstest.NS, addr string) string {
	t.Helper()
	ln := to.Listen(t, "tcp", addr)
	defer ln.Close()
	seen := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			seen <- err.Error()
			return
		}
		seen <- c.RemoteAddr().(*net.TCPAddr).IP.String()
		c.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := from.Dial(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	return <-seen
}

// TestNetNSFullTunnelRoam: a full-tunnel laptop moves to another network
// (its first uplink loses its address and goes down; a second uplink
// with another gateway takes over). The route that keeps the server
// outside the tunnel moves to the new gateway, so the client reconnects
// instead of dialing the server through its own dead tunnel.
// Topology: laptop =(uplink A 198.18.0.0/29, uplink B 198.18.0.8/29)=
// server, which listens on 198.18.100.1 (on its loopback).
func TestNetNSFullTunnelRoam(t *testing.T) {
	server, laptop := netnstest.New(t), netnstest.New(t)
	tunneld, tunnelc := binaries(t)
	_, upA := netnstest.Veth(t, server, netip.MustParsePrefix("198.18.0.1/29"), laptop, netip.MustParsePrefix("198.18.0.2/29"))
	netnstest.Veth(t, server, netip.MustParsePrefix("198.18.0.9/29"), laptop, netip.MustParsePrefix("198.18.0.10/29"))
	server.Run(t, "ip", "addr", "add", "198.18.100.1/32", "dev", "lo")
	laptop.Run(t, "ip", "route", "add", "default", "via", "198.18.0.1")
	pki, state := t.TempDir(), t.TempDir()
	e := &env{}
	e.run(t, tunneld, "pki", "init", "--dir", pki)
	e.run(t, tunneld, "pki", "issue", "--dir", pki, "--server", "--name", "server", "--ip", "198.18.100.1")
	e.run(t, tunneld, "pki", "issue", "--dir", pki, "--client", "--name", "laptop")
	srv := start(t, server, tunneld, "--listen", "198.18.100.1:443", "--cert", pki+"/server.crt", "--key", pki+"/server.key",
		"--ca", pki+"/ca.crt", "--subnet", "100.64.0.0/24", "--keepalive", "1s", "--state-dir", state)
	eventually(t, "tunneld listening", func() bool { return strings.Contains(srv.log.String(), "msg=listening") })
	cli := start(t, laptop, tunnelc, "--server", "198.18.100.1:443", "--cert", pki+"/laptop.crt",
		"--key", pki+"/laptop.key", "--ca", pki+"/ca.crt", "--full-tunnel")
	eventually(t, "client address", func() bool { return hasAddr(laptop, "tunnelc0", clientAddr) })
	if out := laptop.Run(t, "ip", "route", "get", "198.18.100.1"); !strings.Contains(out, "via 198.18.0.1") {
		t.Fatalf("route to the server is not pinned via uplink A: %s", out)
	}
	// The pinned route names its instance: the bypass protocol, and the
	// tunnel device's index as metric (what --cleanup goes by).
	if l, err := laptop.Handle().LinkByName("tunnelc0"); err != nil {
		t.Fatal(err)
	} else if out := laptop.Run(t, "ip", "route", "show", "198.18.100.1/32", "proto", strconv.Itoa(routing.BypassProtocol)); !strings.Contains(out, "metric "+strconv.Itoa(l.Attrs().Index)) {
		t.Errorf("route to the server = %q, want proto %d metric %d", out, routing.BypassProtocol, l.Attrs().Index)
	}

	// Roam: uplink A is gone, uplink B's gateway is the new default.
	laptop.Run(t, "ip", "addr", "flush", "dev", upA)
	laptop.Run(t, "ip", "link", "set", upA, "down")
	laptop.Run(t, "ip", "route", "add", "default", "via", "198.18.0.9")
	eventually(t, "client reconnected over uplink B", func() bool { return strings.Contains(cli.log.String(), "msg=reconnected") })
	if out := laptop.Run(t, "ip", "route", "get", "198.18.100.1"); !strings.Contains(out, "via 198.18.0.9") {
		t.Fatalf("route to the server did not move to uplink B: %s", out)
	}
	if err := ping(t, laptop, "100.64.0.1"); err != nil {
		t.Fatalf("tunnel after roaming: %v", err)
	}
	if err := cli.stop(t); err != nil {
		t.Fatalf("tunnelc exit: %v", err)
	}
	for _, proto := range []int{routing.RouteProtocol, routing.BypassProtocol} {
		if out := laptop.Run(t, "ip", "route", "show", "proto", strconv.Itoa(proto)); strings.TrimSpace(out) != "" {
			t.Fatalf("routes left after exit: %s", out)
		}
	}
}
