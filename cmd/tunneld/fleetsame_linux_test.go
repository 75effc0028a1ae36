package main

// One identity on two gateways of a fleet at once (issue 16): the
// session directory in etcd makes the older session close as replaced,
// so one session of the identity survives in the whole fleet.
//
//	laptop1 --(198.18.0.0/30)-- gw-a --+
//	                                    +-- store (etcd) over 198.18.1.0/29
//	laptop2 --(198.18.0.4/30)-- gw-b --+

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"tlsvpn/control"
	"tlsvpn/routing/netnstest"
	"tlsvpn/state/etcdtest"
)

func TestNetNSFleetSameIdentity(t *testing.T) {
	etcdtest.Binary(t)
	tunneld, tunnelc := binaries(t)
	store := netnstest.New(t)
	gws := [2]*netnstest.NS{netnstest.New(t), netnstest.New(t)}
	laptops := [2]*netnstest.NS{netnstest.New(t), netnstest.New(t)}
	names := [2]string{"gw-a", "gw-b"}
	var storeIPs, gwIPs [2]netip.Addr
	for i := range gws {
		s := netip.AddrFrom4([4]byte{198, 18, 1, byte(4*i + 1)})
		netnstest.Veth(t, store, netip.PrefixFrom(s, 30), gws[i], netip.PrefixFrom(s.Next(), 30))
		storeIPs[i] = s
		g := netip.AddrFrom4([4]byte{198, 18, 0, byte(4*i + 1)})
		netnstest.Veth(t, gws[i], netip.PrefixFrom(g, 30), laptops[i], netip.PrefixFrom(g.Next(), 30))
		gwIPs[i] = g
	}
	port := 2479
	etcdtest.Start(t, 1, etcdtest.Options{Cmd: store.Cmd, Dial: store.Dial, ListenHost: "0.0.0.0", Ports: []int{port, port + 1}})

	dir := t.TempDir()
	run, file := fleetPKI(t, tunneld, filepath.Join(dir, "pki"), "laptop")
	var gw [2]*proc
	var controls [2]string
	for i := range gws {
		cfg := filepath.Join(dir, names[i]+".yaml")
		controls[i] = controlPath(t)
		content := fmt.Sprintf("listen: 0.0.0.0:443\ncert: %s\nkey: %s\nca: %s\nsubnet: 100.64.0.0/24\nkeepalive: 2s\n"+
			"state-dir: %s\nlog-level: debug\nstate: etcd\netcd-endpoints: [http://%s:%d]\ngateway-name: %s\n",
			file("vpn.test.crt"), file("vpn.test.key"), file("ca.crt"), filepath.Join(dir, names[i]+"-state"), storeIPs[i], port, names[i])
		if err := os.WriteFile(cfg, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if out, err := gws[0].Cmd(t.Context(), tunneld, "fleet", "publish-crl", file("crl.pem"), "--config", cfg).CombinedOutput(); err != nil {
				t.Fatalf("fleet publish-crl: %v\n%s", err, out)
			}
		}
		gw[i] = start(t, gws[i], tunneld, "--config", cfg, "--control", controls[i])
		eventually(t, names[i]+" listening", func() bool { return strings.Contains(gw[i].log.String(), "msg=listening") })
	}
	sessions := func(i int) int {
		var st control.ServerStatus
		if err := json.Unmarshal([]byte(run("status", "--control", controls[i], "--json")), &st); err != nil {
			t.Fatal(err)
		}
		return st.Sessions
	}
	laptop := func(i int) *proc {
		return start(t, laptops[i], tunnelc, "--server", gwIPs[i].String()+":443", "--server-name", "vpn.test",
			"--cert", file("laptop.crt"), "--key", file("laptop.key"), "--ca", file("ca.crt"), "--log-level", "debug")
	}
	want := netip.MustParsePrefix("100.64.0.2/24")

	first := laptop(0)
	eventually(t, "the first laptop's session on gw-a", func() bool { return hasAddr(laptops[0], "tunnelc0", want) })
	laptop(1)
	// gw-a closes its older session as soon as gw-b claims the identity.
	eventually(t, "gw-a to close its session as replaced by gw-b", func() bool {
		return strings.Contains(gw[0].log.String(), "replaced by a new session on gateway gw-b")
	})
	eventually(t, "the first laptop to be told", func() bool {
		return strings.Contains(first.log.String(), "session replaced by another connection with this client's identity")
	})
	// The first laptop stops; the second's session is the one left, on
	// gw-b, with the identity's one address.
	first.stop(t)
	eventually(t, "one session of the identity in the fleet, on gw-b", func() bool {
		return sessions(0) == 0 && sessions(1) == 1 && hasAddr(laptops[1], "tunnelc0", want)
	})
	if err := ping(t, laptops[1], "100.64.0.1"); err != nil {
		t.Errorf("through the surviving session: %v", err)
	}
}
