package routing_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"tlsvpn/routing"
	"tlsvpn/routing/netnstest"
)

func TestNFTConfigValidate(t *testing.T) {
	ap := netip.MustParseAddrPort
	tests := []struct {
		name    string
		cfg     routing.FirewallConfig
		wantErr bool
	}{
		{name: "zero", cfg: routing.FirewallConfig{}},
		{name: "masquerade without tunnel", cfg: routing.FirewallConfig{Masquerade: nftPfxs("100.64.0.0/10")}},
		{name: "full", cfg: routing.FirewallConfig{
			TunnelIf: "tunnelc0", Masquerade: nftPfxs("100.64.0.0/10", "fd00::/64"),
			ClampMSS: true, KillSwitch: true, ServerEndpoints: []netip.AddrPort{ap("192.0.2.1:443"), ap("[2001:db8::1]:443")},
			IsolateClients: true, ReachClients: nftPfxs("100.64.0.2/32", "198.18.20.0/24", "fd00::2/128", "2001:db8:20::/48"),
		}},
		{name: "isolation without reach", cfg: routing.FirewallConfig{TunnelIf: "tunneld0", IsolateClients: true}},
		{name: "overlapping reach", cfg: routing.FirewallConfig{
			TunnelIf: "tunneld0", IsolateClients: true, ReachClients: nftPfxs("100.64.0.0/24", "100.64.0.7/32", "100.64.0.7/32"),
		}},
		{name: "reach without isolation", cfg: routing.FirewallConfig{ReachClients: nftPfxs("100.64.0.2/32")}},
		{name: "kill switch without tunnel", cfg: routing.FirewallConfig{KillSwitch: true}, wantErr: true},
		{name: "clamp without tunnel", cfg: routing.FirewallConfig{ClampMSS: true}, wantErr: true},
		{name: "isolation without tunnel", cfg: routing.FirewallConfig{IsolateClients: true, ReachClients: nftPfxs("100.64.0.2/32")}, wantErr: true},
		{name: "invalid reach prefix", cfg: routing.FirewallConfig{
			TunnelIf: "tunneld0", IsolateClients: true, ReachClients: []netip.Prefix{netip.MustParsePrefix("100.64.0.2/32"), {}},
		}, wantErr: true},
		{name: "mapped reach prefix", cfg: routing.FirewallConfig{
			TunnelIf: "tunneld0", IsolateClients: true, ReachClients: nftPfxs("::ffff:100.64.0.2/128"),
		}, wantErr: true},
		{name: "bad reach prefix without isolation", cfg: routing.FirewallConfig{ReachClients: nftPfxs("::ffff:100.64.0.2/128")}, wantErr: true},
		{name: "long name", cfg: routing.FirewallConfig{TunnelIf: "a234567890123456"}, wantErr: true},
		{name: "invalid prefix", cfg: routing.FirewallConfig{Masquerade: []netip.Prefix{{}}}, wantErr: true},
		{name: "mapped prefix", cfg: routing.FirewallConfig{Masquerade: nftPfxs("::ffff:100.64.0.0/106")}, wantErr: true},
		{name: "invalid endpoint", cfg: routing.FirewallConfig{ServerEndpoints: []netip.AddrPort{{}}}, wantErr: true},
		{name: "mapped endpoint", cfg: routing.FirewallConfig{ServerEndpoints: []netip.AddrPort{ap("[::ffff:192.0.2.1]:443")}}, wantErr: true},
		{name: "zoned endpoint", cfg: routing.FirewallConfig{ServerEndpoints: []netip.AddrPort{ap("[fe80::1%eth0]:443")}}, wantErr: true},
		{name: "port 0", cfg: routing.FirewallConfig{ServerEndpoints: []netip.AddrPort{ap("192.0.2.1:0")}}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err != nil) != tt.wantErr {
				t.Fatalf("Validate() = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, routing.ErrInvalidConfig) {
				t.Errorf("Validate() = %v, want it to wrap ErrInvalidConfig", err)
			}
		})
	}

	in := routing.FirewallConfig{
		Masquerade:      nftPfxs("fd00::5/64", "100.64.3.4/10", "100.64.0.0/10"),
		ServerEndpoints: []netip.AddrPort{ap("192.0.2.2:443"), ap("192.0.2.1:443"), ap("192.0.2.2:443")},
	}
	got := in.Normalized()
	if want := nftPfxs("100.64.0.0/10", "fd00::/64"); !slices.Equal(got.Masquerade, want) {
		t.Errorf("Normalized().Masquerade = %v, want %v", got.Masquerade, want)
	}
	if want := []netip.AddrPort{ap("192.0.2.1:443"), ap("192.0.2.2:443")}; !slices.Equal(got.ServerEndpoints, want) {
		t.Errorf("Normalized().ServerEndpoints = %v, want %v", got.ServerEndpoints, want)
	}
	if in.Masquerade[0] != netip.MustParsePrefix("fd00::5/64") {
		t.Errorf("Normalized modified its input: %v", in.Masquerade)
	}
}

func TestNFTConfigNormalizedReachClients(t *testing.T) {
	tests := []struct {
		name string
		in   []netip.Prefix
		want []netip.Prefix
	}{
		{name: "nil", in: nil, want: nil},
		{name: "contained host", in: nftPfxs("198.18.20.7/32", "198.18.20.0/24"), want: nftPfxs("198.18.20.0/24")},
		{name: "duplicates, unmasked", in: nftPfxs("198.18.20.9/24", "198.18.20.0/24", "198.18.20.0/24"), want: nftPfxs("198.18.20.0/24")},
		{name: "same start", in: nftPfxs("198.18.20.0/25", "198.18.20.0/24", "198.18.20.0/26"), want: nftPfxs("198.18.20.0/24")},
		{name: "by address, IPv4 first",
			in:   nftPfxs("fd00::1/128", "198.18.22.0/24", "2001:db8::/32", "198.18.0.5/32"),
			want: nftPfxs("198.18.0.5/32", "198.18.22.0/24", "2001:db8::/32", "fd00::1/128")},
		{name: "adjacent kept", in: nftPfxs("198.18.21.128/25", "198.18.21.0/25"), want: nftPfxs("198.18.21.0/25", "198.18.21.128/25")},
		{name: "nested",
			in:   nftPfxs("2001:db8:5:1::/64", "2001:db8::/32", "2001:db9::1/128", "2001:db8:5::/48"),
			want: nftPfxs("2001:db8::/32", "2001:db9::1/128")},
		{name: "all of one family",
			in:   nftPfxs("198.18.0.1/32", "fd00::/8", "0.0.0.0/0", "255.255.255.255/32"),
			want: nftPfxs("0.0.0.0/0", "fd00::/8")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := slices.Clone(tt.in)
			got := routing.FirewallConfig{ReachClients: in}.Normalized().ReachClients
			if !slices.Equal(got, tt.want) {
				t.Errorf("Normalized().ReachClients of %v = %v, want %v", tt.in, got, tt.want)
			}
			if !slices.Equal(in, tt.in) {
				t.Errorf("Normalized modified its input: %v, was %v", in, tt.in)
			}
		})
	}

	if c := (routing.FirewallConfig{ReachClients: nftPfxs("198.18.0.1/32")}); !c.IsZero() {
		t.Errorf("%+v.IsZero() = false, want true: ReachClients is unused without IsolateClients", c)
	}
	if c := (routing.FirewallConfig{TunnelIf: "tunneld0", IsolateClients: true}); c.IsZero() {
		t.Errorf("%+v.IsZero() = true, want false", c)
	}
}

// TestNFTMasquerade routes A -> B -> C, with B's link toward A standing in
// for the tunnel, and checks the source address C sees.
func TestNFTMasquerade(t *testing.T) {
	r := newNFTRouted(t)
	l4 := r.c.Listen(t, "tcp4", "198.18.2.2:8080")
	l6 := r.c.Listen(t, "tcp6", "[2001:db8:2::2]:8080")
	f := newNFTFirewall(t, r.b)
	masq := routing.FirewallConfig{
		TunnelIf:   r.bTowardA,
		Masquerade: nftPfxs("198.18.1.0/24", "2001:db8:1::/64"),
	}

	steps := []struct {
		name   string
		apply  func() error
		v4, v6 string // source address seen by C
	}{
		{"no table", func() error { return nil }, "198.18.1.1", "2001:db8:1::1"},
		{"masquerade", func() error { return f.Set(t.Context(), masq) }, "198.18.2.1", "2001:db8:2::1"},
		{"zero config", func() error { return f.Set(t.Context(), routing.FirewallConfig{}) }, "198.18.1.1", "2001:db8:1::1"},
		{"masquerade again", func() error { return f.Set(t.Context(), masq) }, "198.18.2.1", "2001:db8:2::1"},
		{"closed", f.Close, "198.18.1.1", "2001:db8:1::1"},
	}
	for _, s := range steps {
		if err := s.apply(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		for _, c := range []struct {
			l    net.Listener
			want string
		}{{l4, s.v4}, {l6, s.v6}} {
			conn := nftAccept(t, r.a, c.l)
			got := netip.MustParseAddrPort(conn.RemoteAddr().String()).Addr()
			conn.Close()
			if got.String() != c.want {
				t.Errorf("%s: C sees connection to %v from %v, want from %s", s.name, c.l.Addr(), got, c.want)
			}
		}
	}
}

// TestNFTKillSwitch turns the kill switch on in a fresh namespace, before
// any traffic (so that neighbor discovery must pass it too), and then off.
func TestNFTKillSwitch(t *testing.T) {
	x, y := netnstest.New(t), netnstest.New(t)
	xIf, yIf := netnstest.Veth(t, x, netip.MustParsePrefix("198.18.3.1/24"), y, netip.MustParsePrefix("198.18.3.2/24"))
	nftAddAddr(t, x, xIf, "2001:db8:3::1/64")
	nftAddAddr(t, y, yIf, "2001:db8:3::2/64")
	var (
		server4 = y.Listen(t, "tcp4", "198.18.3.2:443")
		server6 = y.Listen(t, "tcp6", "[2001:db8:3::2]:443")
		other4  = y.Listen(t, "tcp4", "198.18.3.2:80")
		other6  = y.Listen(t, "tcp6", "[2001:db8:3::2]:80")
		lo4     = x.Listen(t, "tcp4", "127.0.0.1:8080")
		lo6     = x.Listen(t, "tcp6", "[::1]:8080")
	)

	f := newNFTFirewall(t, x)
	err := f.Set(t.Context(), routing.FirewallConfig{
		TunnelIf:   "tvtun0", // absent: the rule matches a name
		KillSwitch: true,
		ServerEndpoints: []netip.AddrPort{
			netip.MustParseAddrPort("198.18.3.2:443"),
			netip.MustParseAddrPort("[2001:db8:3::2]:443"),
		},
	})
	if err != nil {
		t.Fatalf("Set: %v", err)
	}
	for _, l := range []net.Listener{server4, server6, lo4, lo6} {
		nftAccept(t, x, l).Close()
	}
	for _, l := range []net.Listener{other4, other6} {
		// TCP retransmits a SYN dropped in output until the deadline;
		// other protocols (ping below) see EPERM at once.
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		c, err := x.Dial(ctx, "tcp", l.Addr().String())
		cancel()
		var ne net.Error
		switch {
		case err == nil:
			c.Close()
			t.Errorf("kill switch on: dial %v succeeded, want it blocked", l.Addr())
		case errors.Is(err, syscall.EPERM), errors.As(err, &ne) && ne.Timeout():
		default:
			t.Errorf("kill switch on: dial %v: %v, want a timeout or EPERM (dropped in output)", l.Addr(), err)
		}
	}
	for _, dst := range []string{"198.18.3.2", "2001:db8:3::2"} {
		if out, err := nftPing(t, x, dst); err == nil {
			t.Errorf("kill switch on: ping %s succeeded, want it blocked:\n%s", dst, out)
		}
	}

	if err := f.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, l := range []net.Listener{server4, server6, other4, other6, lo4, lo6} {
		nftAccept(t, x, l).Close()
	}
	for _, dst := range []string{"198.18.3.2", "2001:db8:3::2"} {
		if out, err := nftPing(t, x, dst); err != nil {
			t.Errorf("after Close: ping %s: %v\n%s", dst, err, out)
		}
	}
}

// TestNFTSetConverges checks the exact table after each Set, that Set
// repairs a tampered table, and that the tables of others survive.
func TestNFTSetConverges(t *testing.T) {
	n := netnstest.New(t)
	// Someone else's tables, including one with our name in another family.
	for _, cmd := range [][]string{
		{"add", "table", "inet", "other"},
		{"add", "chain", "inet", "other", "out", "{ type filter hook output priority 0; policy accept; }"},
		{"add", "rule", "inet", "other", "out", "tcp", "dport", "9", "counter", "accept"},
		{"add", "table", "ip", nftOurTable},
		{"add", "chain", "ip", nftOurTable, "post", "{ type nat hook postrouting priority 100; }"},
		{"add", "rule", "ip", nftOurTable, "post", "ip", "saddr", "192.0.2.0/24", "masquerade"},
	} {
		n.Run(t, "nft", cmd...)
	}
	others := nftOthers(t, n)

	f := newNFTFirewall(t, n)
	cfg1 := routing.FirewallConfig{
		TunnelIf:   "tvtun0",
		Masquerade: nftPfxs("100.64.0.0/10", "fd00:64::/64"),
		KillSwitch: true,
		ServerEndpoints: []netip.AddrPort{
			netip.MustParseAddrPort("198.18.0.1:443"),
			netip.MustParseAddrPort("[2001:db8::1]:8443"),
		},
	}
	want1 := nftTable(`
	chain masquerade {
		type nat hook postrouting priority srcnat; policy accept;
		oifname != "tvtun0" ip saddr 100.64.0.0/10 masquerade
		oifname != "tvtun0" ip6 saddr fd00:64::/64 masquerade
	}

	chain killswitch_output {
		type filter hook output priority filter; policy drop;
		oifname "lo" accept
		oifname "tvtun0" accept
		ip daddr 198.18.0.1 tcp dport 443 accept
		ip6 daddr 2001:db8::1 tcp dport 8443 accept
		meta nfproto ipv4 udp sport 68 udp dport 67 accept
		ip6 saddr fe80::/10 udp sport 546 udp dport 547 accept
		icmpv6 type nd-router-solicit accept
		icmpv6 type nd-neighbor-solicit accept
		icmpv6 type nd-neighbor-advert accept
		icmpv6 type mld2-listener-report accept
	}

	chain killswitch_forward {
		type filter hook forward priority filter; policy drop;
		oifname "lo" accept
		oifname "tvtun0" accept
		iifname "tvtun0" accept
		ip daddr 198.18.0.1 tcp dport 443 accept
		ip6 daddr 2001:db8::1 tcp dport 8443 accept
		meta nfproto ipv4 udp sport 68 udp dport 67 accept
		ip6 saddr fe80::/10 udp sport 546 udp dport 547 accept
		icmpv6 type nd-router-solicit accept
		icmpv6 type nd-neighbor-solicit accept
		icmpv6 type nd-neighbor-advert accept
		icmpv6 type mld2-listener-report accept
	}`)
	// The same state, unnormalized.
	cfg1b := cfg1
	cfg1b.Masquerade = nftPfxs("fd00:64::1/64", "100.64.0.0/10", "100.100.0.0/10")
	cfg1b.ServerEndpoints = slices.Concat(cfg1.ServerEndpoints[1:], cfg1.ServerEndpoints)

	cfg2 := routing.FirewallConfig{
		TunnelIf:        "tvtun1",
		Masquerade:      nftPfxs("0.0.0.0/0"),
		ServerEndpoints: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.7:443")}, // unused without KillSwitch
	}
	want2 := nftTable(`
	chain masquerade {
		type nat hook postrouting priority srcnat; policy accept;
		oifname != "tvtun1" meta nfproto ipv4 masquerade
	}`)

	steps := []struct {
		name   string
		cfg    routing.FirewallConfig
		tamper []string // nft command run before Set
		want   string
	}{
		{name: "first", cfg: cfg1, want: want1},
		{name: "again", cfg: cfg1, want: want1},
		{name: "unnormalized", cfg: cfg1b, want: want1},
		{name: "tampered", cfg: cfg1,
			tamper: []string{"insert", "rule", "inet", nftOurTable, "killswitch_output", "accept"}, want: want1},
		{name: "foreign chain", cfg: cfg1,
			tamper: []string{"add", "chain", "inet", nftOurTable, "extra"}, want: want1},
		{name: "changed", cfg: cfg2, want: want2},
		{name: "zero", cfg: routing.FirewallConfig{}, want: nftTable("")},
		{name: "from zero", cfg: cfg1, want: want1},
	}
	for _, s := range steps {
		if s.tamper != nil {
			n.Run(t, "nft", s.tamper...)
		}
		if err := f.Set(t.Context(), s.cfg); err != nil {
			t.Fatalf("%s: Set: %v", s.name, err)
		}
		if got, _ := nftListOurs(t, n); got != s.want {
			t.Errorf("%s: after Set, nft list table inet %s:\n%s\nwant:\n%s", s.name, nftOurTable, got, s.want)
		}
		if got := nftOthers(t, n); got != others {
			t.Errorf("%s: after Set, other tables changed:\n%s\nwant:\n%s", s.name, got, others)
		}
	}

	if err := f.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got, ok := nftListOurs(t, n); ok {
		t.Errorf("after Close, table still present:\n%s", got)
	}
	if got := nftOthers(t, n); got != others {
		t.Errorf("after Close, other tables changed:\n%s\nwant:\n%s", got, others)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := f.Set(t.Context(), cfg1); !errors.Is(err, routing.ErrClosed) {
		t.Errorf("Set after Close = %v, want ErrClosed", err)
	}
	if err := f.Set(t.Context(), routing.FirewallConfig{KillSwitch: true}); !errors.Is(err, routing.ErrClosed) {
		t.Errorf("Set after Close = %v, want ErrClosed", err)
	}
}

func TestNFTSetInvalid(t *testing.T) {
	n := netnstest.New(t)
	f := newNFTFirewall(t, n)
	if err := f.Set(t.Context(), routing.FirewallConfig{KillSwitch: true}); !errors.Is(err, routing.ErrInvalidConfig) {
		t.Errorf("Set(kill switch without tunnel) = %v, want ErrInvalidConfig", err)
	}
	if got, ok := nftListOurs(t, n); ok {
		t.Errorf("after invalid Set, table present:\n%s", got)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := f.Set(ctx, routing.FirewallConfig{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Set(canceled ctx) = %v, want context.Canceled", err)
	}
	if _, err := routing.NewFirewall(routing.FirewallOptions{Instance: nftInstance, NetNS: "/var/run/netns/" + n.Name + "-absent"}); err == nil {
		t.Errorf("NewFirewall(absent netns) succeeded")
	}
}

// TestNFTClampMSS checks the rule text, and that a SYN forwarded from the
// "tunnel" to a route with a small MTU gets its MSS lowered.
func TestNFTClampMSS(t *testing.T) {
	r := newNFTRouted(t)
	// B's route toward C allows 1300 bytes; C's own link has 1500, so
	// only the clamp tells C to send smaller segments.
	r.b.Run(t, "ip", "route", "replace", "198.18.2.0/24", "dev", r.bTowardC, "mtu", "1300")
	l := r.c.Listen(t, "tcp4", "198.18.2.2:8080")
	f := newNFTFirewall(t, r.b)

	const rule = "tcp flags syn / syn,rst tcp option maxseg size set rt mtu"
	steps := []struct {
		name     string
		clamp    bool
		wantMax  int // upper bound of C's MSS; 0: none
		wantMin  int
		wantRule int
	}{
		// 1500 - 40 minus 12 bytes of timestamps, or thereabouts
		{name: "off", clamp: false, wantMin: 1300},
		// 1300 - 40 = 1260 before options
		{name: "on", clamp: true, wantMax: 1260, wantRule: 2},
		{name: "off again", clamp: false, wantMin: 1300},
	}
	for _, s := range steps {
		if err := f.Set(t.Context(), routing.FirewallConfig{TunnelIf: r.bTowardA, ClampMSS: s.clamp}); err != nil {
			t.Fatalf("%s: Set: %v", s.name, err)
		}
		list, _ := nftListOurs(t, r.b)
		if got := strings.Count(list, rule); got != s.wantRule {
			t.Errorf("%s: nft list shows %q %d times, want %d:\n%s", s.name, rule, got, s.wantRule, list)
		}
		if s.clamp {
			for _, dir := range []string{"oifname", "iifname"} {
				if want := dir + ` "` + r.bTowardA + `" ` + rule; !strings.Contains(list, want) {
					t.Errorf("%s: nft list lacks %q:\n%s", s.name, want, list)
				}
			}
		}
		conn := nftAccept(t, r.a, l)
		mss := nftMSS(t, conn)
		t.Logf("%s: C's MSS = %d", s.name, mss)
		conn.Close()
		if (s.wantMax != 0 && mss > s.wantMax) || mss < s.wantMin {
			t.Errorf("%s: C's MSS = %d, want in [%d, %d]", s.name, mss, s.wantMin, s.wantMax)
		}
	}
}

func TestNFTCleanup(t *testing.T) {
	n := netnstest.New(t)
	opts := routing.FirewallOptions{Instance: nftInstance, NetNS: "/var/run/netns/" + n.Name}
	// A process that "crashes": it never calls Close.
	f, err := routing.NewFirewall(opts)
	if err != nil {
		t.Fatalf("NewFirewall: %v", err)
	}
	if err := f.Set(t.Context(), routing.FirewallConfig{TunnelIf: "tvtun0", KillSwitch: true}); err != nil {
		t.Fatalf("Set: %v", err)
	}
	n.Run(t, "nft", "add", "table", "inet", "other")

	for i := range 2 { // the second finds nothing to do
		if err := routing.CleanupFirewall(t.Context(), opts); err != nil {
			t.Fatalf("CleanupFirewall #%d: %v", i+1, err)
		}
		if got, ok := nftListOurs(t, n); ok {
			t.Fatalf("after CleanupFirewall #%d, table present:\n%s", i+1, got)
		}
	}
	if got := n.Run(t, "nft", "list", "tables"); got != "table inet other\n" {
		t.Errorf("after CleanupFirewall, nft list tables = %q, want only inet other", got)
	}
	// A new process adopts and removes leftovers too.
	if err := f.Set(t.Context(), routing.FirewallConfig{TunnelIf: "tvtun0", KillSwitch: true}); err != nil {
		t.Fatalf("Set: %v", err)
	}
	g := newNFTFirewall(t, n)
	if err := g.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got, ok := nftListOurs(t, n); ok {
		t.Errorf("after Close of a new Firewall, leftover table present:\n%s", got)
	}
	if err := f.Close(); err != nil {
		t.Errorf("Close of the first Firewall: %v", err)
	}
}

// nftRouted is A <-> B <-> C with forwarding on B and routes both ways,
// IPv4 and IPv6:
//
//	A 198.18.1.1 2001:db8:1::1 -- B 198.18.1.2 2001:db8:1::2 (bTowardA)
//	B 198.18.2.1 2001:db8:2::1 (bTowardC) -- C 198.18.2.2 2001:db8:2::2
type nftRouted struct {
	a, b, c            *netnstest.NS
	bTowardA, bTowardC string
}

func newNFTRouted(t *testing.T) nftRouted {
	t.Helper()
	r := nftRouted{a: netnstest.New(t), b: netnstest.New(t), c: netnstest.New(t)}
	aIf, bA := netnstest.Veth(t, r.a, netip.MustParsePrefix("198.18.1.1/24"), r.b, netip.MustParsePrefix("198.18.1.2/24"))
	bC, cIf := netnstest.Veth(t, r.b, netip.MustParsePrefix("198.18.2.1/24"), r.c, netip.MustParsePrefix("198.18.2.2/24"))
	r.bTowardA, r.bTowardC = bA, bC
	nftAddAddr(t, r.a, aIf, "2001:db8:1::1/64")
	nftAddAddr(t, r.b, bA, "2001:db8:1::2/64")
	nftAddAddr(t, r.b, bC, "2001:db8:2::1/64")
	nftAddAddr(t, r.c, cIf, "2001:db8:2::2/64")
	r.b.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	r.a.Run(t, "ip", "route", "add", "198.18.2.0/24", "via", "198.18.1.2")
	r.a.Run(t, "ip", "route", "add", "2001:db8:2::/64", "via", "2001:db8:1::2")
	r.c.Run(t, "ip", "route", "add", "198.18.1.0/24", "via", "198.18.2.1")
	r.c.Run(t, "ip", "route", "add", "2001:db8:1::/64", "via", "2001:db8:2::1")
	return r
}

// nftInstance is the instance (tunnel interface name) of the Firewalls in
// these tests, and nftOurTable the name of its table.
const nftInstance = "tvtun0"

var nftOurTable = routing.FirewallTable(nftInstance)

// newNFTFirewall returns a Firewall working in n, logging to the test
// output, closed in cleanup.
func newNFTFirewall(t *testing.T, n *netnstest.NS) routing.Firewall {
	t.Helper()
	f, err := routing.NewFirewall(routing.FirewallOptions{
		Instance: nftInstance,
		NetNS:    "/var/run/netns/" + n.Name,
		Logger:   slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	if err != nil {
		t.Fatalf("NewFirewall: %v", err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("Close in cleanup: %v", err)
		}
	})
	return f
}

// nftAccept connects from n to l and returns the accepted (server) side.
func nftAccept(t *testing.T, from *netnstest.NS, l net.Listener) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := from.Dial(ctx, "tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer c.Close()
	l.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	s, err := l.Accept()
	if err != nil {
		t.Fatalf("accept on %v: %v", l.Addr(), err)
	}
	return s
}

// nftMSS returns the MSS the kernel uses for sending on c (TCP_MAXSEG).
func nftMSS(t *testing.T, c net.Conn) int {
	t.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatalf("SyscallConn: %v", err)
	}
	var mss int
	var serr error
	if err := raw.Control(func(fd uintptr) {
		mss, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG)
	}); err != nil {
		t.Fatalf("Control: %v", err)
	}
	if serr != nil {
		t.Fatalf("getsockopt TCP_MAXSEG: %v", serr)
	}
	return mss
}

func nftPing(t *testing.T, n *netnstest.NS, dst string) (string, error) {
	t.Helper()
	out, err := n.Cmd(t.Context(), "ping", "-n", "-c1", "-W1", dst).CombinedOutput()
	return string(out), err
}

func nftAddAddr(t *testing.T, n *netnstest.NS, ifname, addr string) {
	t.Helper()
	n.Run(t, "ip", "addr", "add", addr, "dev", ifname, "nodad")
}

// nftListOurs returns `nft list table inet tlsvpn-tvtun0` and whether the table
// exists.
func nftListOurs(t *testing.T, n *netnstest.NS) (string, bool) {
	t.Helper()
	out, err := n.Cmd(t.Context(), "nft", "list", "table", "inet", nftOurTable).CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && strings.Contains(string(out), "No such file or directory") {
			return "", false
		}
		t.Fatalf("nft list table inet %s: %v\n%s", nftOurTable, err, out)
	}
	return string(out), true
}

// nftOthers lists every table but ours.
func nftOthers(t *testing.T, n *netnstest.NS) string {
	t.Helper()
	var b strings.Builder
	for line := range strings.Lines(n.Run(t, "nft", "list", "tables")) {
		f := strings.Fields(line) // table FAMILY NAME
		if len(f) != 3 || (f[1] == "inet" && f[2] == nftOurTable) {
			continue
		}
		b.WriteString(n.Run(t, "nft", "list", "table", f[1], f[2]))
	}
	return b.String()
}

// nftTable renders our table as nft lists it, given its body (tab-indented
// chains, starting with a newline).
func nftTable(body string) string {
	return "table inet " + nftOurTable + " {" + body + "\n}\n"
}

func nftPfxs(ss ...string) []netip.Prefix {
	ps := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		ps[i] = netip.MustParsePrefix(s)
	}
	return ps
}

// TestNFTInstances: two instances in one namespace each own their table:
// a Set, Close or CleanupFirewall of one never touches the other's.
func TestNFTInstances(t *testing.T) {
	n := netnstest.New(t)
	ns := "/var/run/netns/" + n.Name
	newFW := func(instance string) routing.Firewall {
		f, err := routing.NewFirewall(routing.FirewallOptions{Instance: instance, NetNS: ns})
		if err != nil {
			t.Fatalf("NewFirewall(%s): %v", instance, err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	a, b := newFW("tvta0"), newFW("tvtb0")
	for _, x := range []struct {
		f      routing.Firewall
		ifname string
	}{{a, "tvta0"}, {b, "tvtb0"}} {
		if err := x.f.Set(t.Context(), routing.FirewallConfig{TunnelIf: x.ifname, ClampMSS: true, IsolateClients: true}); err != nil {
			t.Fatalf("Set(%s): %v", x.ifname, err)
		}
	}
	tables := func() string { return n.Run(t, "nft", "list", "tables") }
	if got, want := tables(), "table inet tlsvpn-tvta0\ntable inet tlsvpn-tvtb0\n"; got != want {
		t.Fatalf("nft list tables = %q, want %q", got, want)
	}
	bTable := n.Run(t, "nft", "list", "table", "inet", "tlsvpn-tvtb0")

	if err := a.Close(); err != nil {
		t.Fatalf("Close(tvta0): %v", err)
	}
	if got, want := tables(), "table inet tlsvpn-tvtb0\n"; got != want {
		t.Fatalf("after Close of tvta0, nft list tables = %q, want %q", got, want)
	}
	if err := routing.CleanupFirewall(t.Context(), routing.FirewallOptions{Instance: "tvta0", NetNS: ns}); err != nil {
		t.Fatalf("CleanupFirewall(tvta0): %v", err)
	}
	if got := n.Run(t, "nft", "list", "table", "inet", "tlsvpn-tvtb0"); got != bTable {
		t.Errorf("tvtb0's table changed by tvta0's Close and cleanup:\n%s\nwas:\n%s", got, bTable)
	}
	if _, err := b.IsolationDrops(); err != nil {
		t.Errorf("IsolationDrops(tvtb0) after tvta0 left: %v", err)
	}
	if _, err := routing.NewFirewall(routing.FirewallOptions{NetNS: ns}); !errors.Is(err, routing.ErrInvalidConfig) {
		t.Errorf("NewFirewall without an instance: err = %v, want ErrInvalidConfig", err)
	}
}

// TestNFTCleanupLegacy: the table all instances shared before tables were
// named per instance (inet tlsvpn) is removed by the cleanup of the
// instance it belonged to or when its interface is gone, and kept while
// its interface (its daemon) still exists.
func TestNFTCleanupLegacy(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ifname   string // the legacy table's TunnelIf
		exists   bool   // create a link with that name
		instance string // the instance cleaned up
		removed  bool
	}{
		{name: "orphan", ifname: "tvtold0", instance: "tvtnew0", removed: true},
		{name: "this instance's", ifname: "tvtnew0", exists: true, instance: "tvtnew0", removed: true},
		{name: "in use by another", ifname: "tvtold0", exists: true, instance: "tvtnew0", removed: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := netnstest.New(t)
			if tc.exists {
				n.Run(t, "ip", "tuntap", "add", "dev", tc.ifname, "mode", "tun")
			}
			// What an older tunneld --nat made.
			n.Run(t, "nft", "add", "table", "inet", routing.LegacyFirewallTable)
			n.Run(t, "nft", "add", "chain", "inet", routing.LegacyFirewallTable, "post", "{ type nat hook postrouting priority srcnat; }")
			n.Run(t, "nft", "add", "rule", "inet", routing.LegacyFirewallTable, "post", "oifname", "!=", tc.ifname, "ip", "saddr", "100.64.0.0/24", "masquerade")
			n.Run(t, "nft", "add", "chain", "inet", routing.LegacyFirewallTable, "clamp", "{ type filter hook forward priority mangle; }")
			n.Run(t, "nft", "add", "rule", "inet", routing.LegacyFirewallTable, "clamp", "oifname", "lo", "accept")
			n.Run(t, "nft", "add", "table", "inet", "other")

			opts := routing.FirewallOptions{Instance: tc.instance, NetNS: "/var/run/netns/" + n.Name}
			if err := routing.CleanupFirewall(t.Context(), opts); err != nil {
				t.Fatalf("CleanupFirewall: %v", err)
			}
			want := "table inet other\n"
			if !tc.removed {
				want = "table inet " + routing.LegacyFirewallTable + "\n" + want
			}
			if got := n.Run(t, "nft", "list", "tables"); got != want {
				t.Errorf("after CleanupFirewall(%s), nft list tables = %q, want %q", tc.instance, got, want)
			}
		})
	}
}
