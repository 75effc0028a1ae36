package server

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"tlsvpn/control"
	"tlsvpn/state/etcdtest"
	"tlsvpn/tunnel/tunneltest"
)

// TestFleetClients: 'tunneld clients --fleet' on either of two gateways
// lists every identity with a session on any of them, the gateway that
// holds it and its leased address, and follows a client that moves; a
// gateway on its own says it is not in a fleet.
func TestFleetClients(t *testing.T) {
	c := etcdtest.Start(t, 1, etcdtest.Options{})
	type gw struct {
		f   *fleet
		srv *tunneltest.Server
		cs  *controlSource
	}
	open := func(name string) gw {
		t.Helper()
		f := openTestFleet(t, fleetConfig(c.Endpoints(), name), nil)
		pool, err := f.leases(DefaultSubnet)
		if err != nil {
			t.Fatal(err)
		}
		srv := tunneltest.StartServer(t, tunneltest.ServerOptions{Claimed: f.dir.Claim, Released: f.dir.Release})
		f.replaceOnOtherGateway(srv.Server)
		return gw{f: f, srv: srv, cs: &controlSource{srv: srv.Server, fleetSessions: func() []control.FleetSession { return f.sessions(pool, nil) }}}
	}
	a, b := open("gw-a"), open("gw-b")
	// The addresses of the fleet's leases, as a gateway's sessions get them.
	leases, err := a.f.leases(DefaultSubnet)
	if err != nil {
		t.Fatal(err)
	}
	laptopAddr, err := leases.Assign("laptop")
	if err != nil {
		t.Fatal(err)
	}
	a.srv.StartClient(t, "laptop")
	a.srv.StartClient(t, "desk")
	b.srv.StartClient(t, "phone")

	list := func(g gw) []control.FleetSession {
		t.Helper()
		v, err := g.cs.handle(t.Context(), "clients", []string{"--fleet"})
		if err != nil {
			t.Fatal(err)
		}
		return v.([]control.FleetSession)
	}
	render := func(l []control.FleetSession) string {
		var w bytes.Buffer
		if err := control.WriteFleetSessions(&w, l); err != nil {
			t.Fatal(err)
		}
		return w.String()
	}
	// Each gateway learns the other's sessions and the fleet's leases
	// through etcd's watch: a moment after they were made.
	hasLaptopAddr := func(l []control.FleetSession) bool {
		for _, s := range l {
			if s.Identity == "laptop" {
				return len(s.Addresses) == 1 && s.Addresses[0] == laptopAddr
			}
		}
		return false
	}
	tunneltest.Eventually(t, func() bool {
		la, lb := list(a), list(b)
		return len(la) == 3 && len(lb) == 3 && hasLaptopAddr(la) && hasLaptopAddr(lb)
	}, "both gateways to list three sessions, laptop's with its leased address")
	for _, g := range []gw{a, b} {
		l := list(g)
		me := g.f.store.Gateway()
		got := []string{}
		for _, s := range l {
			got = append(got, s.Identity+"@"+s.Gateway+"/"+fmtAddrs(s.Addresses)+here(s.Here))
		}
		wantRows := []string{"desk@gw-a/" + here(me == "gw-a"), "laptop@gw-a/" + laptopAddr.String() + here(me == "gw-a"), "phone@gw-b/" + here(me == "gw-b")}
		if strings.Join(got, " ") != strings.Join(wantRows, " ") {
			t.Errorf("clients --fleet on %s: %v; want %v", me, got, wantRows)
		}
	}
	wantTable := "IDENTITY  GATEWAY          ADDRESSES\n" +
		"desk      gw-a             -\n" +
		"laptop    gw-a             " + laptopAddr.String() + "\n" +
		"phone     gw-b (this one)  -\n" +
		"3 sessions on 2 gateways\n"
	if got := render(list(b)); got != wantTable {
		t.Errorf("'tunneld clients --fleet' on gw-b:\n%s\nwant:\n%s", got, wantTable)
	}

	// laptop moves to gw-b: both gateways list it there, once.
	b.srv.StartClient(t, "laptop")
	tunneltest.Eventually(t, func() bool {
		for _, s := range list(a) {
			if s.Identity == "laptop" {
				return s.Gateway == "gw-b" && len(list(a)) == 3
			}
		}
		return false
	}, "gw-a to list laptop on gw-b")

	// A gateway on its own has no fleet to list.
	alone := &controlSource{srv: a.srv.Server}
	if _, err := alone.handle(t.Context(), "clients", []string{"--fleet"}); err == nil || !strings.Contains(err.Error(), "not in a fleet") {
		t.Errorf("clients --fleet on a gateway on its own = %v", err)
	}
	if _, err := alone.handle(t.Context(), "clients", []string{"--bogus"}); err == nil {
		t.Error("clients --bogus: no error")
	}
}

func here(h bool) string {
	if h {
		return " (here)"
	}
	return ""
}

func fmtAddrs(as []netip.Addr) string {
	var s []string
	for _, a := range as {
		s = append(s, a.String())
	}
	return strings.Join(s, ",")
}
