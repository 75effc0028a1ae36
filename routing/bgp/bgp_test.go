package bgp

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
)

func TestParsePeer(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Peer
		err  string
	}{
		{in: "65000@198.18.20.1", want: Peer{Addr: netip.MustParseAddr("198.18.20.1"), ASN: 65000}},
		{in: "4200000000@2001:db8::1", want: Peer{Addr: netip.MustParseAddr("2001:db8::1"), ASN: 4200000000}},
		{in: "65000@198.18.20.1:1179", want: Peer{Addr: netip.MustParseAddr("198.18.20.1"), Port: 1179, ASN: 65000}},
		{in: "65000@[2001:db8::1]:1179", want: Peer{Addr: netip.MustParseAddr("2001:db8::1"), Port: 1179, ASN: 65000}},
		{in: "198.18.20.1", err: "want ASN@ADDRESS"},
		{in: "0@198.18.20.1", err: "AS number"},
		{in: "x@198.18.20.1", err: "AS number"},
		{in: "65000@router", err: "want an IP address"},
		{in: "65000@198.18.20.1:0", err: "want an IP address"},
	} {
		got, err := ParsePeer(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParsePeer(%q) = %v, %v; want an error with %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParsePeer(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
		if again, err := ParsePeer(got.String()); err != nil || again != got {
			t.Errorf("ParsePeer(%q.String() = %q) = %+v, %v", c.in, got.String(), again, err)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := Config{ASN: 65001, RouterID: netip.MustParseAddr("198.18.20.2"), Peers: []Peer{{Addr: netip.MustParseAddr("198.18.20.1"), ASN: 65000}}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("Validate(%+v) = %v", ok, err)
	}
	for flag, c := range map[string]func(*Config){
		"--bgp-asn":       func(c *Config) { c.ASN = 0 },
		"--bgp-router-id": func(c *Config) { c.RouterID = netip.MustParseAddr("2001:db8::1") },
		"--bgp-peer":      func(c *Config) { c.Peers = nil },
		"--bgp-next-hop":  func(c *Config) { c.NextHop = netip.MustParseAddr("2001:db8::1") },
		"--bgp-next-hop6": func(c *Config) { c.NextHop6 = netip.MustParseAddr("198.18.20.2") },
	} {
		bad := ok
		c(&bad)
		if err := bad.Validate(); err == nil || !strings.HasPrefix(err.Error(), flag+":") {
			t.Errorf("Validate with a bad %s = %v", flag, err)
		}
	}
}

// router is a GoBGP speaker standing in for the network's router: it
// listens on a loopback port and accepts the gateway's session.
type router struct {
	s    *server.BgpServer
	port uint16
}

func startRouter(t *testing.T, asn, peerASN uint32) *router {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	s := server.NewBgpServer()
	go s.Serve()
	t.Cleanup(s.Stop)
	ctx := context.Background()
	if err := s.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: asn, RouterId: "192.0.2.254", ListenPort: int32(port), ListenAddresses: []string{"127.0.0.1"},
	}}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: peerASN},
		Transport: &api.Transport{PassiveMode: true},
		AfiSafis: []*api.AfiSafi{
			{Config: &api.AfiSafiConfig{Family: family4, Enabled: true}},
			{Config: &api.AfiSafiConfig{Family: family6, Enabled: true}},
		},
	}}); err != nil {
		t.Fatal(err)
	}
	return &router{s: s, port: port}
}

// routes returns the prefixes and next hops the router learned.
func (r *router) routes(t *testing.T, fam *api.Family) map[netip.Prefix]string {
	t.Helper()
	out := map[netip.Prefix]string{}
	err := r.s.ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_GLOBAL, Family: fam}, func(d *api.Destination) {
		for _, p := range d.Paths {
			nh := ""
			for _, a := range p.Pattrs {
				var hop api.NextHopAttribute
				var mp api.MpReachNLRIAttribute
				switch {
				case a.UnmarshalTo(&hop) == nil:
					nh = hop.NextHop
				case a.UnmarshalTo(&mp) == nil && len(mp.NextHops) > 0:
					nh = mp.NextHops[0]
				}
			}
			out[netip.MustParsePrefix(d.Prefix)] = nh
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestSpeakerAnnouncesAndWithdraws(t *testing.T) {
	r := startRouter(t, 65000, 65001)
	ctx := context.Background()
	sp, err := Start(ctx, Config{
		ASN: 65001, RouterID: netip.MustParseAddr("192.0.2.1"),
		Peers:    []Peer{{Addr: netip.MustParseAddr("127.0.0.1"), Port: r.port, ASN: 65000}},
		NextHop6: netip.MustParseAddr("2001:db8::2"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	waitFor(t, "the BGP session", func() bool {
		ps := sp.Peers(ctx)
		return len(ps) == 1 && ps[0].State == "established"
	})

	host := netip.MustParsePrefix("100.64.0.2/32")
	site := netip.MustParsePrefix("198.18.30.0/24")
	host6 := netip.MustParsePrefix("fd00:64::2/128")
	if err := sp.Set(ctx, []netip.Prefix{host, site, host6}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the routes at the router", func() bool {
		v4, v6 := r.routes(t, family4), r.routes(t, family6)
		// Next hop 0.0.0.0 became the session's own address.
		return v4[host] == "127.0.0.1" && v4[site] == "127.0.0.1" && v6[host6] == "2001:db8::2"
	})
	if got, want := sp.Announced(), []netip.Prefix{host6, host, site}; !slices.Equal(sortV4First(got), sortV4First(want)) {
		t.Errorf("Announced = %v, want %v", got, want)
	}

	// The client left; the site stays.
	if err := sp.Set(ctx, []netip.Prefix{site}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the withdrawal", func() bool {
		v4, v6 := r.routes(t, family4), r.routes(t, family6)
		_, h := v4[host]
		_, h6 := v6[host6]
		_, s := v4[site]
		return !h && !h6 && s
	})

	// A gateway that stops takes its routes with it.
	sp.Close()
	waitFor(t, "the routes to go with the session", func() bool { return len(r.routes(t, family4)) == 0 })
}

func TestSpeakerSkipsIPv6WithoutNextHop(t *testing.T) {
	r := startRouter(t, 65000, 65001)
	ctx := context.Background()
	sp, err := Start(ctx, Config{ASN: 65001, RouterID: netip.MustParseAddr("192.0.2.1"),
		Peers: []Peer{{Addr: netip.MustParseAddr("127.0.0.1"), Port: r.port, ASN: 65000}}})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if err := sp.Set(ctx, []netip.Prefix{netip.MustParsePrefix("fd00:64::2/128"), netip.MustParsePrefix("100.64.0.2/32")}); err != nil {
		t.Fatal(err)
	}
	if got := sp.Announced(); len(got) != 1 || got[0] != netip.MustParsePrefix("100.64.0.2/32") {
		t.Errorf("Announced = %v, want only the IPv4 route", got)
	}
}

func sortV4First(p []netip.Prefix) []netip.Prefix {
	out := slices.Clone(p)
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}
