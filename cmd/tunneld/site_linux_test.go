package main

// Scenarios of the per-client policy file (tunneld --clients): two sites
// joined through the tunnel (tunnelc --advertise), an intruder announcing
// a site's network, fixed addresses and routes changed on SIGHUP, and
// client isolation (reach_clients).
//
// Topology: newEnv's server and two client namespaces, with tunneld
// restarted on a --clients file (newPolicyEnv). The site scenario adds a
// LAN behind each end:
//
//	lanA --198.18.10.0/24-- server (tunneld) --198.18.0.0/30-- gwB (tunnelc) --198.18.20.0/24-- lanB
//	     2001:db8:10::/64         |                                         2001:db8:20::/64
//	                              +--198.18.0.4/30-- intruder (tunnelc)

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"tlsvpn/routing"
	"tlsvpn/routing/netnstest"
	"tlsvpn/tunnel/tunneltest"
)

// newPolicyEnv is newEnv's topology and PKI (a server namespace, two
// client namespaces, certificates for laptop1 and laptop2, plus one for
// each of names) with tunneld serving the per-client policy file clients
// (YAML) and flags instead of newEnv's flags. It returns the policy
// file's path, for rewriting before a SIGHUP (reload).
func newPolicyEnv(t *testing.T, clients string, names []string, flags ...string) (*env, string) {
	t.Helper()
	e := newEnv(t)
	if err := e.srv.stop(t); err != nil {
		t.Fatalf("stopping newEnv's tunneld: %v", err)
	}
	for _, n := range names {
		e.run(t, e.tunneld, "pki", "issue", "--dir", e.pki, "--client", "--name", n)
	}
	path := filepath.Join(t.TempDir(), "clients.yaml")
	writeFile(t, path, clients)
	e.srv = start(t, e.server, e.tunneld, append([]string{"--listen", "0.0.0.0:443",
		"--cert", e.file("server.crt"), "--key", e.file("server.key"), "--ca", e.file("ca.crt"),
		"--subnet", "100.64.0.0/24", "--clients", path, "--state-dir", t.TempDir(),
		"--metrics", metricsAddr, "--log-level", "debug"}, flags...)...)
	eventually(t, "tunneld listening", func() bool { return strings.Contains(e.srv.log.String(), "msg=listening") })
	return e, path
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// reload writes content to the policy file at path, sends tunneld SIGHUP
// and waits until its log has one more line with want ("client policies
// reloaded" or "reload refused: keeping the previous configuration").
func (e *env) reload(t *testing.T, path, content, want string) {
	t.Helper()
	writeFile(t, path, content)
	before := strings.Count(e.srv.log.String(), want)
	if err := e.srv.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP tunneld: %v", err)
	}
	eventually(t, "tunneld logs "+strconv.Quote(want), func() bool { return strings.Count(e.srv.log.String(), want) > before })
}

// countLines returns how many lines of log contain every one of subs.
func countLines(log string, subs ...string) int {
	n := 0
	for line := range strings.Lines(log) {
		if !slices.ContainsFunc(subs, func(s string) bool { return !strings.Contains(line, s) }) {
			n++
		}
	}
	return n
}

// sessions returns how many sessions peer has established (server log) and
// how often its tunnelc reconnected (client log).
func sessions(e *env, c *proc, peer string) (established, reconnected int) {
	return countLines(e.srv.log.String(), `msg="session established"`, "peer="+peer+" "),
		countLines(c.log.String(), "msg=reconnected")
}

// protoRoutes returns the destinations of the routes with our protocol
// (116) in ns, of one family ("-4" or "-6"), sorted.
func protoRoutes(t *testing.T, ns *netnstest.NS, family string) []string {
	t.Helper()
	var dsts []string
	for line := range strings.Lines(ns.Run(t, "ip", family, "route", "show", "proto", strconv.Itoa(routing.RouteProtocol))) {
		if f := strings.Fields(line); len(f) > 0 {
			dsts = append(dsts, f[0])
		}
	}
	slices.Sort(dsts)
	return dsts
}

// TestNetNSSiteToSite: tunneld is the gateway of LAN A, tunnelc with
// --advertise the gateway of LAN B. The LAN hosts know nothing of the
// tunnel (a default route via their gateway, nothing else), reach each
// other both ways over IPv4 and IPv6, and see each other's real addresses.
// Another client announcing LAN B's network is refused and cannot send
// from it. Narrowing site B's advertise entry on SIGHUP reconnects it and
// unroutes what it may no longer announce; when site B goes, so do the
// server's routes to its LAN.
func TestNetNSSiteToSite(t *testing.T) {
	policy := func(siteB string) string {
		return "site-b:\n  advertise: " + siteB + `
intruder2:
  advertise: 198.18.30.0/24
rival:
  advertise: [198.18.20.0/24]
`
	}
	const bothFamilies = `[198.18.20.0/24, "2001:db8:20::/64"]`
	e, path := newPolicyEnv(t, policy(bothFamilies), []string{"site-b", "intruder1", "intruder2", "rival"},
		"--subnet6", "fd00:64::/64", "--route", "198.18.10.0/24", "--route", "2001:db8:10::/64")
	gwA, gwB, intruder := e.server, e.laptops[0], e.laptops[1]
	lanA, lanB := netnstest.New(t), netnstest.New(t)
	for _, ns := range []*netnstest.NS{gwA, gwB, lanA, lanB} {
		noDAD(t, ns) // for the LAN links made below
	}
	// Each LAN: x.1 is the gateway, x.2 the host, which has a default
	// route of each family via the gateway and nothing else.
	for _, lan := range []struct {
		gw, host *netnstest.NS
		net4     string // 198.18.N.
		net6     string // 2001:db8:N::
	}{
		{gwA, lanA, "198.18.10.", "2001:db8:10::"},
		{gwB, lanB, "198.18.20.", "2001:db8:20::"},
	} {
		gwIf, hostIf := netnstest.Veth(t, lan.gw, netip.MustParsePrefix(lan.net4+"1/24"), lan.host, netip.MustParsePrefix(lan.net4+"2/24"))
		lan.gw.Run(t, "ip", "-6", "addr", "add", lan.net6+"1/64", "dev", gwIf, "nodad")
		lan.host.Run(t, "ip", "-6", "addr", "add", lan.net6+"2/64", "dev", hostIf, "nodad")
		lan.host.Run(t, "ip", "route", "add", "default", "via", lan.net4+"1")
		lan.host.Run(t, "ip", "-6", "route", "add", "default", "via", lan.net6+"1")
	}

	siteB := e.connect(t, 0, "site-b", netip.MustParsePrefix("100.64.0.2/24"),
		"--advertise", "198.18.20.0/24", "--advertise", "2001:db8:20::/64")
	eventually(t, "site-b told its networks are routed", func() bool {
		return strings.Contains(siteB.log.String(), "the server routes the networks behind this host")
	})
	if got, want := protoRoutes(t, gwA, "-4"), []string{"198.18.20.0/24"}; !slices.Equal(got, want) {
		t.Fatalf("server's IPv4 routes of ours = %v, want %v", got, want)
	}
	if got, want := protoRoutes(t, gwA, "-6"), []string{"2001:db8:20::/64"}; !slices.Equal(got, want) {
		t.Fatalf("server's IPv6 routes of ours = %v, want %v", got, want)
	}
	if out := gwB.Run(t, "nft", "list", "table", "inet", routing.FirewallTable("tunnelc0")); !strings.Contains(out, "maxseg size set rt mtu") {
		t.Errorf("no MSS clamp rule on gateway B:\n%s", out)
	}
	for _, dst := range []string{"198.18.20.2", "2001:db8:20::2"} {
		if out := gwA.Run(t, "ip", "route", "get", dst); !strings.Contains(out, "dev tunneld0") {
			t.Fatalf("server's route to LAN B host %s does not use the tunnel: %s", dst, out)
		}
	}

	for _, fam := range []struct {
		name         string
		hostA, hostB string
		port         int
	}{
		{"IPv4", "198.18.10.2", "198.18.20.2", 7201},
		{"IPv6", "2001:db8:10::2", "2001:db8:20::2", 7211},
	} {
		t.Run(fam.name+" LAN to LAN, both ways, real addresses", func(t *testing.T) {
			addr := func(host string, port int) string {
				return netip.AddrPortFrom(netip.MustParseAddr(host), uint16(fam.port+port)).String()
			}
			if err := ping(t, lanA, fam.hostB); err != nil {
				t.Fatal(err)
			}
			if err := ping(t, lanB, fam.hostA); err != nil {
				t.Fatal(err)
			}
			if got := sourceSeen(t, lanA, lanB, addr(fam.hostB, 0)); got != fam.hostA {
				t.Errorf("LAN B host saw LAN A's connection from %s, want %s (no NAT)", got, fam.hostA)
			}
			if got := sourceSeen(t, lanB, lanA, addr(fam.hostA, 1)); got != fam.hostB {
				t.Errorf("LAN A host saw LAN B's connection from %s, want %s (no NAT)", got, fam.hostB)
			}
			transfer(t, lanA, lanB, addr(fam.hostB, 2), 8<<20)
			transfer(t, lanB, lanA, addr(fam.hostA, 3), 8<<20)
		})
	}

	// A client announcing LAN B's network is refused however it is
	// configured, LAN B's traffic still goes to site B, and the client
	// cannot send from LAN B's addresses.
	for i, tc := range []struct {
		name   string
		reason string
	}{
		{"intruder1", "not allowed for this client"},     // no entry in --clients
		{"intruder2", "not allowed for this client"},     // allowed another network
		{"rival", "overlaps a network of client site-b"}, // allowed it, but site-b holds it
	} {
		t.Run(tc.name+" announcing LAN B is refused", func(t *testing.T) {
			const refusedSeries = "tunneld_advertise_refused_total"
			spoofSeries := `tunneld_dropped_packets_total{reason="spoofed_source"}`
			refused, spoofed := e.metric(t, refusedSeries), e.metric(t, spoofSeries)
			c := e.connect(t, 1, tc.name, netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, 0, byte(3 + i)}), 24),
				"--advertise", "198.18.20.0/24")
			defer c.stop(t)
			eventually(t, "tunnelc logs the refusal", func() bool {
				return countLines(c.log.String(), "level=WARN", "refused", "198.18.20.0/24") > 0
			})
			if n := countLines(e.srv.log.String(), `msg="refusing advertised network"`, "peer="+tc.name+" ", "network=198.18.20.0/24", tc.reason); n != 1 {
				t.Errorf("server logged %d refusals of %s's 198.18.20.0/24 with reason %q, want 1", n, tc.name, tc.reason)
			}
			if got := e.metric(t, refusedSeries); got != refused+1 {
				t.Errorf("%s = %v, want %v", refusedSeries, got, refused+1)
			}
			if got, want := protoRoutes(t, gwA, "-4"), []string{"198.18.20.0/24"}; !slices.Equal(got, want) {
				t.Errorf("server's IPv4 routes of ours = %v, want %v", got, want)
			}
			transfer(t, lanA, lanB, "198.18.20.2:7221", 4<<20)

			// An address of LAN B on the intruder: its packets enter the
			// tunnel (the pushed route to LAN A) and the server drops them.
			intruder.Run(t, "ip", "addr", "add", "198.18.20.77/32", "dev", "lo")
			defer intruder.Run(t, "ip", "addr", "del", "198.18.20.77/32", "dev", "lo")
			if err := ping(t, intruder, "-I", "198.18.20.77", "198.18.10.2"); err == nil {
				t.Error("ping from LAN B's address on the intruder got answers")
			}
			if got := e.metric(t, spoofSeries); got < spoofed+3 {
				t.Errorf("%s = %v, want >= %v", spoofSeries, got, spoofed+3)
			}
			if err := ping(t, intruder, "198.18.10.2"); err != nil {
				t.Errorf("the intruder's own traffic: %v", err)
			}
		})
	}

	// Narrowing site B's entry on SIGHUP reconnects it at once; the
	// network no longer allowed loses its route on the server, the other
	// keeps working. Widening it again brings the route back.
	t.Run("advertise narrowed and widened on SIGHUP", func(t *testing.T) {
		e.reload(t, path, policy("198.18.20.0/24"), "client policies reloaded")
		eventually(t, "site-b reconnects without its IPv6 network", func() bool {
			return countLines(siteB.log.String(), "msg=reconnected") == 1 && len(protoRoutes(t, gwA, "-6")) == 0
		})
		if !strings.Contains(siteB.log.String(), "server changed this client's configuration") {
			t.Errorf("site-b's log does not show the reconfigure close:\n%s", siteB.log)
		}
		if countLines(siteB.log.String(), "level=WARN", "refused", "2001:db8:20::/64") == 0 {
			t.Errorf("site-b does not log the refusal of 2001:db8:20::/64:\n%s", siteB.log)
		}
		if got, want := protoRoutes(t, gwA, "-4"), []string{"198.18.20.0/24"}; !slices.Equal(got, want) {
			t.Errorf("server's IPv4 routes of ours = %v, want %v", got, want)
		}
		transfer(t, lanB, lanA, "198.18.10.2:7231", 4<<20)
		if err := ping(t, lanA, "2001:db8:20::2"); err == nil {
			t.Error("LAN A still reaches LAN B over IPv6, which site B may no longer announce")
		}

		e.reload(t, path, policy(bothFamilies), "client policies reloaded")
		eventually(t, "site-b reconnects with its IPv6 network", func() bool {
			return countLines(siteB.log.String(), "msg=reconnected") == 2 && slices.Equal(protoRoutes(t, gwA, "-6"), []string{"2001:db8:20::/64"})
		})
		transfer(t, lanA, lanB, "[2001:db8:20::2]:7232", 4<<20)
	})

	t.Run("site B leaves: its route and forwarding go", func(t *testing.T) {
		if err := siteB.stop(t); err != nil {
			t.Fatalf("tunnelc exit: %v", err)
		}
		eventually(t, "server's route to LAN B removed", func() bool {
			return len(protoRoutes(t, gwA, "-4")) == 0 && len(protoRoutes(t, gwA, "-6")) == 0
		})
		for _, key := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
			if out := strings.TrimSpace(gwB.Run(t, "sysctl", "-n", key)); out != "0" {
				t.Errorf("gateway B after tunnelc exit: %s = %s, want 0 (as before)", key, out)
			}
		}
		if out := gwB.Run(t, "nft", "list", "tables"); strings.Contains(out, "inet tlsvpn") {
			t.Errorf("gateway B's table left after exit:\n%s", out)
		}
	})
}

// TestNetNSClientPolicyReload: a --clients entry fixes laptop1's tunnel
// addresses (both families) and the routes pushed to it. Changing its
// address and sending SIGHUP makes laptop1 reconnect at once with the new
// one, while laptop2 (no entry, the default --route) keeps its session and
// its traffic flows on. A broken file keeps the previous policies and
// disturbs nobody. Pinning laptop1 to the addresses laptop2 holds from the
// pool moves laptop2 to new ones.
func TestNetNSClientPolicyReload(t *testing.T) {
	policy := func(n int) string {
		return "laptop1:\n  address: [100.64.0." + strconv.Itoa(n) + ", \"fd00:64::" + strconv.Itoa(n) + "\"]\n  routes: [198.18.10.0/24]\n"
	}
	e, path := newPolicyEnv(t, policy(50), nil, "--subnet6", "fd00:64::/64", "--route", "198.18.30.0/24")
	laptop1, laptop2 := e.laptops[0], e.laptops[1]
	c1 := e.connect(t, 0, "laptop1", netip.MustParsePrefix("100.64.0.50/24"))
	c2 := e.connect(t, 1, "laptop2", netip.MustParsePrefix("100.64.0.2/24"))
	eventually(t, "laptop1's IPv6 address", func() bool { return hasAddr(laptop1, "tunnelc0", netip.MustParsePrefix("fd00:64::50/64")) })
	if got, want := protoRoutes(t, laptop1, "-4"), []string{"198.18.10.0/24"}; !slices.Equal(got, want) {
		t.Errorf("laptop1's routes = %v, want only its own %v", got, want)
	}
	if got, want := protoRoutes(t, laptop2, "-4"), []string{"198.18.30.0/24"}; !slices.Equal(got, want) {
		t.Errorf("laptop2's routes = %v, want the default --route %v", got, want)
	}
	for _, ns := range []*netnstest.NS{laptop1, laptop2} {
		if got := protoRoutes(t, ns, "-6"); len(got) != 0 {
			t.Errorf("IPv6 routes pushed %v, want none", got)
		}
	}
	if err := ping(t, laptop1, "100.64.0.1"); err != nil {
		t.Fatal(err)
	}
	est2, rec2 := sessions(e, c2, "laptop2")

	// laptop2 pings the server throughout the reload and laptop1's
	// reconnection: its session is not touched, so nothing is lost.
	const pings = 60
	pinger := laptop2.Cmd(t.Context(), "ping", "-c", strconv.Itoa(pings), "-i", "0.05", "-W", "2", "100.64.0.1")
	pingOut := new(tunneltest.SyncBuffer)
	pinger.Stdout, pinger.Stderr = pingOut, pingOut
	if err := pinger.Start(); err != nil {
		t.Fatal(err)
	}
	pingDone := make(chan error, 1)
	go func() { pingDone <- pinger.Wait() }()
	eventually(t, "laptop2's first ping answered", func() bool { return strings.Contains(pingOut.String(), "bytes from") })

	t.Run("address change reconnects only laptop1", func(t *testing.T) {
		e.reload(t, path, policy(60), "client policies reloaded")
		if !strings.Contains(e.srv.log.String(), "readdressed=1") {
			t.Errorf("server log lacks readdressed=1:\n%s", e.srv.log)
		}
		eventually(t, "laptop1 at its new addresses", func() bool {
			return hasAddr(laptop1, "tunnelc0", netip.MustParsePrefix("100.64.0.60/24")) &&
				hasAddr(laptop1, "tunnelc0", netip.MustParsePrefix("fd00:64::60/64"))
		})
		for _, old := range []string{"100.64.0.50/24", "fd00:64::50/64"} {
			if hasAddr(laptop1, "tunnelc0", netip.MustParsePrefix(old)) {
				t.Errorf("laptop1 still has its old address %s", old)
			}
		}
		log1 := c1.log.String()
		if !strings.Contains(log1, "server changed this client's configuration") || !strings.Contains(log1, "reconfigure") {
			t.Errorf("laptop1's log does not show a reconfigure close:\n%s", log1)
		}
		if got, want := protoRoutes(t, laptop1, "-4"), []string{"198.18.10.0/24"}; !slices.Equal(got, want) {
			t.Errorf("laptop1's routes after the reconnect = %v, want %v", got, want)
		}
		if err := ping(t, laptop1, "100.64.0.1"); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-pingDone:
			if err != nil || !strings.Contains(pingOut.String(), strconv.Itoa(pings)+" received") {
				t.Errorf("laptop2's pings during the reload: %v\n%s", err, pingOut)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("laptop2's ping did not finish")
		}
		if est, rec := sessions(e, c2, "laptop2"); est != est2 || rec != rec2 {
			t.Errorf("laptop2: %d sessions established and %d reconnects, want %d and %d (untouched)", est, rec, est2, rec2)
		}
	})

	t.Run("broken file keeps the previous policies", func(t *testing.T) {
		est1, rec1 := sessions(e, c1, "laptop1")
		est2, rec2 := sessions(e, c2, "laptop2")
		e.reload(t, path, policy(70)+"  colour: blue\n", "reload refused: keeping the previous configuration and client policies")
		for _, c := range []struct {
			ns   *netnstest.NS
			addr string
		}{{laptop1, "100.64.0.60/24"}, {laptop2, "100.64.0.2/24"}} {
			if err := ping(t, c.ns, "100.64.0.1"); err != nil {
				t.Fatal(err)
			}
			if !hasAddr(c.ns, "tunnelc0", netip.MustParsePrefix(c.addr)) {
				t.Errorf("a client lost its address %s", c.addr)
			}
		}
		if est, rec := sessions(e, c1, "laptop1"); est != est1 || rec != rec1 {
			t.Errorf("laptop1: %d sessions established and %d reconnects, want %d and %d", est, rec, est1, rec1)
		}
		if est, rec := sessions(e, c2, "laptop2"); est != est2 || rec != rec2 {
			t.Errorf("laptop2: %d sessions established and %d reconnects, want %d and %d", est, rec, est2, rec2)
		}
		// The policies in force are still those of the last good file:
		// reloading that file again changes nothing.
		e.reload(t, path, policy(60), "client policies reloaded")
		if n := countLines(e.srv.log.String(), `msg="client policies reloaded"`, "readdressed=0 reconfigured=0"); n != 1 {
			t.Errorf("reloading the last good file: %d reloads that changed nothing, want 1:\n%s", n, e.srv.log)
		}
	})

	// laptop1's new fixed addresses are the ones laptop2 holds from the
	// pool: laptop2 is moved to new ones, laptop1 takes them.
	t.Run("pinning laptop2's addresses moves laptop2", func(t *testing.T) {
		e.reload(t, path, policy(2), "client policies reloaded")
		eventually(t, "laptop1 at laptop2's former addresses", func() bool {
			return hasAddr(laptop1, "tunnelc0", netip.MustParsePrefix("100.64.0.2/24")) &&
				hasAddr(laptop1, "tunnelc0", netip.MustParsePrefix("fd00:64::2/64"))
		})
		eventually(t, "laptop2 at new addresses", func() bool {
			return !hasAddr(laptop2, "tunnelc0", netip.MustParsePrefix("100.64.0.2/24")) &&
				!hasAddr(laptop2, "tunnelc0", netip.MustParsePrefix("fd00:64::2/64"))
		})
		if n := countLines(e.srv.log.String(), `msg="client policies reloaded"`, "readdressed=2"); n != 1 {
			t.Errorf("server log has %d reloads with readdressed=2 (laptop1 and laptop2), want 1:\n%s", n, e.srv.log)
		}
		for _, ns := range []*netnstest.NS{laptop1, laptop2} {
			if err := ping(t, ns, "100.64.0.1"); err != nil {
				t.Error(err)
			}
			if err := ping(t, ns, "-6", "fd00:64::1"); err != nil {
				t.Error(err)
			}
		}
	})
}

// TestNetNSReachClients: without --client-to-client, only clients whose
// entry says reach_clients may open connections to other clients; replies
// pass. Turning reach_clients on with SIGHUP applies in place.
func TestNetNSReachClients(t *testing.T) {
	const isolation = "tunneld_client_isolation_drops_total"
	policy := func(reach2 bool) string {
		return "laptop1:\n  reach_clients: true\nlaptop2:\n  reach_clients: " + strconv.FormatBool(reach2) + "\n"
	}
	e, path := newPolicyEnv(t, policy(false), nil)
	laptop1, laptop2 := e.laptops[0], e.laptops[1]
	c1 := e.connect(t, 0, "laptop1", netip.MustParsePrefix("100.64.0.2/24"))
	c2 := e.connect(t, 1, "laptop2", netip.MustParsePrefix("100.64.0.3/24"))

	t.Run("laptop1 reaches laptop2, the reverse is dropped", func(t *testing.T) {
		if got := sourceSeen(t, laptop1, laptop2, "100.64.0.3:7301"); got != "100.64.0.2" {
			t.Errorf("laptop2 saw laptop1's connection from %s, want 100.64.0.2", got)
		}
		transfer(t, laptop1, laptop2, "100.64.0.3:7302", 4<<20)
		if err := ping(t, laptop1, "100.64.0.3"); err != nil {
			t.Error(err)
		}
		drops := e.metric(t, isolation)
		ln := laptop1.Listen(t, "tcp", "100.64.0.2:7303")
		defer ln.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		c, err := laptop2.Dial(ctx, "tcp", "100.64.0.2:7303")
		if err == nil {
			c.Close()
			t.Fatal("laptop2 (no reach_clients) opened a connection to laptop1")
		}
		if ne := net.Error(nil); !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("laptop2's connection to laptop1: %v, want a timeout (SYN dropped)", err)
		}
		if got := e.metric(t, isolation); got <= drops {
			t.Errorf("%s = %v, want > %v", isolation, got, drops)
		}
	})

	t.Run("reach_clients turned on for laptop2 in place", func(t *testing.T) {
		est1, rec1 := sessions(e, c1, "laptop1")
		est2, rec2 := sessions(e, c2, "laptop2")
		e.reload(t, path, policy(true), "client policies reloaded")
		if !strings.Contains(e.srv.log.String(), "reconfigured=0") {
			t.Errorf("server log lacks reconfigured=0:\n%s", e.srv.log)
		}
		// tunneld updates the firewall before it logs the reload.
		transfer(t, laptop2, laptop1, "100.64.0.2:7305", 4<<20)
		if got := sourceSeen(t, laptop2, laptop1, "100.64.0.2:7306"); got != "100.64.0.3" {
			t.Errorf("laptop1 saw laptop2's connection from %s, want 100.64.0.3", got)
		}
		if est, rec := sessions(e, c1, "laptop1"); est != est1 || rec != rec1 {
			t.Errorf("laptop1: %d sessions established and %d reconnects, want %d and %d", est, rec, est1, rec1)
		}
		if est, rec := sessions(e, c2, "laptop2"); est != est2 || rec != rec2 {
			t.Errorf("laptop2: %d sessions established and %d reconnects, want %d and %d", est, rec, est2, rec2)
		}
	})
}
