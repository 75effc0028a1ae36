package main

// Routes that follow the client, against a real router: BIRD (Debian
// bird2) peers with tunneld over BGP and installs what it learns in its
// kernel table, and a host on the router's LAN reaches a client by its
// tunnel address only through that route.
//
//	laptop --(198.18.40.0/30)-- gateway (tunneld) --(198.18.41.0/24)-- router (BIRD) --(198.18.42.0/24)-- lanhost

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"tlsvpn/routing/netnstest"
)

// birdRoute returns the router's kernel route to addr ("" if none).
func birdRoute(t *testing.T, router *netnstest.NS, addr string) string {
	t.Helper()
	return strings.TrimSpace(router.Run(t, "ip", "-4", "route", "show", addr+"/32", "proto", "bird"))
}

func TestNetNSBGP(t *testing.T) {
	if _, err := exec.LookPath("bird"); err != nil {
		t.Skip("bird (Debian bird2) is not installed; scripts/test.sh installs it")
	}
	tunneld, tunnelc := binaries(t)
	laptop, gw, router, lanhost := netnstest.New(t), netnstest.New(t), netnstest.New(t), netnstest.New(t)
	netnstest.Veth(t, gw, netip.MustParsePrefix("198.18.40.1/30"), laptop, netip.MustParsePrefix("198.18.40.2/30"))
	netnstest.Veth(t, gw, netip.MustParsePrefix("198.18.41.2/24"), router, netip.MustParsePrefix("198.18.41.1/24"))
	netnstest.Veth(t, router, netip.MustParsePrefix("198.18.42.1/24"), lanhost, netip.MustParsePrefix("198.18.42.2/24"))
	lanhost.Run(t, "ip", "route", "add", "default", "via", "198.18.42.1")
	gw.Run(t, "ip", "route", "add", "198.18.42.0/24", "via", "198.18.41.1")
	router.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")

	dir := t.TempDir()
	conf := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(conf, []byte(`router id 198.18.41.1;
protocol device { }
protocol kernel { ipv4 { import none; export all; }; }
protocol bgp tlsvpn_gw {
	local 198.18.41.1 as 65000;
	neighbor 198.18.41.2 as 65001;
	hold time 9;
	ipv4 { import all; export none; };
}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "bird.ctl")
	start(t, router, "bird", "-f", "-c", conf, "-s", sock, "-P", filepath.Join(dir, "bird.pid"))
	eventually(t, "BIRD's control socket", func() bool { _, err := os.Stat(sock); return err == nil })

	pki := filepath.Join(dir, "pki")
	for _, args := range [][]string{
		{"pki", "init", "--dir", pki},
		{"pki", "issue", "--dir", pki, "--server", "--name", "gateway", "--ip", "198.18.40.1"},
		{"pki", "issue", "--dir", pki, "--client", "--name", "laptop"},
	} {
		if out, err := exec.Command(tunneld, args...).CombinedOutput(); err != nil {
			t.Fatalf("tunneld %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	file := func(n string) string { return filepath.Join(pki, n) }
	ctl := controlPath(t)
	gateway := start(t, gw, tunneld, "--listen", "198.18.40.1:443",
		"--cert", file("gateway.crt"), "--key", file("gateway.key"), "--ca", file("ca.crt"),
		"--subnet", "100.64.4.0/24", "--route", "198.18.42.0/24", "--state-dir", "",
		"--bgp-asn", "65001", "--bgp-router-id", "198.18.41.2", "--bgp-peer", "65000@198.18.41.1",
		"--control", ctl, "--log-level", "debug")
	eventually(t, "the BGP session with BIRD", func() bool {
		out, _ := router.Cmd(t.Context(), "birdc", "-s", sock, "show", "protocols", "tlsvpn_gw").CombinedOutput()
		return strings.Contains(string(out), "Established")
	})
	if r := birdRoute(t, router, "100.64.4.2"); r != "" {
		t.Fatalf("the router has a route to the client before it connected: %s", r)
	}

	connect := func() *proc {
		p := start(t, laptop, tunnelc, "--server", "198.18.40.1:443",
			"--cert", file("laptop.crt"), "--key", file("laptop.key"), "--ca", file("ca.crt"), "--log-level", "debug")
		eventually(t, "the laptop's tunnel address", func() bool {
			return hasAddr(laptop, "tunnelc0", netip.MustParsePrefix("100.64.4.2/24"))
		})
		return p
	}
	client := connect()
	eventually(t, "the router to learn the client's route", func() bool {
		return strings.Contains(birdRoute(t, router, "100.64.4.2"), "via 198.18.41.2")
	})
	// The LAN reaches the client by its tunnel address, through the
	// route BIRD learned (the router has no other way to 100.64.4.0/24).
	if err := ping(t, lanhost, "100.64.4.2"); err != nil {
		t.Fatalf("from the LAN to the client: %v", err)
	}
	status := gw.Run(t, tunneld, "status", "--control", ctl)
	if !strings.Contains(status, "1 routes announced") || !strings.Contains(status, "peer 65000@198.18.41.1") || !strings.Contains(status, "established") {
		t.Errorf("tunneld status does not show the BGP peer and route:\n%s", status)
	}

	// The client leaves: its route is withdrawn.
	if err := client.stop(t); err != nil {
		t.Errorf("tunnelc: %v", err)
	}
	eventually(t, "the route to be withdrawn after the client left", func() bool { return birdRoute(t, router, "100.64.4.2") == "" })

	// A gateway that dies loses its routes with its BGP session.
	connect()
	eventually(t, "the route back", func() bool { return birdRoute(t, router, "100.64.4.2") != "" })
	gateway.cmd.Process.Signal(syscall.SIGKILL)
	<-gateway.done
	eventually(t, "the route to go with the dead gateway", func() bool { return birdRoute(t, router, "100.64.4.2") == "" })
}
