package server

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"tlsvpn/routing"
	"tlsvpn/state"
	"tlsvpn/state/etcdtest"
	"tlsvpn/tunnel"
	"tlsvpn/tunnel/tunneltest"
)

// jsonPolicy is a ParsePolicy for these tests: {"NAME": ["ROUTE", ...]}
// (tunneld's is the YAML of --clients, tested in cmd/tunneld).
func jsonPolicy(data []byte, pool, pool6 state.Leases) (Policies, error) {
	var m map[string][]string
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	out := Policies{}
	for name, routes := range m {
		e := ClientPolicy{Routes: []netip.Prefix{}}
		for _, r := range routes {
			p, err := netip.ParsePrefix(r)
			if err != nil {
				return nil, err
			}
			e.Routes = append(e.Routes, p)
		}
		out[name] = e
	}
	return out, nil
}

// fleetGateway is a gateway of a fleet in-process: its store, a tunnel
// server whose policy is the one New and the reloader put in force, and
// the reloader following the fleet's policy as Run does.
type fleetGateway struct {
	f        *fleet
	srv      *tunneltest.Server
	policies *atomic.Pointer[policySet]
	log      *tunneltest.SyncBuffer
	rl       *reloader
	cfg      Config
}

func startFleetGateway(t *testing.T, endpoints []string, name string, local func(pool, pool6 state.Leases) (Policies, error)) *fleetGateway {
	t.Helper()
	g := &fleetGateway{policies: new(atomic.Pointer[policySet]), log: new(tunneltest.SyncBuffer)}
	log := slog.New(slog.NewTextHandler(g.log, nil))
	cfg := fleetConfig(endpoints, name)
	cfg.Policy, cfg.PolicySource, cfg.ParsePolicy = local, "clients.yaml", jsonPolicy
	g.f = openTestFleet(t, cfg, log)
	pool, err := routing.NewPool(cfg.Subnet)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{fleet: g.f, pool: pool, log: log}
	clients, _, err := s.startPolicy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g.policies.Store(&policySet{clients: clients})
	g.srv = tunneltest.StartServer(t, tunneltest.ServerOptions{Claimed: g.f.dir.Claim, Released: g.f.dir.Release,
		Policy: func(id string) tunnel.Policy { return g.policies.Load().policy(id) }})
	g.cfg = cfg
	r := newReloader(&reloader{src: func() (Config, error) { return g.cfg, nil }, pool: pool, policies: g.policies, srv: g.srv.Server, crl: new(crlHolder), log: log, fleetPolicy: g.f.policy}, cfg)
	g.rl = r
	go r.watch(t.Context())
	return g
}

// routes is the routes the gateway's policy in force gives id.
func (g *fleetGateway) routes(id string) string { return fmt0(g.policies.Load().policy(id).Routes) }

func fmt0(ps []netip.Prefix) string {
	var s []string
	for _, p := range ps {
		s = append(s, p.String())
	}
	return strings.Join(s, ",")
}

// TestFleetPolicy: the clients policy published in etcd is in force on
// every gateway from the start (a local one is ignored, with a warning);
// a new publication reaches both gateways and reconnects only the client
// whose entry changed; one that does not validate keeps the policy in
// force and says why; deleting it puts the local policy back in force.
func TestFleetPolicy(t *testing.T) {
	c := etcdtest.Start(t, 1, etcdtest.Options{})
	publish := func(data string) {
		t.Helper()
		cli, err := state.DialEtcd(state.EtcdOptions{Endpoints: c.Endpoints()})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		if _, err := state.PublishPolicy(t.Context(), cli, "", []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	publish(`{"laptop": ["198.18.10.0/24"], "desk": ["198.18.30.0/24"], "phone": ["198.18.20.0/24"]}`)
	local := func(pool, pool6 state.Leases) (Policies, error) {
		return Policies{"laptop": {Routes: []netip.Prefix{netip.MustParsePrefix("198.18.99.0/24")}}}, nil
	}
	a := startFleetGateway(t, c.Endpoints(), "gw-a", local)
	b := startFleetGateway(t, c.Endpoints(), "gw-b", nil)
	if !strings.Contains(a.log.String(), "the local clients policy is ignored") {
		t.Errorf("gw-a's log does not say its local policy is ignored:\n%s", a.log.String())
	}
	laptop, desk := a.srv.StartClient(t, "laptop"), a.srv.StartClient(t, "desk")
	phone := b.srv.StartClient(t, "phone")
	if got := fmt0(laptop.Config.Routes); got != "198.18.10.0/24" {
		t.Fatalf("laptop was pushed routes %s; want the fleet's 198.18.10.0/24", got)
	}
	if got := fmt0(phone.Config.Routes); got != "198.18.20.0/24" {
		t.Fatalf("phone was pushed routes %s; want 198.18.20.0/24", got)
	}

	// laptop's entry changes: both gateways take it up; laptop's session
	// closes to apply it, desk's and phone's stay.
	publish(`{"laptop": ["198.18.10.0/24", "198.18.11.0/24"], "desk": ["198.18.30.0/24"], "phone": ["198.18.20.0/24"]}`)
	for _, g := range []*fleetGateway{a, b} {
		tunneltest.Eventually(t, func() bool { return g.routes("laptop") == "198.18.10.0/24,198.18.11.0/24" }, "a gateway to apply the new policy")
	}
	tunneltest.Eventually(t, func() bool { return a.srv.Server.Sessions() == 1 }, "laptop's session to close on gw-a")
	if why := laptop.Client.Status().LastError; !strings.Contains(why, "client policy changed") {
		t.Errorf("laptop's session ended with %q; want client policy changed", why)
	}
	for _, cl := range []*tunneltest.Client{desk, phone} {
		if why := cl.Client.Status().LastError; why != "" {
			t.Errorf("a client whose entry did not change lost its session: %q", why)
		}
	}
	if b.srv.Server.Sessions() != 1 {
		t.Errorf("gw-b has %d sessions; want phone's", b.srv.Server.Sessions())
	}

	// A policy that does not validate here changes nothing.
	publish(`{"laptop": ["not a prefix"]}`)
	for _, g := range []*fleetGateway{a, b} {
		tunneltest.Eventually(t, func() bool { return strings.Contains(g.log.String(), "does not validate on this gateway") }, "a gateway to refuse the policy")
		if got := g.routes("laptop"); got != "198.18.10.0/24,198.18.11.0/24" {
			t.Errorf("after a bad policy laptop's routes are %s; want the last good ones", got)
		}
	}
	if a.srv.Server.Sessions() != 1 || b.srv.Server.Sessions() != 1 {
		t.Errorf("a bad policy closed sessions: %d on gw-a, %d on gw-b", a.srv.Server.Sessions(), b.srv.Server.Sessions())
	}

	// A reload while the fleet's policy is in force ignores the local
	// one, even one that does not validate, and says which is in force.
	files, _ := testPKI(t)
	a.cfg.Cert, a.cfg.Key, a.cfg.CA = files.Cert, files.Key, files.CA
	a.cfg.Policy = policyOf("", nil, errors.New("clients.yaml:3: bad"))
	report, err := a.rl.Reload()
	if err != nil || !strings.Contains(report, "clients policy: the fleet's, etcd:/tlsvpn/clients (revision") || strings.Contains(report, "clients.yaml") {
		t.Errorf("Reload with the fleet's policy in force = %v:\n%s", err, report)
	}
	if got := a.routes("laptop"); got != "198.18.10.0/24,198.18.11.0/24" {
		t.Errorf("after a reload laptop's routes are %s; want the fleet's", got)
	}

	// Deleted from etcd: the local policy is in force again. gw-a's last
	// reload read a local one that does not validate, so gw-a keeps the
	// fleet's last one until a reload reads a good one; gw-b has none.
	cli := a.f.store.Client()
	if _, err := cli.Delete(t.Context(), state.PolicyKey("")); err != nil {
		t.Fatal(err)
	}
	tunneltest.Eventually(t, func() bool { return b.routes("phone") == "" && b.srv.Server.Sessions() == 0 }, "gw-b to drop phone's routes and reconnect it")
	tunneltest.Eventually(t, func() bool { return strings.Contains(a.log.String(), "the local one does not validate") }, "gw-a to say its local policy does not validate")
	if got := a.routes("laptop"); got != "198.18.10.0/24,198.18.11.0/24" {
		t.Errorf("gw-a dropped the fleet's last policy for a bad local one: laptop's routes are %s", got)
	}
	a.cfg.Policy = local
	if report, err := a.rl.Reload(); err != nil || !strings.Contains(report, "client policies reloaded from clients.yaml") {
		t.Errorf("Reload with the local policy fixed = %v:\n%s", err, report)
	}
	if got := a.routes("laptop"); got != "198.18.99.0/24" {
		t.Errorf("after the reload laptop's routes are %s; want the local 198.18.99.0/24", got)
	}
}

// TestFleetPolicyRefusedAtStart: a gateway does not start with a
// published policy that does not validate on it (there is no older one
// to keep), and says what to do.
func TestFleetPolicyRefusedAtStart(t *testing.T) {
	c := etcdtest.Start(t, 1, etcdtest.Options{})
	cli, err := state.DialEtcd(state.EtcdOptions{Endpoints: c.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := state.PublishPolicy(t.Context(), cli, "", []byte(`{"laptop": ["not a prefix"]}`)); err != nil {
		t.Fatal(err)
	}
	cfg := fleetConfig(c.Endpoints(), "gw-a")
	cfg.ParsePolicy = jsonPolicy
	log := slog.New(slog.DiscardHandler)
	f := openTestFleet(t, cfg, log)
	pool, err := routing.NewPool(cfg.Subnet)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = (&Server{fleet: f, pool: pool, log: log}).startPolicy(cfg)
	if err == nil || !strings.Contains(err.Error(), "clients policy published in etcd:/tlsvpn/clients (revision") ||
		!strings.Contains(err.Error(), "tunneld fleet publish-clients") {
		t.Fatalf("startPolicy with a bad published policy = %v", err)
	}
}
