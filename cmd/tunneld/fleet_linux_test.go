package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"tlsvpn/control"
	"tlsvpn/routing/netnstest"
	"tlsvpn/state/etcdtest"
	"tlsvpn/tunnel/tunneltest"
)

// startCmd starts cmd (made by the caller, e.g. wrapped by a host's mount
// namespace) as a proc that is stopped in t.Cleanup.
func startCmd(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{cmd: cmd, log: new(tunneltest.SyncBuffer), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("log of %s:\n%s", strings.Join(cmd.Args, " "), p.log)
		}
	})
	return p
}

// fleetLink joins ns to each gateway of gws by a veth: gateway i has
// 198.18.NET.4i+1/30, ns the next address. It returns the gateways'
// addresses.
func fleetLink(t *testing.T, gws []*netnstest.NS, ns *netnstest.NS, net byte) []netip.Addr {
	t.Helper()
	var ips []netip.Addr
	for i, gw := range gws {
		g := netip.AddrFrom4([4]byte{198, 18, net, byte(4*i + 1)})
		netnstest.Veth(t, gw, netip.PrefixFrom(g, 30), ns, netip.PrefixFrom(g.Next(), 30))
		ips = append(ips, g)
	}
	return ips
}

// fleetStore starts a three-member etcd cluster in a namespace of its
// own, joined to each gateway's namespace by a veth (198.18.1.0/24,
// see fleetLink), and returns it with, for each gateway, the member
// URLs it reaches.
func fleetStore(t *testing.T, gws ...*netnstest.NS) (*etcdtest.Cluster, [][]string) {
	t.Helper()
	store := netnstest.New(t)
	gwIPs := fleetLink(t, gws, store, 1)
	// The members listen on every address of the store's namespace;
	// gateway i reaches them at the store's end of its veth.
	ports := []int{2379, 2380, 2381, 2382, 2383, 2384}
	cluster := etcdtest.Start(t, 3, etcdtest.Options{Cmd: store.Cmd, Dial: store.Dial, ListenHost: "0.0.0.0", Ports: ports})
	endpoints := make([][]string, len(gws))
	for i := range gws {
		for _, p := range []int{ports[0], ports[2], ports[4]} {
			endpoints[i] = append(endpoints[i], fmt.Sprintf("http://%s:%d", gwIPs[i].Next(), p))
		}
	}
	return cluster, endpoints
}

// fleetConfig writes the config file of gateway name in dir (state:
// etcd over endpoints, the server certificate vpn.test of the PKI in
// pki, subnet 100.64.0.0/24, debug logs) with extra YAML lines, and
// returns its path.
func fleetConfig(t *testing.T, dir, name, pki string, endpoints []string, extra string) string {
	t.Helper()
	file := func(n string) string { return filepath.Join(pki, n) }
	path := filepath.Join(dir, name+".yaml")
	cfg := fmt.Sprintf("listen: 0.0.0.0:443\ncert: %s\nkey: %s\nca: %s\nsubnet: 100.64.0.0/24\nkeepalive: 2s\n"+
		"state-dir: %s\nlog-level: debug\nstate: etcd\netcd-endpoints: [%s]\ngateway-name: %s\n",
		file("vpn.test.crt"), file("vpn.test.key"), file("ca.crt"), filepath.Join(dir, name+"-state"), strings.Join(endpoints, ", "), name)
	if err := os.WriteFile(path, []byte(cfg+extra), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// publishCRL publishes the fleet's CRL (crl.pem of the PKI in pki) with
// tunneld fleet publish-crl, run in ns, which reaches the store.
func publishCRL(t *testing.T, ns *netnstest.NS, tunneld, pki, config string) {
	t.Helper()
	if out, err := ns.Cmd(t.Context(), tunneld, "fleet", "publish-crl", filepath.Join(pki, "crl.pem"), "--config", config).CombinedOutput(); err != nil || !strings.Contains(string(out), "published") {
		t.Fatalf("fleet publish-crl: %v\n%s", err, out)
	}
}

// fleetStatus returns 'tunneld status --json' of the gateway at ctl.
func fleetStatus(t *testing.T, tunneld, ctl string) control.ServerStatus {
	t.Helper()
	out, err := exec.Command(tunneld, "status", "--control", ctl, "--json").CombinedOutput()
	var st control.ServerStatus
	if err == nil {
		err = json.Unmarshal(out, &st)
	}
	if err != nil {
		t.Fatalf("tunneld status: %v\n%s", err, out)
	}
	return st
}

// TestNetNSFleetFailover: two gateways with state: etcd share a
// three-member etcd cluster (in a namespace of its own, reached over
// veths). A client reaches them by one name that resolves to both; the
// gateway holding its session is killed with -9, and the client comes
// back on the other with the same tunnel address, by TLS resumption with
// the fleet's shared ticket keys. Then its certificate is revoked and
// the CRL published from the dead gateway's host: the session on the
// other gateway closes within seconds and the client is refused. Between
// the two, etcd is stopped: the session stays, a new identity is refused
// and 'tunneld status' says why, and it is served once etcd is back.
func TestNetNSFleetFailover(t *testing.T) {
	etcdtest.Binary(t)
	tunneld, tunnelc := binaries(t)
	client, client2 := netnstest.New(t), netnstest.New(t)
	gws := [2]*netnstest.NS{netnstest.New(t), netnstest.New(t)}
	names := [2]string{"gw-a", "gw-b"}
	gwIPs, gwIPs2 := fleetLink(t, gws[:], client, 0), fleetLink(t, gws[:], client2, 2)
	cluster, endpoints := fleetStore(t, gws[:]...)

	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	run, file := fleetPKI(t, tunneld, pki, "laptop", "phone")

	configs, controls := [2]string{}, [2]string{}
	for i := range gws {
		configs[i] = fleetConfig(t, dir, names[i], pki, endpoints[i], "")
		controls[i] = controlPath(t)
	}
	if out := run("check", "--config", configs[0]); !strings.Contains(out, ": ok") {
		t.Fatalf("check: %s", out)
	}
	// The fleet's CRL, published once for every gateway (from gw-a's
	// namespace, which reaches the store).
	publishCRL(t, gws[0], tunneld, pki, configs[0])
	var gw [2]*proc
	for i := range gws {
		gw[i] = start(t, gws[i], tunneld, "--config", configs[i], "--control", controls[i])
		eventually(t, names[i]+" listening", func() bool { return strings.Contains(gw[i].log.String(), "msg=listening") })
	}

	// One name, both gateways.
	h := newHost(t, client, 0, 0, fmt.Sprintf("%s vpn.test\n%s vpn.test\n", gwIPs[0], gwIPs[1]))
	c := startCmd(t, h.cmd(context.Background(), tunnelc, "--server", "vpn.test:443", "--cert", file("laptop.crt"), "--key", file("laptop.key"),
		"--ca", file("ca.crt"), "--log-level", "debug", "--control", controlPath(t)))
	want := netip.MustParsePrefix("100.64.0.2/24")
	eventually(t, "laptop's tunnel address", func() bool { return hasAddr(client, "tunnelc0", want) })
	established := regexp.MustCompile(`msg="session established".* peer=laptop.* tunnel_addr=(\S+).* resumed=(\w+)`)
	first := -1
	eventually(t, "a gateway to hold laptop's session", func() bool {
		for i := range gw {
			if established.MatchString(gw[i].log.String()) {
				first = i
				return true
			}
		}
		return false
	})
	other := 1 - first
	if err := ping(t, client, "-c", "1", "-W", "2", "100.64.0.1"); err != nil {
		t.Fatalf("ping through %s: %v", names[first], err)
	}
	status := func(i int) control.ServerStatus { t.Helper(); return fleetStatus(t, tunneld, controls[i]) }
	eventually(t, names[other]+" to see laptop's session in the directory", func() bool {
		st := status(other)
		return st.Store != nil && st.Store.Up && st.Store.FleetSessions == 1 && len(st.Store.Gateways) == 2 &&
			st.Store.Gateways[first].Sessions == 1 && st.Store.Gateways[other].Sessions == 0
	})

	// The gateway holding the session dies.
	killed := time.Now()
	gw[first].cmd.Process.Kill()
	<-gw[first].done
	var m []string
	deadline := time.Now().Add(30 * time.Second)
	for m == nil {
		m = established.FindStringSubmatch(gw[other].log.String())
		if time.Now().After(deadline) {
			t.Fatalf("laptop not back on %s within 30s of %s's death", names[other], names[first])
		}
		time.Sleep(20 * time.Millisecond)
	}
	failover := time.Since(killed)
	if m[1] != want.String() {
		t.Errorf("on %s laptop got %s; want its address %v", names[other], m[1], want)
	}
	if m[2] != "true" {
		t.Errorf("laptop's session on %s resumed=%s; want a resumption with the fleet's ticket keys", names[other], m[2])
	}
	eventually(t, "laptop's tunnel address after the failover", func() bool { return hasAddr(client, "tunnelc0", want) })
	if err := ping(t, client, "-c", "1", "-W", "2", "100.64.0.1"); err != nil {
		t.Fatalf("ping through %s after the failover: %v", names[other], err)
	}
	st := status(other)
	if st.Store == nil || !st.Store.Up || st.Store.Gateway != names[other] || st.Handshakes.Resumed != 1 {
		t.Errorf("status of %s: store %+v, handshakes %+v; want the store up and one resumed session", names[other], st.Store, st.Handshakes)
	}
	if !strings.Contains(run("status", "--control", controls[other]), "store:") {
		t.Error("tunneld status shows no store line")
	}
	t.Logf("failover from %s (killed -9) to %s: session back after %v, same address %s, resumed %s",
		names[first], names[other], failover.Round(time.Millisecond), m[1], m[2])

	// etcd down: the live session stays, a new identity is refused (and
	// counted), status says so; etcd back: the new identity is served.
	cluster.Stop()
	eventually(t, names[other]+" to report the store down", func() bool { st := status(other); return st.Store != nil && !st.Store.Up })
	if err := ping(t, client, "-c", "1", "-W", "2", "100.64.0.1"); err != nil {
		t.Fatalf("ping through %s with etcd down: %v", names[other], err)
	}
	h2 := newHost(t, client2, 0, 0, fmt.Sprintf("%s vpn.test\n%s vpn.test\n", gwIPs2[0], gwIPs2[1]))
	phoneArgs := []string{"--server", "vpn.test:443", "--cert", file("phone.crt"), "--key", file("phone.key"), "--ca", file("ca.crt"), "--log-level", "debug"}
	phone := startCmd(t, h2.cmd(context.Background(), append([]string{tunnelc}, append(phoneArgs, "--control", controlPath(t))...)...))
	eventually(t, "the new identity refused with etcd down", func() bool {
		return logLine(gw[other].log.String(), "refusing client: no address", "peer=phone") != ""
	})
	if !strings.Contains(logLine(gw[other].log.String(), "refusing client: no address", "peer=phone"), "state store unreachable") {
		t.Errorf("the refusal does not say why:\n%s", logLine(gw[other].log.String(), "refusing client: no address", "peer=phone"))
	}
	phone.stop(t)
	down := status(other)
	if down.Refusals["state_store_unreachable"] == 0 || !strings.Contains(run("status", "--control", controls[other]), "UNREACHABLE") {
		t.Errorf("status with etcd down: refusals %v, store %+v", down.Refusals, down.Store)
	}
	if !hasAddr(client, "tunnelc0", want) {
		t.Fatal("laptop lost its address while etcd was down")
	}
	cluster.Restart(t)
	eventually(t, names[other]+" to report the store up again", func() bool { st := status(other); return st.Store != nil && st.Store.Up })
	startCmd(t, h2.cmd(context.Background(), append([]string{tunnelc}, append(phoneArgs, "--control", controlPath(t))...)...))
	eventually(t, "the new identity's address once etcd is back", func() bool { return hasAddr(client2, "tunnelc0", netip.MustParsePrefix("100.64.0.3/24")) })

	// Revoked while its session is on the other gateway, and published
	// from elsewhere (the dead gateway's host still reaches the store):
	// the session closes within seconds and its reconnects, which offer
	// its ticket, are refused.
	run("pki", "revoke", "--dir", pki, "--name", "laptop")
	sessions := strings.Count(gw[other].log.String(), `msg="session established"`)
	failures := strings.Count(c.log.String(), "connect failed")
	revoked := time.Now()
	if out, err := gws[first].Cmd(t.Context(), tunneld, "fleet", "publish-crl", file("crl.pem"), "--config", configs[first]).CombinedOutput(); err != nil {
		t.Fatalf("fleet publish-crl: %v\n%s", err, out)
	}
	eventually(t, "the revoked session closed on "+names[other], func() bool {
		return logLine(gw[other].log.String(), "closing session: peer no longer authorized", "peer=laptop") != ""
	})
	closed := time.Since(revoked)
	if closed > 10*time.Second {
		t.Errorf("revoked session closed %v after the CRL was published; want within 10s", closed)
	}
	eventually(t, "the revoked client's reconnect refused", func() bool {
		return strings.Count(c.log.String(), "connect failed") > failures
	})
	if n := strings.Count(gw[other].log.String(), `msg="session established"`); n != sessions {
		t.Errorf("%s established %d sessions after the revocation", names[other], n-sessions)
	}
	t.Logf("revocation published from %s's host closed the session on %s after %v", names[first], names[other], closed.Round(time.Millisecond))
}
