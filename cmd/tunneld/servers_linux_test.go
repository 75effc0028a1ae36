package main

// Several servers and sleep/wake (issue 15), with the real binaries in
// namespaces.

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"tlsvpn/control"
	"tlsvpn/routing/netnstest"
)

// hostsFile gives ns its own /etc/hosts (`ip netns exec` bind-mounts
// /etc/netns/NAME/hosts over it), removed after the test.
func hostsFile(t *testing.T, ns *netnstest.NS, content string) {
	t.Helper()
	if _, err := os.Stat("/etc/netns"); os.IsNotExist(err) {
		t.Cleanup(func() { os.Remove("/etc/netns") }) // only if we made it (and it is empty)
	}
	dir := filepath.Join("/etc/netns", ns.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	writeFile(t, filepath.Join(dir, "hosts"), "127.0.0.1 localhost\n"+content)
}

// TestNetNSSeveralServers: tunnelc with two servers, --full-tunnel and
// --kill-switch. Server A is down at start: tunnelc connects to B.
// 'tunnelc reconnect vpn-a.test:443' moves it to A once A is up; killing
// A moves it back to B, and a plain 'tunnelc reconnect' to A again once it
// is back. After every move the tunnel carries traffic, the
// route outside the tunnel is the one to the server in use (the other's
// goes into the tunnel), and the kill switch let each server through.
// Topology: laptop =(198.18.0.0/30)= srv, where A listens on 198.18.100.1
// and B on 198.18.100.2 (loopback addresses, reached through the
// laptop's default gateway, so the full tunnel would capture them but for
// the bypass route); vpn-b.test also resolves to 198.18.100.3, where
// nothing listens, so every address of a name is tried.
func TestNetNSSeveralServers(t *testing.T) {
	srv, laptop := netnstest.New(t), netnstest.New(t)
	tunneld, tunnelc := binaries(t)
	netnstest.Veth(t, srv, netip.MustParsePrefix("198.18.0.1/30"), laptop, netip.MustParsePrefix("198.18.0.2/30"))
	for _, a := range []string{"198.18.100.1/32", "198.18.100.2/32", "198.18.100.3/32"} {
		srv.Run(t, "ip", "addr", "add", a, "dev", "lo")
	}
	laptop.Run(t, "ip", "route", "add", "default", "via", "198.18.0.1")
	hostsFile(t, laptop, "198.18.100.1 vpn-a.test\n198.18.100.3 vpn-b.test\n198.18.100.2 vpn-b.test\n")

	pki := t.TempDir()
	e := &env{pki: pki}
	e.run(t, tunneld, "pki", "init", "--dir", pki)
	e.run(t, tunneld, "pki", "issue", "--dir", pki, "--server", "--name", "vpn-a.test")
	e.run(t, tunneld, "pki", "issue", "--dir", pki, "--server", "--name", "vpn-b.test")
	e.run(t, tunneld, "pki", "issue", "--dir", pki, "--client", "--name", "laptop")
	stateA, stateB := t.TempDir(), t.TempDir()
	server := func(name, listen, tun, subnet, state string) *proc {
		p := start(t, srv, tunneld, "--listen", listen, "--tun", tun, "--cert", e.file(name+".crt"), "--key", e.file(name+".key"),
			"--ca", e.file("ca.crt"), "--subnet", subnet, "--keepalive", "2s", "--state-dir", state)
		eventually(t, name+" listening", func() bool { return strings.Contains(p.log.String(), "msg=listening") })
		return p
	}
	addrA, addrB := netip.MustParsePrefix("100.64.1.2/24"), netip.MustParsePrefix("100.64.2.2/24")
	b := server("vpn-b.test", "198.18.100.2:443", "tunneld1", "100.64.2.0/24", stateB)

	ctlPath := controlPath(t)
	cli := start(t, laptop, tunnelc, "--server", "vpn-a.test:443", "--server", "vpn-b.test:443",
		"--cert", e.file("laptop.crt"), "--key", e.file("laptop.key"), "--ca", e.file("ca.crt"),
		"--full-tunnel", "--kill-switch", "--control", ctlPath, "--log-level", "debug")

	// on checks that the client uses the server at ip with tunnel address
	// want: traffic flows, status names it, and only its route stays
	// outside the tunnel.
	on := func(step, server, ip, other string, want netip.Prefix, serverTunnelIP string) {
		t.Helper()
		eventually(t, step+": tunnel address "+want.String(), func() bool { return hasAddr(laptop, "tunnelc0", want) })
		if err := ping(t, laptop, serverTunnelIP); err != nil {
			t.Fatalf("%s: no traffic through the tunnel: %v", step, err)
		}
		var st control.ClientStatus
		ctlJSON(t, tunnelc, &st, "status", "--control", ctlPath)
		if st.State != "up" || st.Server != server || st.ServerAddr != ip+":443" || !slices.Equal(st.Servers, []string{"vpn-a.test:443", "vpn-b.test:443"}) {
			t.Fatalf("%s: status = %+v, want up on %s (%s:443) of both servers", step, st, server, ip)
		}
		if out := laptop.Run(t, "ip", "route", "get", ip); strings.Contains(out, "tunnelc0") {
			t.Fatalf("%s: the route to the server in use goes into the tunnel: %s", step, out)
		}
		if out := laptop.Run(t, "ip", "route", "get", other); !strings.Contains(out, "dev tunnelc0") {
			t.Fatalf("%s: the route outside the tunnel did not move with the server: %s is %s", step, other, out)
		}
	}

	// A is down (refused): B, after trying its address that refuses too.
	on("A down at start", "vpn-b.test:443", "198.18.100.2", "198.18.100.1", addrB, "100.64.2.1")
	if out := laptop.Run(t, "nft", "list", "table", "inet", "tlsvpn-tunnelc0"); !strings.Contains(out, "198.18.100.1") ||
		!strings.Contains(out, "198.18.100.2") || !strings.Contains(out, "198.18.100.3") {
		t.Fatalf("the kill switch does not let every server address through:\n%s", out)
	}

	// A is up; the client stays on B until told.
	a := server("vpn-a.test", "198.18.100.1:443", "tunneld0", "100.64.1.0/24", stateA)
	r := ctl(t, tunnelc, "reconnect", "vpn-a.test:443", "--control", ctlPath)
	if r.code != 0 || r.stdout != "reconnecting to vpn-a.test:443 first\n" {
		t.Fatalf("tunnelc reconnect vpn-a.test:443: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	on("told to move to A", "vpn-a.test:443", "198.18.100.1", "198.18.100.2", addrA, "100.64.1.1")
	if !strings.Contains(cli.log.String(), `msg="tunnel moved to another server" server=vpn-a.test:443 tunnel_addr=100.64.1.2/24`) {
		t.Errorf("the move is not logged as one:\n%s", cli.log)
	}
	if r := ctl(t, tunnelc, "reconnect", "vpn-c.test:443", "--control", ctlPath); r.code != 1 || !strings.Contains(r.stderr, "not one of this tunnelc's servers (vpn-a.test:443, vpn-b.test:443)") {
		t.Errorf("reconnect to an unknown server: exit %d\n%s", r.code, r.stderr)
	}

	// A fails (killed): back to B, with the same address B gave before.
	a.cmd.Process.Kill()
	<-a.done
	on("A killed", "vpn-b.test:443", "198.18.100.2", "198.18.100.1", addrB, "100.64.2.1")
	if !strings.Contains(b.log.String(), "laptop") {
		t.Errorf("B's log does not show the laptop:\n%s", b.log)
	}

	// A is back; 'tunnelc reconnect' with no server moves to another.
	server("vpn-a.test", "198.18.100.1:443", "tunneld0", "100.64.1.0/24", stateA)
	r = ctl(t, tunnelc, "reconnect", "--control", ctlPath)
	if r.code != 0 || r.stdout != "reconnecting to another server than vpn-b.test:443\n" {
		t.Fatalf("tunnelc reconnect: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	on("told to move on", "vpn-a.test:443", "198.18.100.1", "198.18.100.2", addrA, "100.64.1.1")
	if err := cli.stop(t); err != nil {
		t.Fatalf("tunnelc exit: %v", err)
	}
	if out := laptop.Run(t, "ip", "route", "show", "table", "main"); strings.Contains(out, "198.18.100.") {
		t.Fatalf("a route to a server left after exit:\n%s", out)
	}
}

// TestNetNSSleepWake: tunnelc is stopped (SIGSTOP, what a suspend looks
// like to it) for longer than the keepalive timeout (the server drops
// the session) while the laptop moves to another uplink: the old one goes
// dead and the default route moves, so the connection's local address is
// no longer the one traffic leaves from, though it stays on the (dead)
// interface and the address watch sees nothing. After SIGCONT, tunnelc
// notices the clock jump, says so, and is back within a few seconds, not
// after its own keepalive timeout, with the same tunnel address.
// The keepalive is 5s (a timeout of 15s) and the stop 20s, standing in
// for the hour of a real sleep with the default 15s (45s).
// Topology: laptop =(uplink A 198.18.0.0/29, uplink B 198.18.0.8/29)=
// server, which listens on 198.18.100.1 (on its loopback).
func TestNetNSSleepWake(t *testing.T) {
	server, laptop := netnstest.New(t), netnstest.New(t)
	tunneld, tunnelc := binaries(t)
	srvA, _ := netnstest.Veth(t, server, netip.MustParsePrefix("198.18.0.1/29"), laptop, netip.MustParsePrefix("198.18.0.2/29"))
	netnstest.Veth(t, server, netip.MustParsePrefix("198.18.0.9/29"), laptop, netip.MustParsePrefix("198.18.0.10/29"))
	server.Run(t, "ip", "addr", "add", "198.18.100.1/32", "dev", "lo")
	laptop.Run(t, "ip", "route", "add", "default", "via", "198.18.0.1")
	pki := t.TempDir()
	e := &env{pki: pki}
	e.run(t, tunneld, "pki", "init", "--dir", pki)
	e.run(t, tunneld, "pki", "issue", "--dir", pki, "--server", "--name", "server", "--ip", "198.18.100.1")
	e.run(t, tunneld, "pki", "issue", "--dir", pki, "--client", "--name", "laptop")
	srv := start(t, server, tunneld, "--listen", "198.18.100.1:443", "--cert", e.file("server.crt"), "--key", e.file("server.key"),
		"--ca", e.file("ca.crt"), "--subnet", "100.64.0.0/24", "--keepalive", "5s", "--state-dir", t.TempDir())
	eventually(t, "tunneld listening", func() bool { return strings.Contains(srv.log.String(), "msg=listening") })
	ctlPath := controlPath(t)
	cli := start(t, laptop, tunnelc, "--server", "198.18.100.1:443", "--cert", e.file("laptop.crt"),
		"--key", e.file("laptop.key"), "--ca", e.file("ca.crt"), "--control", ctlPath)
	eventually(t, "client address", func() bool { return hasAddr(laptop, "tunnelc0", clientAddr) })
	if err := ping(t, laptop, "100.64.0.1"); err != nil {
		t.Fatal(err)
	}

	// Asleep: the server gives up on the session; the laptop wakes on
	// uplink B.
	const asleep = 20 * time.Second
	if err := cli.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	t.Logf("tunnelc stopped for %v", asleep)
	resumed := false
	resume := func() {
		if !resumed {
			cli.cmd.Process.Signal(syscall.SIGCONT)
			resumed = true
		}
	}
	defer resume() // so that the cleanup's SIGTERM is heard
	server.Run(t, "ip", "link", "set", srvA, "down")
	laptop.Run(t, "ip", "route", "replace", "default", "via", "198.18.0.9")
	time.Sleep(asleep - time.Since(stopped)) // the suspend itself
	// The server checks every interval: it gives up between 15s and 20s.
	eventually(t, "the server to drop the silent session", func() bool { return strings.Contains(srv.log.String(), "keepalive timeout") })
	t.Logf("the server dropped the session after %v", time.Since(stopped).Round(time.Second))
	from := len(cli.log.String())
	resume()
	woke := time.Now()
	eventually(t, "client reconnected", func() bool { return strings.Contains(cli.log.String()[from:], "msg=reconnected") })
	back := time.Since(woke)
	after := cli.log.String()[from:]
	slept, err := time.ParseDuration(logAttr(logLine(after, `msg="woke up; reconnecting"`), "slept"))
	if err != nil || slept < asleep-2*time.Second || slept > time.Since(stopped) {
		t.Errorf("no wake-up line with the time asleep (about %v):\n%s", asleep, after)
	}
	// The keepalive timeout is 15s; the address watch saw no change.
	if back > 5*time.Second {
		t.Errorf("back %v after waking, want within a few seconds", back.Round(time.Millisecond))
	}
	if line := logLine(after, "msg=reconnected"); !strings.Contains(line, "tunnel_addr="+clientAddr.String()) {
		t.Errorf("reconnected with another tunnel address: %s", line)
	}
	if !hasAddr(laptop, "tunnelc0", clientAddr) {
		t.Errorf("tunnel address %v gone after the wake-up", clientAddr)
	}
	if err := ping(t, laptop, "100.64.0.1"); err != nil {
		t.Fatalf("tunnel after the wake-up: %v", err)
	}
	var st control.ClientStatus
	ctlJSON(t, tunnelc, &st, "status", "--control", ctlPath)
	if st.State != "up" || st.Reconnects < 1 || !slices.Contains(st.Addresses, clientAddr) || !strings.HasPrefix(st.ServerAddr, "198.18.100.1:") {
		t.Errorf("status after the wake-up = %+v", st)
	}
	t.Logf("asleep %v; back %v after SIGCONT; %s", asleep, back.Round(time.Millisecond), fmt.Sprint(logLine(after, "msg=reconnected")))
}
