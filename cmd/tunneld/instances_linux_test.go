package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"tlsvpn/routing"
	"tlsvpn/routing/netnstest"
	"tlsvpn/server"
)

// stateRoot holds the instances' default state directories.
const stateRoot = server.StateRoot

// TestNetNSInstances: two tunneld instances with NAT and client isolation
// in one namespace, each with its own TUN, subnet, listen address, state
// directory and nftables table, serve their clients side by side. A third
// one that would collide with them (TUN name, subnet, listen address,
// state directory) is refused with a message saying which and why, and
// changes nothing: the ruleset, addresses and routes are the same before
// and after, and the first instance's client still gets through. Stopping
// one instance leaves the other's table and traffic intact.
func TestNetNSInstances(t *testing.T) {
	tunneld, tunnelc := binaries(t)
	server := netnstest.New(t)
	var laptops [2]*netnstest.NS
	var serverIPs [2]string
	for i := range laptops {
		laptops[i] = netnstest.New(t)
		srvIP := netip.AddrFrom4([4]byte{198, 18, 0, byte(4*i + 1)})
		netnstest.Veth(t, server, netip.PrefixFrom(srvIP, 30), laptops[i], netip.PrefixFrom(srvIP.Next(), 30))
		serverIPs[i] = srvIP.String()
	}
	// A LAN behind the server, which both instances route their clients
	// to, masqueraded.
	lan := netnstest.New(t)
	netnstest.Veth(t, server, netip.MustParsePrefix("198.18.50.1/24"), lan, netip.MustParsePrefix("198.18.50.2/24"))
	e := &env{tunneld: tunneld, tunnelc: tunnelc, pki: filepath.Join(t.TempDir(), "pki")}
	e.run(t, tunneld, "pki", "init", "--dir", e.pki)
	e.run(t, tunneld, "pki", "issue", "--dir", e.pki, "--server", "--name", "server", "--ip", serverIPs[0], "--ip", serverIPs[1])
	for _, n := range []string{"laptop1", "laptop2"} {
		e.run(t, tunneld, "pki", "issue", "--dir", e.pki, "--client", "--name", n)
	}
	creds := []string{"--cert", e.file("server.crt"), "--key", e.file("server.key"), "--ca", e.file("ca.crt")}

	// Instance A keeps its state in the default directory, named after
	// its TUN (unique, so that it neither meets a real tunneld's state nor
	// takes over leases an older tunneld left in /var/lib/tlsvpn).
	suffix := make([]byte, 4)
	rand.Read(suffix)
	tunA, tunB := "tvtA"+hex.EncodeToString(suffix), "tvtB"+hex.EncodeToString(suffix)
	stateA := filepath.Join(stateRoot, tunA)
	if _, err := os.Stat(stateRoot); os.IsNotExist(err) {
		t.Cleanup(func() { os.Remove(stateRoot) }) // only if we made it and it is empty
	}
	t.Cleanup(func() { os.RemoveAll(stateA) })
	stateB := t.TempDir()
	subnetA, subnetB := "100.64.10.0/24", "100.64.20.0/24"
	listenA, listenB := serverIPs[0]+":443", serverIPs[1]+":443"

	// B starts first, so it is B that turns forwarding on: A must keep it
	// when B stops.
	lanRoute := []string{"--route", "198.18.50.0/24", "--nat", "--keepalive", "2s"}
	srvB := start(t, server, tunneld, append(append([]string{"--tun", tunB, "--subnet", subnetB, "--listen", listenB, "--state-dir", stateB}, lanRoute...), creds...)...)
	eventually(t, "tunneld B listening", func() bool { return strings.Contains(srvB.log.String(), "msg=listening") })
	srvA := start(t, server, tunneld, append(append([]string{"--tun", tunA, "--subnet", subnetA, "--listen", listenA}, lanRoute...), creds...)...)
	eventually(t, "tunneld A listening", func() bool { return strings.Contains(srvA.log.String(), "msg=listening") })
	connect := func(i int, name, want string) {
		t.Helper()
		start(t, laptops[i], tunnelc, "--server", serverIPs[i]+":443",
			"--cert", e.file(name+".crt"), "--key", e.file(name+".key"), "--ca", e.file("ca.crt"))
		eventually(t, name+" tunnel address", func() bool { return hasAddr(laptops[i], "tunnelc0", netip.MustParsePrefix(want)) })
	}
	connect(0, "laptop1", "100.64.10.2/24")
	connect(1, "laptop2", "100.64.20.2/24")
	// A client works: it reaches its server and, forwarded and
	// masqueraded, the LAN.
	works := func(what string, i int, serverAddr string) {
		t.Helper()
		for _, dst := range []string{serverAddr, "198.18.50.2"} {
			if err := ping(t, laptops[i], dst); err != nil {
				t.Fatalf("%s: client %d: %v", what, i+1, err)
			}
		}
	}
	worksA := func(what string) { t.Helper(); works(what, 0, "100.64.10.1") }
	worksA("side by side")
	works("side by side", 1, "100.64.20.1")

	tables := func() string { // sorted: nft lists them in creation order
		ls := slices.Sorted(strings.Lines(server.Run(t, "nft", "list", "tables")))
		return strings.Join(ls, "")
	}
	if got, want := tables(), "table inet tlsvpn-"+tunA+"\ntable inet tlsvpn-"+tunB+"\n"; got != want {
		t.Fatalf("nft list tables = %q, want %q", got, want)
	}
	tableA := server.Run(t, "nft", "list", "table", "inet", routing.FirewallTable(tunA))
	for _, want := range []string{"ip saddr " + subnetA + " masquerade", "chain isolate_clients", "chain clamp_mss", `oifname "` + tunA + `"`} {
		if !strings.Contains(tableA, want) {
			t.Errorf("A's table lacks %q:\n%s", want, tableA)
		}
	}
	if strings.Contains(tableA, subnetB) || strings.Contains(tableA, tunB) {
		t.Errorf("A's table holds B's rules:\n%s", tableA)
	}
	if _, err := os.Stat(filepath.Join(stateA, "leases.json")); err != nil {
		t.Errorf("A's leases are not in its default state directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(stateB, "leases.json")); err != nil {
		t.Errorf("B's leases are not in its --state-dir: %v", err)
	}

	// A third instance that collides with A or B in one way each.
	// Standard output only: ip prints passing warnings on standard error
	// ("Peer netns reference is invalid." while another test's namespace
	// goes away), which are not a change of this namespace.
	snapshot := func() string {
		var out strings.Builder
		for _, args := range [][]string{{"nft", "list", "ruleset"}, {"ip", "addr"}, {"ip", "route", "show", "table", "all"}, {"ip", "link"}} {
			b, err := server.Cmd(t.Context(), args[0], args[1:]...).Output()
			if err != nil {
				t.Fatalf("%s: %v", strings.Join(args, " "), err)
			}
			out.Write(b)
		}
		return out.String()
	}
	// The veths' IPv6 link-local addresses settle (duplicate address
	// detection) on their own; wait, so that the snapshots see only what
	// a start would change.
	eventually(t, "IPv6 duplicate address detection", func() bool {
		return !strings.Contains(server.Run(t, "ip", "addr"), "tentative")
	})
	pidA := strconv.Itoa(srvA.cmd.Process.Pid)
	for _, tc := range []struct {
		name string
		args []string
		want []string // in the error, each once
	}{
		// Cases that are not about the state directory keep theirs out of
		// /var/lib/tlsvpn (a start refused late has already claimed it).
		{"overlapping subnet", []string{"--tun", "tvtC0", "--subnet", "100.64.10.128/25", "--listen", serverIPs[0] + ":4443", "--state-dir", t.TempDir()},
			[]string{"--subnet 100.64.10.128/25: tunnel subnet 100.64.10.128/25 overlaps the address 100.64.10.1/24 on " + tunA}},
		// Without a control socket, which would answer first (A's is live).
		{"TUN name in use", []string{"--tun", tunA, "--subnet", "100.64.30.0/24", "--listen", serverIPs[0] + ":4443", "--control", ""},
			[]string{"--tun " + tunA + ": interface " + tunA + " already exists (its TUN device is held by tunneld, pid " + pidA + ")"}},
		{"listen address in use", []string{"--tun", "tvtC0", "--subnet", "100.64.30.0/24", "--listen", listenA, "--state-dir", t.TempDir()},
			[]string{"--listen " + listenA + ": bind: address already in use"}},
		{"state dir in use", []string{"--tun", "tvtC0", "--subnet", "100.64.30.0/24", "--listen", serverIPs[0] + ":4443", "--state-dir", stateB},
			[]string{"--state-dir " + stateB + " is in use by tunneld --tun " + tunB + " (pid " + strconv.Itoa(srvB.cmd.Process.Pid) + ")"}},
		{"default state dir in use", []string{"--tun", "tvtC0", "--subnet", "100.64.30.0/24", "--listen", serverIPs[0] + ":4443", "--state-dir", stateA},
			[]string{"is in use by tunneld --tun " + tunA + " (pid " + pidA + ")"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshot()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			// A control socket of its own, not /run/tlsvpn/tvtC0.sock: the
			// test must leave the host's /run/tlsvpn as it found it.
			args := append(ownControl(t, tunneld, tc.args), creds...)
			out, err := server.Cmd(ctx, tunneld, args...).CombinedOutput()
			if err == nil {
				t.Fatalf("third instance started:\n%s", out)
			}
			for _, w := range tc.want {
				if n := strings.Count(string(out), w); n != 1 {
					t.Errorf("output says %q %d times, want once:\n%s", w, n, out)
				}
			}
			if after := snapshot(); after != before {
				t.Errorf("the refused start changed the namespace:\n%s\nafter:\n%s", lineDiff(before, after), after)
			}
			worksA("after a refused start")
		})
	}

	// Stopping B leaves A as it was.
	if err := srvB.stop(t); err != nil {
		t.Fatalf("tunneld B exit: %v", err)
	}
	if got, want := tables(), "table inet tlsvpn-"+tunA+"\n"; got != want {
		t.Errorf("after B stopped, nft list tables = %q, want %q", got, want)
	}
	if got := server.Run(t, "nft", "list", "table", "inet", routing.FirewallTable(tunA)); got != tableA {
		t.Errorf("A's table changed when B stopped:\n%s\nwas:\n%s", got, tableA)
	}
	worksA("after B stopped")
	transfer(t, laptops[0], lan, "198.18.50.2:5101", 4<<20)
	if got := strings.TrimSpace(server.Run(t, "sysctl", "-n", "net.ipv4.ip_forward")); got != "1" {
		t.Errorf("after B stopped, net.ipv4.ip_forward = %s, want 1 (A forwards)", got)
	}
	if !strings.Contains(srvB.log.String(), "leaving IP forwarding on: other instances forward") {
		t.Errorf("B did not say why it left forwarding on:\n%s", srvB.log)
	}
	if !strings.Contains(srvB.log.String(), "deleted nftables table") {
		t.Errorf("B did not report deleting its table:\n%s", srvB.log)
	}
	if t.Failed() {
		t.Logf("A's log:\n%s", srvA.log)
	}
}

// lineDiff returns the lines only in a (-) and only in b (+).
func lineDiff(a, b string) string {
	count := map[string]int{}
	for l := range strings.Lines(a) {
		count[l]++
	}
	for l := range strings.Lines(b) {
		count[l]--
	}
	var out strings.Builder
	for l, n := range count {
		for ; n > 0; n-- {
			out.WriteString("- " + l)
		}
		for ; n < 0; n++ {
			out.WriteString("+ " + l)
		}
	}
	return out.String()
}
