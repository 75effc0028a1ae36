package main

// The fleet as its users depend on it (issue 16): three gateways share
// their state in a three-member etcd cluster and announce the host routes
// of the clients they hold over BGP to the LAN's router, which runs BIRD
// (Debian bird2) and installs what it learns in its kernel table. Clients
// list the three gateways as their servers; the mode is routed (no NAT),
// so a LAN host reaches a client only through the route BIRD learned.
//
//	laptop, phone, tablet --(198.18.0/2/4.4i/30)-- gw-a, gw-b, gw-c --(198.18.3.4i/30)-- router --(198.18.42.0/24)-- lanhost
//	                                               gw-a, gw-b, gw-c --(198.18.1.4i/30)-- store (etcd m0, m1, m2)

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"tlsvpn/control"
	"tlsvpn/routing/netnstest"
	"tlsvpn/state/etcdtest"
)

// fleetBGP is the running topology of TestNetNSFleetBGP.
type fleetBGP struct {
	tunneld, tunnelc string
	pki              *env
	names            []string
	gwNS             []*netnstest.NS
	gw               []*proc
	ctls             []string
	rtIPs            []netip.Addr // each gateway's address on its link to the router
	router, lanhost  *netnstest.NS
}

// established returns the "session established" lines in the logs of
// the gateways after the offsets in since (nil: all), by gateway.
func (f *fleetBGP) established(since []int) [][]string {
	out := make([][]string, len(f.gw))
	for i, g := range f.gw {
		log := g.log.String()
		if since != nil {
			log = log[since[i]:]
		}
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, `msg="session established"`) {
				out[i] = append(out[i], l)
			}
		}
	}
	return out
}

// marks returns the current lengths of the gateways' logs.
func (f *fleetBGP) marks() []int {
	var m []int
	for _, g := range f.gw {
		m = append(m, len(g.log.String()))
	}
	return m
}

// sessionOf returns the gateway where peer's session was established
// after since, and the log line; -1 if none.
func (f *fleetBGP) sessionOf(peer string, since []int) (int, string) {
	for i, lines := range f.established(since) {
		for _, l := range lines {
			if logAttr(l, "peer") == peer {
				return i, l
			}
		}
	}
	return -1, ""
}

// routedVia reports whether the router's kernel route to addr, learned
// by BIRD, goes to gateway i.
func (f *fleetBGP) routedVia(t *testing.T, addr netip.Addr, i int) bool {
	return strings.Contains(birdRoute(t, f.router, addr.String())+" ", "via "+f.rtIPs[i].String()+" ")
}

// move waits (30 s at most) for peer's session to come back on another
// gateway than from after an event at t0 (logs marked at since), and for
// the router's route to addr to follow it. It returns the new gateway,
// its log line, and how long after t0 each happened.
func (f *fleetBGP) move(t *testing.T, peer string, addr netip.Addr, from int, since []int, t0 time.Time) (to int, line string, back, moved time.Duration) {
	t.Helper()
	to = -1
	deadline := t0.Add(30 * time.Second)
	for back == 0 || moved == 0 {
		if to < 0 {
			if to, line = f.sessionOf(peer, since); to >= 0 {
				back = time.Since(t0)
			}
		}
		if to >= 0 && moved == 0 && f.routedVia(t, addr, to) {
			moved = time.Since(t0)
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30s: %s's session on gateway %d, the router's route: %q", peer, to, birdRoute(t, f.router, addr.String()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if to == from {
		t.Fatalf("%s came back on %s, where it was", peer, f.names[from])
	}
	return to, line, back, moved
}

// served waits for peer's session on gateway i, its address on the
// client in ns and the router's route to it, and returns the address.
func (f *fleetBGP) served(t *testing.T, ns *netnstest.NS, peer string, i int) netip.Prefix {
	t.Helper()
	var addr netip.Prefix
	eventually(t, peer+"'s session on "+f.names[i], func() bool {
		on, line := f.sessionOf(peer, nil)
		p, err := netip.ParsePrefix(logAttr(line, "tunnel_addr"))
		addr = p
		return on == i && err == nil && hasAddr(ns, "tunnelc0", p)
	})
	eventually(t, "the router's route to "+peer, func() bool { return f.routedVia(t, addr.Addr(), i) })
	return addr
}

// clientNS makes a client's namespace, joined to every gateway
// (198.18.NET.4i/30), and returns it with the tunnelc arguments that
// list the gateways as servers.
func (f *fleetBGP) clientNS(t *testing.T, net byte, name string) (*netnstest.NS, []string) {
	t.Helper()
	ns := netnstest.New(t)
	args := []string{"--server-name", "vpn.test", "--cert", f.pki.file(name + ".crt"), "--key", f.pki.file(name + ".key"),
		"--ca", f.pki.file("ca.crt"), "--log-level", "debug"}
	for _, ip := range fleetLink(t, f.gwNS, ns, net) {
		args = append(args, "--server", ip.String()+":443")
	}
	return ns, args
}

// oneToOne checks that across every gateway's log no address was given
// to two identities, and no identity had two addresses; it returns the
// identities' addresses.
func (f *fleetBGP) oneToOne(t *testing.T) map[string]string {
	t.Helper()
	addrOf, idOf := map[string]string{}, map[string]string{}
	for i, lines := range f.established(nil) {
		for _, l := range lines {
			id, addr := logAttr(l, "peer"), logAttr(l, "tunnel_addr")
			if a, ok := addrOf[id]; ok && a != addr {
				t.Errorf("%s gave %s the address %s; it had %s", f.names[i], id, addr, a)
			}
			if o, ok := idOf[addr]; ok && o != id {
				t.Errorf("%s gave %s to %s; %s had it", f.names[i], addr, id, o)
			}
			addrOf[id], idOf[addr] = addr, id
		}
	}
	return addrOf
}

// TestNetNSFleetBGP: the client's gateway is killed with -9 during a long
// inner transfer from the LAN, then the next one is drained during
// another; each time the client resumes on another gateway with the same
// address, BIRD moves the host route, and the transfer completes
// byte-exact. Then one etcd member dies (nothing changes: a new identity
// connects) and all of them stop for 30 s (live sessions carry traffic, a
// new identity is refused with a reason, status says the store is
// unreachable); once etcd is back the new identity is served and the
// fleet's view converges. Over the whole run no address went to two
// identities.
func TestNetNSFleetBGP(t *testing.T) {
	if _, err := exec.LookPath("bird"); err != nil {
		t.Skip("bird (Debian bird2) is not installed; scripts/test.sh installs it")
	}
	etcdtest.Binary(t)
	f := &fleetBGP{names: []string{"gw-a", "gw-b", "gw-c"}}
	f.tunneld, f.tunnelc = binaries(t)
	for range f.names {
		f.gwNS = append(f.gwNS, netnstest.New(t))
	}
	f.router, f.lanhost = netnstest.New(t), netnstest.New(t)
	f.rtIPs = fleetLink(t, f.gwNS, f.router, 3)
	netnstest.Veth(t, f.router, netip.MustParsePrefix("198.18.42.1/24"), f.lanhost, netip.MustParsePrefix("198.18.42.2/24"))
	f.lanhost.Run(t, "ip", "route", "add", "default", "via", "198.18.42.1")
	f.router.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	for i, ns := range f.gwNS {
		ns.Run(t, "ip", "route", "add", "198.18.42.0/24", "via", f.rtIPs[i].Next().String())
	}
	cluster, endpoints := fleetStore(t, f.gwNS...)

	// The router peers with every gateway.
	dir := t.TempDir()
	bird := "router id 198.18.42.1;\nprotocol device { }\nprotocol kernel { ipv4 { import none; export all; }; }\n"
	for i := range f.names {
		bird += fmt.Sprintf("protocol bgp gw%d {\n\tlocal %s as 65000;\n\tneighbor %s as 65001;\n\thold time 9;\n\tipv4 { import all; export none; };\n}\n",
			i, f.rtIPs[i].Next(), f.rtIPs[i])
	}
	conf, sock := filepath.Join(dir, "bird.conf"), filepath.Join(dir, "bird.ctl")
	writeFile(t, conf, bird)
	start(t, f.router, "bird", "-f", "-c", conf, "-s", sock, "-P", filepath.Join(dir, "bird.pid"))
	eventually(t, "BIRD's control socket", func() bool { _, err := os.Stat(sock); return err == nil })

	f.pki = &env{pki: filepath.Join(dir, "pki")}
	f.pki.run(t, f.tunneld, "pki", "init", "--dir", f.pki.pki)
	f.pki.run(t, f.tunneld, "pki", "issue", "--dir", f.pki.pki, "--server", "--name", "vpn.test")
	for _, n := range []string{"laptop", "phone", "tablet"} {
		f.pki.run(t, f.tunneld, "pki", "issue", "--dir", f.pki.pki, "--client", "--name", n)
	}
	var configs []string
	for i, name := range f.names {
		configs = append(configs, fleetConfig(t, dir, name, f.pki.pki, endpoints[i],
			fmt.Sprintf("route: [198.18.42.0/24]\nbgp-asn: 65001\nbgp-router-id: %s\nbgp-peer: [65000@%s]\n", f.rtIPs[i], f.rtIPs[i].Next())))
		f.ctls = append(f.ctls, controlPath(t))
	}
	publishCRL(t, f.gwNS[0], f.tunneld, f.pki.pki, configs[0])
	for i := range f.names {
		f.gw = append(f.gw, start(t, f.gwNS[i], f.tunneld, "--config", configs[i], "--control", f.ctls[i]))
	}
	for i, g := range f.gw {
		eventually(t, f.names[i]+" listening", func() bool { return strings.Contains(g.log.String(), "msg=listening") })
	}
	eventually(t, "BIRD's BGP sessions with the three gateways", func() bool {
		out, _ := f.router.Cmd(t.Context(), "birdc", "-s", sock, "show", "protocols").CombinedOutput()
		return strings.Count(string(out), "Established") == len(f.names)
	})

	laptopNS, laptopArgs := f.clientNS(t, 0, "laptop")
	laptop := start(t, laptopNS, f.tunnelc, laptopArgs...)
	want := netip.MustParsePrefix("100.64.0.2/24")
	eventually(t, "laptop's tunnel address", func() bool { return hasAddr(laptopNS, "tunnelc0", want) })
	var first int
	eventually(t, "laptop's session and its route on the router", func() bool {
		i, _ := f.sessionOf("laptop", nil)
		first = i
		return i >= 0 && f.routedVia(t, want.Addr(), i)
	})
	if err := ping(t, f.lanhost, want.Addr().String()); err != nil {
		t.Fatalf("from the LAN to laptop through %s: %v", f.names[first], err)
	}

	// resumedHere checks the session line of a move and the client's log
	// after mark.
	resumedHere := func(t *testing.T, line string, mark int) {
		t.Helper()
		if a := logAttr(line, "tunnel_addr"); a != want.String() {
			t.Errorf("laptop got %s on the new gateway; want its address %v", a, want)
		}
		if r := logAttr(line, "resumed"); r != "true" {
			t.Errorf("laptop's new session resumed=%s; want a resumption with the fleet's ticket keys:\n%s", r, line)
		}
		eventually(t, "laptop's reconnected line", func() bool { return logLine(laptop.log.String()[mark:], "msg=reconnected") != "" })
		l := logLine(laptop.log.String()[mark:], "msg=reconnected")
		if logAttr(l, "resumed") != "true" || logAttr(l, "tunnel_addr") != want.String() {
			t.Errorf("laptop's log does not say it resumed with its address: %s", l)
		}
		t.Logf("laptop's own view: outage_ms=%s", logAttr(l, "outage_ms"))
		if !hasAddr(laptopNS, "tunnelc0", want) {
			t.Errorf("laptop lost its tunnel address %v", want)
		}
	}
	// during runs a 32 MiB transfer from the LAN host to laptop, paced
	// to take 4 s, does event a quarter of the way in, and checks the
	// bytes.
	during := func(t *testing.T, port int, event func()) {
		t.Helper()
		x := startTransfer(t, f.lanhost, laptopNS, fmt.Sprintf("%s:%d", want.Addr(), port), 32<<20, 8<<20)
		eventually(t, "the transfer under way", func() bool { return x.sent.Load() >= 8<<20 })
		event()
		select {
		case err := <-x.done:
			if err != nil {
				t.Fatalf("the transfer across the move: %v", err)
			}
			t.Logf("32 MiB from the LAN host to laptop byte-exact across the move, in %v", x.elapsed.Round(time.Millisecond))
		case <-time.After(60 * time.Second):
			t.Fatalf("the transfer did not end within 60s (%d bytes sent)", x.sent.Load())
		}
	}

	second := -1
	var killed time.Time
	if !t.Run("gateway killed during a transfer", func(t *testing.T) {
		during(t, 5001, func() {
			since, mark := f.marks(), len(laptop.log.String())
			killed = time.Now()
			f.gw[first].cmd.Process.Kill()
			<-f.gw[first].done
			to, line, back, moved := f.move(t, "laptop", want.Addr(), first, since, killed)
			second = to
			resumedHere(t, line, mark)
			t.Logf("%s killed -9: laptop's session back on %s after %v, the router's route moved after %v",
				f.names[first], f.names[to], back.Round(time.Millisecond), moved.Round(time.Millisecond))
		})
	}) {
		return
	}

	third := 3 - first - second
	if !t.Run("gateway drained during a transfer", func(t *testing.T) {
		during(t, 5002, func() {
			since, mark := f.marks(), len(laptop.log.String())
			drained := time.Now()
			out := make(chan string, 1)
			go func() {
				b, err := exec.Command(f.tunneld, "drain", "--control", f.ctls[second]).CombinedOutput()
				out <- fmt.Sprint(string(b), err)
			}()
			to, line, back, moved := f.move(t, "laptop", want.Addr(), second, since, drained)
			if o := <-out; !strings.Contains(o, "1 sessions move off") {
				t.Errorf("tunneld drain printed %q", o)
			}
			if to != third {
				t.Errorf("laptop moved to %s; want %s, the gateway in service", f.names[to], f.names[third])
			}
			resumedHere(t, line, mark)
			t.Logf("%s drained: laptop's session on %s after %v, the router's route moved after %v",
				f.names[second], f.names[to], back.Round(time.Millisecond), moved.Round(time.Millisecond))
		})
	}) {
		return
	}

	status := func(t *testing.T, i int) string {
		t.Helper()
		out, err := exec.Command(f.tunneld, "status", "--control", f.ctls[i]).CombinedOutput()
		if err != nil {
			t.Fatalf("tunneld status: %v\n%s", err, out)
		}
		return string(out)
	}
	t.Run("etcd member killed, then all of them for 30s", func(t *testing.T) {
		// The dead gateway leaves the fleet with its etcd lease (TTL 10 s).
		// (Were it listed when etcd stops, etcd's next leader would give
		// its lease a full TTL again.)
		eventually(t, f.names[first]+" to leave the fleet", func() bool {
			st := fleetStatus(t, f.tunneld, f.ctls[third])
			return st.Store != nil && len(st.Store.Gateways) == 2
		})
		t.Logf("%s, killed, left the fleet's listing %v after its death", f.names[first], time.Since(killed).Round(time.Millisecond))

		// One member of three: nothing changes.
		cluster.Members[0].Kill()
		phoneNS, phoneArgs := f.clientNS(t, 2, "phone")
		start(t, phoneNS, f.tunnelc, phoneArgs...)
		phone := f.served(t, phoneNS, "phone", third)
		if st := fleetStatus(t, f.tunneld, f.ctls[third]); st.Store == nil || !st.Store.Up {
			t.Errorf("with one etcd member down of three, %s's store: %+v", f.names[third], st.Store)
		}

		// All of them, for 30 s.
		before := f.established(nil)
		cluster.Stop()
		stopped := time.Now()
		eventually(t, f.names[third]+" to report the store down", func() bool {
			st := fleetStatus(t, f.tunneld, f.ctls[third])
			return st.Store != nil && !st.Store.Up
		})
		noticed := time.Since(stopped)
		if s := status(t, third); !strings.Contains(s, "UNREACHABLE") {
			t.Errorf("tunneld status with etcd down:\n%s", s)
		}
		tabletNS, tabletArgs := f.clientNS(t, 4, "tablet")
		tablet := start(t, tabletNS, f.tunnelc, tabletArgs...)
		eventually(t, "tablet, a new identity, refused with etcd down", func() bool {
			return logLine(f.gw[third].log.String(), "refusing client: no address", "peer=tablet") != ""
		})
		if l := logLine(f.gw[third].log.String(), "refusing client: no address", "peer=tablet"); !strings.Contains(l, "state store unreachable") {
			t.Errorf("the refusal does not say why: %s", l)
		}
		tablet.stop(t)
		for pings := 0; time.Since(stopped) < 30*time.Second || pings < 2; pings++ {
			for _, a := range []netip.Addr{want.Addr(), phone.Addr()} {
				if err := ping(t, f.lanhost, "-c", "1", "-W", "2", a.String()); err != nil {
					t.Errorf("%v after etcd stopped: from the LAN to %v: %v", time.Since(stopped).Round(time.Second), a, err)
				}
			}
			time.Sleep(min(3*time.Second, max(0, 30*time.Second-time.Since(stopped))))
		}
		if after := f.established(nil); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("sessions established while etcd was down: %q", after)
		}
		if !hasAddr(laptopNS, "tunnelc0", want) || !hasAddr(phoneNS, "tunnelc0", phone) {
			t.Error("a client lost its address while etcd was down")
		}
		outage := time.Since(stopped)

		// etcd back: tablet is served, and the fleet's view converges.
		cluster.Restart(t)
		restarted := time.Now()
		eventually(t, f.names[third]+" to report the store up again", func() bool {
			st := fleetStatus(t, f.tunneld, f.ctls[third])
			return st.Store != nil && st.Store.Up
		})
		// gRPC's reconnection backoff (2 minutes at most by default) must
		// not keep refusing new clients long after etcd is back.
		up := time.Since(restarted)
		if up > 5*time.Second {
			t.Errorf("%s saw the store up %v after etcd was healthy again; want within a few seconds", f.names[third], up.Round(time.Millisecond))
		}
		start(t, tabletNS, f.tunnelc, tabletArgs...)
		tabletAddr := f.served(t, tabletNS, "tablet", third)
		served := time.Since(restarted)
		if err := ping(t, f.lanhost, tabletAddr.Addr().String()); err != nil {
			t.Errorf("from the LAN to tablet: %v", err)
		}
		// Both live gateways see the three sessions on the third, the
		// drained one none, the dead one gone; the third announces the
		// three routes.
		wantGateways := fmt.Sprint([]control.FleetGateway{{Name: f.names[second]}, {Name: f.names[third], Sessions: 3}})
		if second > third {
			wantGateways = fmt.Sprint([]control.FleetGateway{{Name: f.names[third], Sessions: 3}, {Name: f.names[second]}})
		}
		var st control.ServerStatus
		eventually(t, "the fleet's view to converge", func() bool {
			for _, i := range []int{second, third} {
				st = fleetStatus(t, f.tunneld, f.ctls[i])
				if st.Store == nil || !st.Store.Up || st.Store.FleetSessions != 3 || fmt.Sprint(st.Store.Gateways) != wantGateways {
					return false
				}
			}
			return st.BGP != nil && st.BGP.Routes == 3
		})
		t.Logf("etcd stopped for %v: %s said so after %v, no session lost, tablet refused; etcd back (healthy): store up after %v, "+
			"tablet served as %v after %v, the fleet converged after %v", outage.Round(time.Second), f.names[third], noticed.Round(time.Millisecond),
			up.Round(time.Millisecond), tabletAddr, served.Round(time.Millisecond), time.Since(restarted).Round(time.Millisecond))
	})

	addrs := f.oneToOne(t)
	if len(addrs) != 3 {
		t.Errorf("identities with an address: %v; want laptop, phone and tablet", addrs)
	}
}
