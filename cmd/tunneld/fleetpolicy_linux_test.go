package main

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"tlsvpn/routing/netnstest"
	"tlsvpn/state/etcdtest"
)

// TestNetNSFleetPolicy: two gateways with state: etcd and the clients
// policy published in etcd with 'tunneld fleet publish-clients'. Each
// client gets its routes from the published policy (gw-a's local clients:
// is ignored); a new version reaches both gateways and reconnects only
// the client whose entry changed; a version that does not validate is
// refused at FILE:LINE and changes nothing; 'tunneld clients --fleet' on
// either gateway lists both clients and where each is.
func TestNetNSFleetPolicy(t *testing.T) {
	etcdtest.Binary(t)
	tunneld, tunnelc := binaries(t)
	store := netnstest.New(t)
	gws := [2]*netnstest.NS{netnstest.New(t), netnstest.New(t)}
	clients := [2]*netnstest.NS{netnstest.New(t), netnstest.New(t)}
	names, ids := [2]string{"gw-a", "gw-b"}, [2]string{"laptop", "phone"}
	var storeIPs, gwIPs [2]netip.Addr
	for i, gw := range gws {
		s := netip.AddrFrom4([4]byte{198, 18, 1, byte(4*i + 1)})
		netnstest.Veth(t, store, netip.PrefixFrom(s, 30), gw, netip.PrefixFrom(s.Next(), 30))
		storeIPs[i] = s
		g := netip.AddrFrom4([4]byte{198, 18, 0, byte(4*i + 1)})
		netnstest.Veth(t, gw, netip.PrefixFrom(g, 30), clients[i], netip.PrefixFrom(g.Next(), 30))
		gwIPs[i] = g
	}
	etcdtest.Start(t, 1, etcdtest.Options{Cmd: store.Cmd, Dial: store.Dial, ListenHost: "0.0.0.0", Ports: []int{2379, 2380}})

	dir := t.TempDir()
	run, file := fleetPKI(t, tunneld, filepath.Join(dir, "pki"), ids[:]...)
	write := func(name, content string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var configs, controls [2]string
	for i := range gws {
		controls[i] = controlPath(t)
		cfg := fmt.Sprintf("listen: 0.0.0.0:443\ncert: %s\nkey: %s\nca: %s\nsubnet: 100.64.0.0/24\nstate-dir: %s\n"+
			"state: etcd\netcd-endpoints: [http://%s:2379]\ngateway-name: %s\n",
			file("vpn.test.crt"), file("vpn.test.key"), file("ca.crt"), filepath.Join(dir, names[i]+"-state"), storeIPs[i], names[i])
		if i == 0 { // ignored while the fleet's policy is published
			cfg += "clients:\n  laptop:\n    routes: [198.18.99.0/24]\n"
		}
		configs[i] = write(names[i]+".yaml", cfg)
	}
	publish := func(name, policy string) (string, error) {
		t.Helper()
		out, err := gws[0].Cmd(t.Context(), tunneld, "fleet", "publish-clients", write(name, policy), "--config", configs[0]).CombinedOutput()
		return strings.ReplaceAll(string(out), dir+"/", ""), err
	}
	if out, err := publish("clients.yaml", "laptop:\n  routes: [198.18.10.0/24]\nphone:\n  routes: [198.18.20.0/24]\n"); err != nil || !strings.Contains(out, "published clients.yaml (2 clients)") {
		t.Fatalf("fleet publish-clients: %v\n%s", err, out)
	}
	if out, err := gws[0].Cmd(t.Context(), tunneld, "fleet", "publish-crl", file("crl.pem"), "--config", configs[0]).CombinedOutput(); err != nil {
		t.Fatalf("fleet publish-crl: %v\n%s", err, out)
	}
	var gw [2]*proc
	for i := range gws {
		gw[i] = start(t, gws[i], tunneld, "--config", configs[i], "--control", controls[i])
		eventually(t, names[i]+" listening", func() bool { return strings.Contains(gw[i].log.String(), "msg=listening") })
	}
	if !strings.Contains(gw[0].log.String(), "the local clients policy is ignored") {
		t.Errorf("gw-a does not say its local policy is ignored:\n%s", gw[0].log.String())
	}
	routes := func(i int) string {
		out, _ := clients[i].Cmd(t.Context(), "ip", "route", "show").CombinedOutput()
		return string(out)
	}
	for i, id := range ids {
		start(t, clients[i], tunnelc, "--server", gwIPs[i].String()+":443", "--server-name", "vpn.test", "--cert", file(id+".crt"),
			"--key", file(id+".key"), "--ca", file("ca.crt"), "--tun", "tunnelc0", "--control", controlPath(t))
	}
	eventually(t, "laptop's route from the fleet's policy", func() bool { return hasRoute(routes(0), "198.18.10.0/24") })
	eventually(t, "phone's route from the fleet's policy", func() bool { return hasRoute(routes(1), "198.18.20.0/24") })
	if hasRoute(routes(0), "198.18.99.0/24") {
		t.Error("laptop got the route of gw-a's ignored local policy")
	}

	// laptop's entry changes: laptop reconnects with its new route on
	// gw-a; phone's session on gw-b is left alone.
	phoneSessions := countPeer(gw[1].log.String(), "phone")
	if out, err := publish("clients.yaml", "laptop:\n  routes: [198.18.11.0/24]\nphone:\n  routes: [198.18.20.0/24]\n"); err != nil {
		t.Fatalf("fleet publish-clients: %v\n%s", err, out)
	}
	eventually(t, "laptop's new route", func() bool { return hasRoute(routes(0), "198.18.11.0/24") && !hasRoute(routes(0), "198.18.10.0/24") })
	if logLine(gw[0].log.String(), "closing session to apply a new configuration", "peer=laptop") == "" {
		t.Errorf("gw-a did not say it closed laptop's session for the new policy:\n%s", gw[0].log.String())
	}
	eventually(t, "gw-b to apply the new policy", func() bool {
		return strings.Count(gw[1].log.String(), `msg="client policies reloaded"`) >= 1
	})
	if logLine(gw[1].log.String(), "closing session to apply a new configuration", "peer=phone") != "" {
		t.Error("gw-b closed phone's session, whose entry did not change")
	}
	if n := countPeer(gw[1].log.String(), "phone"); n != phoneSessions || !hasRoute(routes(1), "198.18.20.0/24") {
		t.Errorf("phone's session on gw-b: %d sessions established after the change (want none), routes:\n%s", n-phoneSessions, routes(1))
	}

	// A version that does not validate is refused, and nothing changes.
	out, err := publish("bad.yaml", "laptop:\n  routes: [198.18.12.1/24]\n")
	if err == nil || !strings.Contains(out, "bad.yaml:2: client \"laptop\": routes: \"198.18.12.1/24\" has host bits set") {
		t.Errorf("publishing a bad policy = %v\n%s", err, out)
	}

	// Who is where, asked of either gateway.
	for i := range gws {
		out := run("clients", "--fleet", "--control", controls[i])
		for _, want := range []string{"laptop    gw-a", "phone     gw-b", "2 sessions on 2 gateways", names[i] + " (this one)"} {
			if !strings.Contains(out, want) {
				t.Errorf("tunneld clients --fleet on %s lacks %q:\n%s", names[i], want, out)
			}
		}
	}
}

// fleetPKI makes a PKI in dir with the server certificate vpn.test that
// every gateway of a fleet presents and a client certificate per name in
// clients. It returns what runs tunneld (the test fails if it does) and
// what names a file of the PKI.
func fleetPKI(t *testing.T, tunneld, dir string, clients ...string) (run func(args ...string) string, file func(name string) string) {
	t.Helper()
	run = func(args ...string) string {
		t.Helper()
		out, err := exec.Command(tunneld, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("tunneld %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("pki", "init", "--dir", dir)
	run("pki", "issue", "--dir", dir, "--server", "--name", "vpn.test")
	for _, id := range clients {
		run("pki", "issue", "--dir", dir, "--client", "--name", id)
	}
	return run, func(name string) string { return filepath.Join(dir, name) }
}

// countPeer counts the sessions established for peer id in a gateway's log.
func countPeer(log, id string) int {
	n := 0
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, `msg="session established"`) && strings.Contains(l, "peer="+id+" ") {
			n++
		}
	}
	return n
}
