package main

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"tlsvpn/routing"
	"tlsvpn/tunnel"
)

// testPools returns the pools of --subnet 100.64.0.0/24 --subnet6 fd00:64::/64.
func testPools(t *testing.T) (pool, pool6 *routing.Pool) {
	t.Helper()
	pool, err := routing.NewPool(netip.MustParsePrefix("100.64.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	pool6, err = routing.NewPool(netip.MustParsePrefix("fd00:64::/64"))
	if err != nil {
		t.Fatal(err)
	}
	return pool, pool6
}

func TestParseClients(t *testing.T) {
	const file = `
# the README's example
laptop:
  address: 100.64.0.10
  routes: [198.18.10.0/24]
site-b:
  address: [100.64.0.20, "fd00:64::20"]
  advertise:
    - 198.18.20.0/24
    - 2001:db8:20::/64
  reach_clients: true
quiet:
  routes: []
  reach_clients: false
plain:
`
	pool, pool6 := testPools(t)
	got, err := parseClients([]byte(file), pool, pool6)
	if err != nil {
		t.Fatal(err)
	}
	yes, no := true, false
	want := clientPolicies{
		"laptop": {Addr: netip.MustParseAddr("100.64.0.10"), Routes: []netip.Prefix{netip.MustParsePrefix("198.18.10.0/24")}},
		"site-b": {Addr: netip.MustParseAddr("100.64.0.20"), Addr6: netip.MustParseAddr("fd00:64::20"),
			Advertise: []netip.Prefix{netip.MustParsePrefix("198.18.20.0/24"), netip.MustParsePrefix("2001:db8:20::/64")}, Reach: &yes},
		"quiet": {Routes: []netip.Prefix{}, Reach: &no},
		"plain": {},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parseClients =\n%+v\nwant\n%+v", got, want)
	}

	// Policies: routes replace --route only when given; reach_clients
	// falls back to --client-to-client.
	for _, tc := range []struct {
		id    string
		reach bool
		want  tunnel.Policy
	}{
		{"laptop", false, tunnel.Policy{Routes: []netip.Prefix{netip.MustParsePrefix("198.18.10.0/24")}}},
		{"laptop", true, tunnel.Policy{Routes: []netip.Prefix{netip.MustParsePrefix("198.18.10.0/24")}, ReachClients: true}},
		{"site-b", false, tunnel.Policy{Advertise: want["site-b"].Advertise, ReachClients: true}},
		{"quiet", true, tunnel.Policy{Routes: []netip.Prefix{}}},
		{"plain", true, tunnel.Policy{ReachClients: true}},
		{"unlisted", false, tunnel.Policy{}},
	} {
		p := got.policy(tc.id, tc.reach)
		if !p.Equal(tc.want) || (p.Routes == nil) != (tc.want.Routes == nil) {
			t.Errorf("policy(%q, reach %v) = %+v, want %+v", tc.id, tc.reach, p, tc.want)
		}
	}
}

func TestParseClientsErrors(t *testing.T) {
	pool, pool6 := testPools(t)
	for _, tc := range []struct{ file, want string }{
		{"laptop:\n  adress: 100.64.0.10\n", "field adress not found"},
		{"laptop:\n  address: 100.64.1.10\n", "not a client address of 100.64.0.0/24"},
		{"laptop:\n  address: 100.64.0.1\n", "not a client address"},
		{"laptop:\n  address: 100.64.0.255\n", "not a client address"},
		{"laptop:\n  address: 100.64.0.0\n", "not a client address"},
		{"laptop:\n  address: [100.64.0.10, 100.64.0.11]\n", "more than one IPv4 address"},
		{"laptop:\n  address: nonsense\n", "want an IP address"},
		{"a:\n  address: 100.64.0.10\nb:\n  address: 100.64.0.10\n", `already "a"'s`},
		{"laptop:\n  routes: [198.18.10.1/24]\n", "host bits set; did you mean 198.18.10.0/24"},
		{"laptop:\n  routes: [bogus]\n", "want a CIDR"},
		{"gw:\n  advertise: [0.0.0.0/0]\n", "default route cannot be advertised"},
		{"gw:\n  advertise: [100.64.0.0/16]\n", "overlaps the tunnel subnet"},
		{"gw:\n  advertise: [\"::ffff:198.18.0.0/112\"]\n", "IPv4-mapped"},
		{"gw:\n  reach_clients: maybe\n", "cannot unmarshal"},
		{"gw:\n  address: {x: 1}\n", "want a value or a list"},
		{"- a\n- b\n", "cannot unmarshal"},
	} {
		_, err := parseClients([]byte(tc.file), pool, pool6)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseClients(%q) = %v, want an error containing %q", tc.file, err, tc.want)
		}
	}
	// IPv6 addresses need an IPv6 pool.
	if _, err := parseClients([]byte("a:\n  address: \"fd00:64::9\"\n"), pool, nil); err == nil || !strings.Contains(err.Error(), "needs --subnet6") {
		t.Errorf("IPv6 address without --subnet6: %v", err)
	}
	// An empty file is an empty policy.
	if c, err := parseClients(nil, pool, pool6); err != nil || len(c) != 0 {
		t.Errorf("empty file = %v, %v", c, err)
	}
}
