package main

// Scenario: a laptop reaches a LAN behind the server (split tunnel), with
// the server routing (the LAN knows the way back) or masquerading (--nat).
// Topology: laptop --198.18.0.0/29-- server --198.18.10.0/24-- lanhost.

import (
	"context"
	"net"
	"net/netip"
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
			ln := lan.Listen(t, "tcp", "198.18.10.2:7001")
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
			c, err := laptop.Dial(ctx, "tcp", "198.18.10.2:7001")
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			if got := <-seen; got != tc.wantSrc {
				t.Fatalf("LAN host saw the connection from %s, want %s", got, tc.wantSrc)
			}
			ln.Close()
			transfer(t, laptop, lan, "198.18.10.2:7002", 8<<20)
			if tc.lanRoute {
				transfer(t, lan, laptop, "100.64.0.2:7003", 4<<20) // the LAN can reach the laptop too
			}
			if tc.lanMTU != "" {
				if out := server.Run(t, "nft", "list", "table", "inet", routing.FirewallTable); !strings.Contains(out, "maxseg size set rt mtu") {
					t.Fatalf("no MSS clamp rule in the server's table:\n%s", out)
				}
			}
		})
	}
}
