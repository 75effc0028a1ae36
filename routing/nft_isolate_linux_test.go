package routing_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tlsvpn/routing"
	"tlsvpn/routing/netnstest"
)

// TestNFTIsolateClientsTable checks the exact table client isolation
// makes, that its sets hold what ReachClients asks for, and that Set
// converges when ReachClients changes or isolation is turned off.
func TestNFTIsolateClientsTable(t *testing.T) {
	n := netnstest.New(t)
	f := newNFTFirewall(t, n)
	if got, err := f.IsolationDrops(); got != 0 || err != nil {
		t.Errorf("IsolationDrops() before Set = %d, %v; want 0, nil", got, err)
	}

	cfg1 := routing.FirewallConfig{
		TunnelIf:       "tvtun0",
		IsolateClients: true,
		// Overlapping, duplicated and adjacent prefixes of both families.
		ReachClients: nftPfxs(
			"198.18.20.0/24", "198.18.20.7/32", "198.18.0.5/32",
			"198.18.21.0/25", "198.18.21.128/25", "198.18.0.5/32",
			"2001:db8:5::/48", "2001:db8:5:1::/64", "fd00::1/128"),
	}
	// 198.18.20.0/24 and the two halves of 198.18.21.0/24 merge.
	want1 := nftTable(`
	counter isolation_drops {
		packets 0 bytes 0
	}

	set reach_clients4 {
		type ipv4_addr
		flags interval
		elements = { 198.18.0.5, 198.18.20.0/23 }
	}

	set reach_clients6 {
		type ipv6_addr
		flags interval
		elements = { 2001:db8:5::/48,
			     fd00::1 }
	}

	chain isolate_clients {
		type filter hook forward priority filter; policy accept;
		iifname != "tvtun0" accept
		oifname != "tvtun0" accept
		ct state established,related accept
		ip saddr @reach_clients4 accept
		ip6 saddr @reach_clients6 accept
		counter name "isolation_drops" drop
	}`)
	cfg1b := cfg1
	cfg1b.ReachClients = nftPfxs("fd00::1/128", "2001:db8:5::1/48", "198.18.21.128/25",
		"198.18.20.0/24", "198.18.21.0/25", "198.18.0.5/32", "198.18.20.128/25")

	// Changed, next to other forward chains; IPv4 empty, IPv6 everything.
	cfg2 := routing.FirewallConfig{
		TunnelIf:       "tvtun1",
		ClampMSS:       true,
		IsolateClients: true,
		ReachClients:   nftPfxs("::/0", "2001:db8:5::/48"),
	}
	want2 := nftTable(`
	counter isolation_drops {
		packets 0 bytes 0
	}

	set reach_clients4 {
		type ipv4_addr
		flags interval
	}

	set reach_clients6 {
		type ipv6_addr
		flags interval
		elements = { ::/0 }
	}

	chain clamp_mss {
		type filter hook forward priority mangle; policy accept;
		oifname "tvtun1" tcp flags syn / syn,rst tcp option maxseg size set rt mtu
		iifname "tvtun1" tcp flags syn / syn,rst tcp option maxseg size set rt mtu
	}

	chain isolate_clients {
		type filter hook forward priority filter; policy accept;
		iifname != "tvtun1" accept
		oifname != "tvtun1" accept
		ct state established,related accept
		ip saddr @reach_clients4 accept
		ip6 saddr @reach_clients6 accept
		counter name "isolation_drops" drop
	}`)
	// Off: ReachClients alone makes nothing.
	cfg3 := cfg2
	cfg3.IsolateClients = false
	want3 := nftTable(`
	chain clamp_mss {
		type filter hook forward priority mangle; policy accept;
		oifname "tvtun1" tcp flags syn / syn,rst tcp option maxseg size set rt mtu
		iifname "tvtun1" tcp flags syn / syn,rst tcp option maxseg size set rt mtu
	}`)

	steps := []struct {
		name   string
		cfg    routing.FirewallConfig
		tamper []string // nft command run before Set
		want   string
		// Addresses nft finds in the reach_clients4/6 set, and does not.
		in, out []string
	}{
		{name: "first", cfg: cfg1, want: want1,
			in: []string{"198.18.0.5", "198.18.20.0", "198.18.21.255", "2001:db8:5::", "2001:db8:5:ffff::1", "fd00::1"},
			out: []string{"198.18.0.4", "198.18.0.6", "198.18.19.255", "198.18.22.0", "0.0.0.0", "255.255.255.255",
				"2001:db8:4:ffff::1", "2001:db8:6::", "fd00::", "fd00::2", "::"}},
		{name: "again", cfg: cfg1, want: want1},
		{name: "unnormalized", cfg: cfg1b, want: want1},
		{name: "tampered", cfg: cfg1, want: want1, tamper: []string{
			"add", "element", "inet", nftOurTable, "reach_clients4", "{ 198.18.99.0/24 }"}},
		{name: "changed", cfg: cfg2, want: want2,
			in:  []string{"::", "2001:db8::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
			out: []string{"198.18.0.5", "0.0.0.0"}},
		{name: "off", cfg: cfg3, want: want3},
		{name: "on again", cfg: cfg1, want: want1},
		{name: "zero", cfg: routing.FirewallConfig{}, want: nftTable("")},
	}
	for _, s := range steps {
		if s.tamper != nil {
			n.Run(t, "nft", s.tamper...)
		}
		if err := f.Set(t.Context(), s.cfg); err != nil {
			t.Fatalf("%s: Set: %v", s.name, err)
		}
		got, _ := nftListOurs(t, n)
		if got != s.want {
			t.Errorf("%s: after Set, nft list table inet %s:\n%s\nwant:\n%s", s.name, nftOurTable, got, s.want)
		}
		for _, a := range s.in {
			if !nftSetHas(t, n, a) {
				t.Errorf("%s: %s not in its reach_clients set", s.name, a)
			}
		}
		for _, a := range s.out {
			if nftSetHas(t, n, a) {
				t.Errorf("%s: %s in its reach_clients set, want it out", s.name, a)
			}
		}
		if got, err := f.IsolationDrops(); got != 0 || err != nil {
			t.Errorf("%s: IsolationDrops() = %d, %v; want 0, nil (no traffic)", s.name, got, err)
		}
	}

	if err := f.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got, ok := nftListOurs(t, n); ok {
		t.Errorf("after Close, table still present:\n%s", got)
	}
	if _, err := f.IsolationDrops(); !errors.Is(err, routing.ErrClosed) {
		t.Errorf("IsolationDrops() after Close = %v, want ErrClosed", err)
	}
}

// TestNFTIsolateClients moves real traffic between two clients that reach
// each other only through the server, as tunnel clients do: R forwards
// between X and Y out of the interface the packets came in on (see
// newNFTHairpin), and C is a LAN on another interface of R.
func TestNFTIsolateClients(t *testing.T) {
	h := newNFTHairpin(t)
	f := newNFTFirewall(t, h.r)
	// Servers of each host, both families: [0] IPv4, [1] IPv6.
	listen := func(n *netnstest.NS, v4, v6 string) [2]net.Listener {
		return [2]net.Listener{n.Listen(t, "tcp4", v4+":8080"), n.Listen(t, "tcp6", "["+v6+"]:8080")}
	}
	lx := listen(h.x, "198.18.21.2", "2001:db8:21::2")
	ly := listen(h.y, "198.18.22.2", "2001:db8:22::2")
	lc := listen(h.c, "198.18.23.2", "2001:db8:23::2")

	type path struct {
		name string
		from *netnstest.NS
		to   [2]net.Listener
	}
	var (
		xy = path{"X->Y", h.x, ly}
		yx = path{"Y->X", h.y, lx}
		yc = path{"Y->C", h.y, lc}
		cy = path{"C->Y", h.c, ly}
	)
	isolate := func(reach ...string) routing.FirewallConfig {
		return routing.FirewallConfig{TunnelIf: h.rClients, IsolateClients: true, ReachClients: nftPfxs(reach...)}
	}
	steps := []struct {
		name    string
		cfg     routing.FirewallConfig
		open    []path // new connections and pings get through
		blocked []path // they are dropped and counted
		// UDP to a closed port gets the ICMP port unreachable back: a
		// related packet, from a client that may not open flows itself.
		related []path
	}{
		{name: "no isolation", cfg: routing.FirewallConfig{TunnelIf: h.rClients},
			open: []path{xy, yx, yc, cy}},
		// X by its LAN prefix (which holds the host prefix too), Y by
		// nothing: Y answers X, reaches the LAN and is reached from it,
		// but cannot open anything to X.
		{name: "X reaches clients", cfg: isolate("198.18.21.0/24", "198.18.21.2/32", "2001:db8:21::2/128", "fd00::/8"),
			open: []path{xy, yc, cy}, blocked: []path{yx}, related: []path{xy}},
		{name: "Y reaches clients", cfg: isolate("198.18.22.2/32", "2001:db8:22::/64"),
			open: []path{yx, yc, cy}, blocked: []path{xy}, related: []path{yx}},
		{name: "nobody reaches clients", cfg: isolate(),
			open: []path{yc, cy}, blocked: []path{xy, yx}},
		{name: "isolation off", cfg: routing.FirewallConfig{TunnelIf: h.rClients, ReachClients: nftPfxs("198.18.21.2/32")},
			open: []path{xy, yx, yc, cy}},
	}

	var drops uint64
	// Connections X opened while it could reach clients: they must
	// outlive the Set that takes that away (conntrack knows the flows).
	var kept []nftConnPair
	var lastList string
	for _, s := range steps {
		if err := f.Set(t.Context(), s.cfg); err != nil {
			t.Fatalf("%s: Set: %v", s.name, err)
		}
		if got, err := f.IsolationDrops(); got != drops || err != nil {
			t.Errorf("%s: IsolationDrops() after Set = %d, %v; want %d (carried over)", s.name, got, err, drops)
		}
		if s.cfg.IsolateClients {
			list := h.r.Run(t, "nft", "list", "counter", "inet", nftOurTable, "isolation_drops")
			if want := fmt.Sprintf("packets %d ", drops); !strings.Contains(list, want) {
				t.Errorf("%s: nft list counter shows\n%s\nwant %q (carried over)", s.name, list, want)
			}
		}
		for _, k := range kept {
			if err := nftExchange(k.client, k.server); err != nil {
				t.Errorf("%s: connection X opened to %v before this Set: %v", s.name, k.server.LocalAddr(), err)
			}
			k.client.Close()
			k.server.Close()
		}
		kept = nil

		for _, p := range s.open {
			for _, l := range p.to {
				if err := nftTryTCP(t, p.from, l); err != nil {
					t.Errorf("%s: %s TCP to %v: %v, want it to work", s.name, p.name, l.Addr(), err)
				}
				dst := netip.MustParseAddrPort(l.Addr().String()).Addr().String()
				if out, err := nftPing(t, p.from, dst); err != nil {
					t.Errorf("%s: %s ping %s: %v, want it to work\n%s", s.name, p.name, dst, err, out)
				}
			}
		}
		for _, p := range s.related {
			for _, l := range p.to {
				dst := netip.AddrPortFrom(netip.MustParseAddrPort(l.Addr().String()).Addr(), 9) // discard: closed
				if err := nftUDPRefused(p.from, dst); err != nil {
					t.Errorf("%s: %s UDP to closed %v: %v", s.name, p.name, dst, err)
				}
			}
		}
		if got, err := f.IsolationDrops(); got != drops || err != nil {
			t.Errorf("%s: IsolationDrops() after allowed traffic only = %d, %v; want %d", s.name, got, err, drops)
		}

		// Each of these waits out a timeout, so they run at once.
		var wg sync.WaitGroup
		for _, p := range s.blocked {
			for _, l := range p.to {
				wg.Go(func() {
					err := nftTryTCP(t, p.from, l)
					if ne := net.Error(nil); err == nil || !errors.As(err, &ne) || !ne.Timeout() {
						t.Errorf("%s: %s TCP to %v: %v, want a timeout (SYN dropped in R)", s.name, p.name, l.Addr(), err)
					}
				})
				wg.Go(func() {
					dst := netip.MustParseAddrPort(l.Addr().String()).Addr().String()
					if out, err := nftPing(t, p.from, dst); err == nil {
						t.Errorf("%s: %s ping %s succeeded, want it dropped\n%s", s.name, p.name, dst, out)
					}
				})
			}
		}
		wg.Wait()
		got, err := f.IsolationDrops()
		if err != nil {
			t.Fatalf("%s: IsolationDrops: %v", s.name, err)
		}
		// At least one SYN and one echo request per path and family.
		if least := drops + uint64(4*len(s.blocked)); got < least || (len(s.blocked) == 0 && got != drops) {
			t.Errorf("%s: IsolationDrops() = %d after %d blocked paths, want at least %d", s.name, got, len(s.blocked), least)
		}
		t.Logf("%s: IsolationDrops() = %d", s.name, got)
		drops = got
		if s.cfg.IsolateClients {
			lastList, _ = nftListOurs(t, h.r)
		}

		if s.cfg.IsolateClients && slices.Contains(s.open, xy) {
			for _, l := range ly {
				kept = append(kept, nftOpen(t, h.x, l))
			}
		}
	}
	if len(kept) != 0 {
		t.Fatalf("%d connections left unchecked: the last step must not keep any", len(kept))
	}
	t.Logf("nft list table inet %s in R after the last isolating step:\n%s", nftOurTable, lastList)
}

// nftHairpin is two clients, X and Y, that reach each other only through
// R, which sends their packets back out of the interface they came in on:
// on a VPN server both sides are the TUN device; here they are one veth
// (rClients) into a bridge S that X and Y hang off, each in a subnet of its
// own. R sends no ICMP redirects and X and Y accept none, so the hairpin
// holds. C is a LAN on another interface of R.
//
//	X 198.18.21.2 2001:db8:21::2 --+
//	                               S -- rClients 198.18.21.1 2001:db8:21::1  R
//	Y 198.18.22.2 2001:db8:22::2 --+             198.18.22.1 2001:db8:22::1
//	C 198.18.23.2 2001:db8:23::2 ----------------198.18.23.1 2001:db8:23::1
type nftHairpin struct {
	r, s, x, y, c *netnstest.NS
	rClients      string
}

func newNFTHairpin(t *testing.T) nftHairpin {
	t.Helper()
	h := nftHairpin{
		r: netnstest.New(t), s: netnstest.New(t), x: netnstest.New(t), y: netnstest.New(t), c: netnstest.New(t),
		rClients: "tvclients",
	}
	for _, n := range []*netnstest.NS{h.r, h.s, h.x, h.y, h.c} {
		// No duplicate address detection on the interfaces to come: while
		// R's link-local address is tentative, R cannot send the neighbor
		// solicitations that forwarding to X, Y or C needs (ndisc_solicit
		// wants a link-local source), and the first packets are lost.
		n.Run(t, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
	}
	// Interface names are per namespace, so fixed names cannot collide
	// with another test's.
	nftLink(t, h.r, h.rClients, h.s, "r")
	nftLink(t, h.x, "eth0", h.s, "x")
	nftLink(t, h.y, "eth0", h.s, "y")
	h.s.Run(t, "ip", "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
	t.Cleanup(func() { nftDelLink(t, h.s, "br0") })
	for _, port := range []string{"r", "x", "y"} {
		h.s.Run(t, "ip", "link", "set", port, "master", "br0", "up")
	}
	h.s.Run(t, "ip", "link", "set", "br0", "up")

	h.r.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
		"net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf."+h.rClients+".send_redirects=0")
	for _, a := range []string{"198.18.21.1/24", "198.18.22.1/24", "2001:db8:21::1/64", "2001:db8:22::1/64"} {
		nftAddAddr(t, h.r, h.rClients, a)
	}
	h.r.Run(t, "ip", "link", "set", h.rClients, "up")
	for _, c := range []struct {
		n           *netnstest.NS
		addr, addr6 string
		gw, gw6     string
	}{
		{h.x, "198.18.21.2/24", "2001:db8:21::2/64", "198.18.21.1", "2001:db8:21::1"},
		{h.y, "198.18.22.2/24", "2001:db8:22::2/64", "198.18.22.1", "2001:db8:22::1"},
	} {
		// IPv6 has no send_redirects: R always sends them, and a client
		// that obeyed would then talk to the other directly over S.
		c.n.Run(t, "sysctl", "-qw",
			"net.ipv4.conf.all.accept_redirects=0", "net.ipv4.conf.eth0.accept_redirects=0",
			"net.ipv6.conf.all.accept_redirects=0", "net.ipv6.conf.eth0.accept_redirects=0")
		nftAddAddr(t, c.n, "eth0", c.addr)
		nftAddAddr(t, c.n, "eth0", c.addr6)
		c.n.Run(t, "ip", "link", "set", "eth0", "up")
		c.n.Run(t, "ip", "route", "add", "default", "via", c.gw)
		c.n.Run(t, "ip", "-6", "route", "add", "default", "via", c.gw6)
	}

	rLAN, cIf := netnstest.Veth(t, h.r, netip.MustParsePrefix("198.18.23.1/24"), h.c, netip.MustParsePrefix("198.18.23.2/24"))
	nftAddAddr(t, h.r, rLAN, "2001:db8:23::1/64")
	nftAddAddr(t, h.c, cIf, "2001:db8:23::2/64")
	h.c.Run(t, "ip", "route", "add", "default", "via", "198.18.23.1")
	h.c.Run(t, "ip", "-6", "route", "add", "default", "via", "2001:db8:23::1")

	// A host's first IPv6 neighbor solicitation for R can go unanswered
	// for a second (seen on 6.x: R, fresh and forwarding, answers only the
	// retransmission). R's own pings teach each host R's link-layer
	// address first, so the test's packets and timeouts do not race that.
	for _, a := range []string{"198.18.21.2", "198.18.22.2", "198.18.23.2", "2001:db8:21::2", "2001:db8:22::2", "2001:db8:23::2"} {
		h.r.Run(t, "ping", "-n", "-c1", "-W5", a)
	}
	return h
}

// nftLink connects namespace a (interface aIf) and b (bIf) with a veth
// pair, deleted in cleanup (it would also go with either namespace).
func nftLink(t *testing.T, a *netnstest.NS, aIf string, b *netnstest.NS, bIf string) {
	t.Helper()
	a.Run(t, "ip", "link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b.Name)
	t.Cleanup(func() { nftDelLink(t, a, aIf) })
}

// nftDelLink deletes a link, if it still exists.
func nftDelLink(t *testing.T, n *netnstest.NS, ifname string) {
	out, err := exec.Command("ip", "-n", n.Name, "link", "del", ifname).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "Cannot find device") {
		t.Errorf("ip -n %s link del %s: %v\n%s", n.Name, ifname, err, out)
	}
}

// nftSetHas reports whether the reach_clients set of addr's family holds
// addr.
func nftSetHas(t *testing.T, n *netnstest.NS, addr string) bool {
	t.Helper()
	set := "reach_clients4"
	if netip.MustParseAddr(addr).Is6() {
		set = "reach_clients6"
	}
	out, err := n.Cmd(t.Context(), "nft", "get", "element", "inet", nftOurTable, set, "{ "+addr+" }").CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "No such file or directory") {
			return false
		}
		t.Fatalf("nft get element %s { %s }: %v\n%s", set, addr, err, out)
	}
	return true
}

// nftTryTCP connects from n to l, within a second, and moves a message
// each way. It does not stop the test, so it may run on any goroutine.
func nftTryTCP(t *testing.T, from *netnstest.NS, l net.Listener) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	c, err := from.Dial(ctx, "tcp", l.Addr().String())
	if err != nil {
		return err
	}
	defer c.Close()
	l.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	s, err := l.Accept()
	if err != nil {
		return fmt.Errorf("accept on %v: %w", l.Addr(), err)
	}
	defer s.Close()
	return nftExchange(c, s)
}

// nftConnPair is both ends of one TCP connection.
type nftConnPair struct{ client, server net.Conn }

// nftOpen connects from n to l and returns both ends, closed in cleanup.
func nftOpen(t *testing.T, from *netnstest.NS, l net.Listener) nftConnPair {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := from.Dial(ctx, "tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { c.Close() })
	l.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	s, err := l.Accept()
	if err != nil {
		t.Fatalf("accept on %v: %v", l.Addr(), err)
	}
	t.Cleanup(func() { s.Close() })
	return nftConnPair{c, s}
}

// nftExchange sends a message from client to server and one back.
func nftExchange(client, server net.Conn) error {
	deadline := time.Now().Add(5 * time.Second)
	for _, c := range []net.Conn{client, server} {
		if err := c.SetDeadline(deadline); err != nil {
			return err
		}
	}
	for _, dir := range []struct {
		from, to net.Conn
		msg      string
	}{{client, server, "ping"}, {server, client, "pong"}} {
		if _, err := io.WriteString(dir.from, dir.msg); err != nil {
			return fmt.Errorf("write %q from %v: %w", dir.msg, dir.from.LocalAddr(), err)
		}
		buf := make([]byte, len(dir.msg))
		if _, err := io.ReadFull(dir.to, buf); err != nil {
			return fmt.Errorf("read %q at %v: %w", dir.msg, dir.to.LocalAddr(), err)
		}
		if string(buf) != dir.msg {
			return fmt.Errorf("read %q at %v, want %q", buf, dir.to.LocalAddr(), dir.msg)
		}
	}
	return nil
}

// nftUDPRefused sends a datagram from n to dst, a closed port, and checks
// that the ICMP port unreachable comes back (the socket reports
// ECONNREFUSED).
func nftUDPRefused(from *netnstest.NS, dst netip.AddrPort) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := from.Dial(ctx, "udp", dst.String())
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	_, err = c.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("read: %v, want ECONNREFUSED (an ICMP port unreachable)", err)
	}
	return nil
}
