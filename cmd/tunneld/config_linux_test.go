package main

// The config file with the real binaries: tunneld started with --config
// (the clients policy inside it), edited and reloaded on SIGHUP.

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestNetNSConfigReload: tunneld runs from a config file holding its
// settings and the clients policy. Changing a limit and laptop1's own
// routes reconnects laptop1 alone, with its new routes; changing the
// routes every client is given reconnects laptop2 alone (laptop1 has its
// own); a change of the listen address is named as needing a restart and
// not applied. A broken file is refused with its file:line, and no session
// and no setting changes.
func TestNetNSConfigReload(t *testing.T) {
	e := newEnv(t)
	if err := e.srv.stop(t); err != nil {
		t.Fatalf("stopping newEnv's tunneld: %v", err)
	}
	path, stateDir := filepath.Join(t.TempDir(), "tunneld.yaml"), filepath.Join(t.TempDir(), "state")
	config := func(maxClients int, laptop1Routes, routes, listen string) string {
		return fmt.Sprintf(`# tunneld for TestNetNSConfigReload
listen: %s
cert: %s
key: %s
ca: %s
subnet: 100.64.0.0/24
route: %s
keepalive: 2s
state-dir: %s
metrics: %s
log-level: debug
max-clients: %d
clients:
  laptop1:
    address: 100.64.0.50
    routes: %s
`, listen, e.file("server.crt"), e.file("server.key"), e.file("ca.crt"), routes, stateDir, metricsAddr, maxClients, laptop1Routes)
	}
	writeFile(t, path, config(10, "[198.18.10.0/24]", "[198.18.30.0/24]", "0.0.0.0:443"))
	if out, err := runCheckCmd(t, "--config", path); err != nil {
		t.Fatalf("tunneld check: %v\n%s", err, out)
	}
	e.srv = start(t, e.server, e.tunneld, "--config", path)
	eventually(t, "tunneld listening", func() bool { return strings.Contains(e.srv.log.String(), "msg=listening") })
	if !strings.Contains(e.srv.log.String(), "MaxClients:10 ") {
		t.Errorf("tunneld did not take max-clients from the file:\n%s", e.srv.log)
	}
	laptop1, laptop2 := e.laptops[0], e.laptops[1]
	c1 := e.connect(t, 0, "laptop1", netip.MustParsePrefix("100.64.0.50/24"))
	c2 := e.connect(t, 1, "laptop2", netip.MustParsePrefix("100.64.0.2/24"))
	routesOf := func(ns int) []string { return protoRoutes(t, e.laptops[ns], "-4") }
	if got, want := routesOf(0), []string{"198.18.10.0/24"}; !slices.Equal(got, want) {
		t.Fatalf("laptop1's routes = %v, want its own %v", got, want)
	}
	if got, want := routesOf(1), []string{"198.18.30.0/24"}; !slices.Equal(got, want) {
		t.Fatalf("laptop2's routes = %v, want the file's route %v", got, want)
	}

	// unchanged asserts that peer's session was not touched since est/rec.
	unchanged := func(t *testing.T, c *proc, peer string, est, rec int) {
		t.Helper()
		if e2, r2 := sessions(e, c, peer); e2 != est || r2 != rec {
			t.Errorf("%s: %d sessions established and %d reconnects, want %d and %d (untouched)", peer, e2, r2, est, rec)
		}
	}

	t.Run("a limit and laptop1's routes: only laptop1 reconnects", func(t *testing.T) {
		est1, _ := sessions(e, c1, "laptop1")
		est2, rec2 := sessions(e, c2, "laptop2")
		e.reload(t, path, config(20, "[198.18.10.0/24, 198.18.11.0/24]", "[198.18.30.0/24]", "0.0.0.0:443"), `msg="configuration reloaded"`)
		eventually(t, "laptop1's new route", func() bool {
			return slices.Equal(routesOf(0), []string{"198.18.10.0/24", "198.18.11.0/24"})
		})
		if est, _ := sessions(e, c1, "laptop1"); est != est1+1 {
			t.Errorf("laptop1: %d sessions established, want %d (one reconnect)", est, est1+1)
		}
		if !strings.Contains(e.srv.log.String(), "MaxClients:20 ") || countLines(e.srv.log.String(), `msg="connection limits changed"`) != 1 {
			t.Errorf("tunneld did not apply max-clients 20:\n%s", e.srv.log)
		}
		if err := ping(t, laptop2, "100.64.0.1"); err != nil {
			t.Fatal(err)
		}
		unchanged(t, c2, "laptop2", est2, rec2)
	})

	t.Run("the routes of every client: laptop1 keeps its own and its session", func(t *testing.T) {
		est1, rec1 := sessions(e, c1, "laptop1")
		est2, _ := sessions(e, c2, "laptop2")
		e.reload(t, path, config(20, "[198.18.10.0/24, 198.18.11.0/24]", "[198.18.30.0/24, 198.18.31.0/24]", "0.0.0.0:443"), `msg="configuration reloaded"`)
		eventually(t, "laptop2's new routes", func() bool {
			return slices.Equal(routesOf(1), []string{"198.18.30.0/24", "198.18.31.0/24"})
		})
		if est, _ := sessions(e, c2, "laptop2"); est != est2+1 {
			t.Errorf("laptop2: %d sessions established, want %d (one reconnect)", est, est2+1)
		}
		if err := ping(t, laptop1, "100.64.0.1"); err != nil {
			t.Fatal(err)
		}
		unchanged(t, c1, "laptop1", est1, rec1)
	})

	t.Run("the listen address needs a restart", func(t *testing.T) {
		est1, rec1 := sessions(e, c1, "laptop1")
		est2, rec2 := sessions(e, c2, "laptop2")
		e.reload(t, path, config(20, "[198.18.10.0/24, 198.18.11.0/24]", "[198.18.30.0/24, 198.18.31.0/24]", "0.0.0.0:8443"), `msg="configuration reloaded"`)
		if countLines(e.srv.log.String(), "needs a restart", "setting=listen", "running=0.0.0.0:443", "configured=0.0.0.0:8443") != 1 {
			t.Errorf("no warning that the listen address needs a restart:\n%s", e.srv.log)
		}
		unchanged(t, c1, "laptop1", est1, rec1)
		unchanged(t, c2, "laptop2", est2, rec2)
	})

	t.Run("a broken file changes nothing", func(t *testing.T) {
		est1, rec1 := sessions(e, c1, "laptop1")
		est2, rec2 := sessions(e, c2, "laptop2")
		limitsBefore := countLines(e.srv.log.String(), `msg="connection limits changed"`)
		broken := strings.Replace(config(5, "[198.18.10.0/24]", "[198.18.30.0/24]", "0.0.0.0:443"), "max-clients:", "max-client:", 1)
		e.reload(t, path, broken, "reload refused")
		want := path + `:12: unknown key \"max-client\" (did you mean \"max-clients\"?)`
		if countLines(e.srv.log.String(), "reload refused", want) != 1 {
			t.Errorf("the log does not say why the reload was refused (%s):\n%s", want, e.srv.log)
		}
		for _, ns := range []*struct {
			i    int
			want []string
		}{{0, []string{"198.18.10.0/24", "198.18.11.0/24"}}, {1, []string{"198.18.30.0/24", "198.18.31.0/24"}}} {
			if got := routesOf(ns.i); !slices.Equal(got, ns.want) {
				t.Errorf("laptop%d's routes = %v, want %v still", ns.i+1, got, ns.want)
			}
		}
		if err := ping(t, laptop1, "100.64.0.1"); err != nil {
			t.Fatal(err)
		}
		if err := ping(t, laptop2, "100.64.0.1"); err != nil {
			t.Fatal(err)
		}
		unchanged(t, c1, "laptop1", est1, rec1)
		unchanged(t, c2, "laptop2", est2, rec2)
		if n := countLines(e.srv.log.String(), `msg="connection limits changed"`); n != limitsBefore {
			t.Errorf("the limits changed on a refused reload")
		}
	})
}
