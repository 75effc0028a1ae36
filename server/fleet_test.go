package server

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"tlsvpn/control"
	"tlsvpn/state"
	"tlsvpn/state/etcdtest"
	"tlsvpn/tunnel/tunneltest"
)

// TestValidateFleet: state etcd needs endpoints and a gateway name and
// takes its CRL from etcd only.
func TestValidateFleet(t *testing.T) {
	ok := Config{State: StateEtcd, Etcd: state.EtcdOptions{Endpoints: []string{"http://127.0.0.1:2379"}, Gateway: "gw-a"}}
	for _, tc := range []struct {
		name string
		c    Config
		want string // "" valid
	}{
		{"file", Config{}, ""},
		{"etcd", ok, ""},
		{"unknown", Config{State: "redis"}, `state "redis": want file or etcd`},
		{"no endpoints", Config{State: StateEtcd, Etcd: state.EtcdOptions{Gateway: "gw-a"}}, "etcd-endpoints required"},
		{"no name", Config{State: StateEtcd, Etcd: state.EtcdOptions{Endpoints: ok.Etcd.Endpoints}}, "gateway-name required"},
		{"crl file", func() Config { c := ok; c.CRL = "/etc/tlsvpn/pki/crl.pem"; return c }(), "published in etcd"},
	} {
		err := tc.c.validateFleet()
		if (err == nil) != (tc.want == "") || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: validateFleet = %v; want %q", tc.name, err, tc.want)
		}
	}
}

// fleetConfig is the configuration of gateway name of a fleet on the
// etcd at endpoints, with a short lease.
func fleetConfig(endpoints []string, name string) Config {
	return Config{State: StateEtcd, Etcd: state.EtcdOptions{Endpoints: endpoints, Gateway: name, TTL: 2 * time.Second, Timeout: time.Second}}.withDefaults()
}

// openTestFleet opens the fleet's state of cfg's gateway, closed at the
// end of the test; log nil: discarded.
func openTestFleet(t *testing.T, cfg Config, log *slog.Logger) *fleet {
	t.Helper()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f, err := openFleet(t.Context(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.store.Close() })
	return f
}

// TestFleetReplacedAcrossGateways: two gateways' tunnel servers wired to
// the fleet's directory as New wires them; the same identity connecting
// to the second closes its session on the first with "replaced", and the
// store's status counts one session in the fleet.
func TestFleetReplacedAcrossGateways(t *testing.T) {
	c := etcdtest.Start(t, 1, etcdtest.Options{})
	fa, fb := openTestFleet(t, fleetConfig(c.Endpoints(), "gw-a"), nil), openTestFleet(t, fleetConfig(c.Endpoints(), "gw-b"), nil)
	if _, err := fa.tickets.Keys(); err != nil {
		t.Fatalf("ticket keys after openFleet: %v", err)
	}
	start := func(f *fleet) *tunneltest.Server {
		s := tunneltest.StartServer(t, tunneltest.ServerOptions{Claimed: f.dir.Claim, Released: f.dir.Release})
		f.replaceOnOtherGateway(s.Server)
		return s
	}
	sa, sb := start(fa), start(fb)
	first := sa.StartClient(t, "laptop")
	tunneltest.Eventually(t, func() bool { return fb.status().FleetSessions == 1 }, "gw-b to see laptop's session")
	sb.StartClient(t, "laptop")
	tunneltest.Eventually(t, func() bool { return sa.Server.Sessions() == 0 && sb.Server.Sessions() == 1 }, "one session, on gw-b")
	if why := first.Client.Status().LastError; !strings.Contains(why, "replaced by a new session on gateway gw-b") {
		t.Fatalf("the first client's session ended with %q; want replaced by gw-b", why)
	}
	tunneltest.Eventually(t, func() bool {
		g := fa.status().Gateways
		return len(g) == 2 && g[0] == control.FleetGateway{Name: "gw-a"} && g[1] == control.FleetGateway{Name: "gw-b", Sessions: 1}
	}, "gw-a to see both gateways, laptop on gw-b")
	st := fa.status()
	if !st.Up || st.Gateway != "gw-a" || st.FleetSessions != 1 || st.Backend != "etcd" {
		t.Fatalf("status of gw-a's store: %+v", st)
	}
	if h, _ := fa.dir.Holder("laptop"); h != "gw-b" {
		t.Fatalf("holder of laptop seen from gw-a: %q; want gw-b", h)
	}

	// 'tunneld status' shows the store, and says when it is down.
	var b bytes.Buffer
	control.WriteServerStatus(&b, control.ServerStatus{Started: time.Now(), Store: st}, time.Now())
	if !strings.Contains(b.String(), `as gateway "gw-a": up for`) || !strings.Contains(b.String(), "1 sessions on 2 gateways: gw-a (0), gw-b (1)") {
		t.Errorf("status:\n%s", b.String())
	}
	c.Stop()
	tunneltest.Eventually(t, func() bool { return !fa.status().Up }, "gw-a to see the store down")
	b.Reset()
	control.WriteServerStatus(&b, control.ServerStatus{Started: time.Now(), Store: fa.status()}, time.Now())
	if !strings.Contains(b.String(), "UNREACHABLE for") {
		t.Errorf("status with the store down:\n%s", b.String())
	}
	for _, g := range fa.gauges() {
		if g.Name == "store_up" && g.Value() != 0 {
			t.Errorf("store_up = %v with the store down", g.Value())
		}
	}
}
