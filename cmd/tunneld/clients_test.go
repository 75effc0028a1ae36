package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
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
		p := got.Policy(tc.id, tc.reach)
		if !p.Equal(tc.want) || (p.Routes == nil) != (tc.want.Routes == nil) {
			t.Errorf("policy(%q, reach %v) = %+v, want %+v", tc.id, tc.reach, p, tc.want)
		}
	}
}

func TestParseClientsErrors(t *testing.T) {
	pool, pool6 := testPools(t)
	const known = "(known: address, routes, advertise, reach_clients)"
	for _, tc := range []struct{ name, file, want string }{
		// Mistakes in the shape of the file: the line, the client, and no Go type names.
		{"unknown key", "laptop:\n  address: 100.64.0.10\n  adress: 100.64.0.11\n",
			`line 3: unknown key "adress" in client "laptop" ` + known},
		{"unknown key in flow style", "gw: {reach_client: true}\n", `line 1: unknown key "reach_client" in client "gw" ` + known},
		{"key twice", "laptop:\n  routes: []\n  routes: [198.18.10.0/24]\n", `line 3: client "laptop": routes is given twice (first on line 2)`},
		{"client twice", "a:\n  address: 100.64.0.10\nb:\na:\n", `line 4: client "a" is listed twice (first on line 1)`},
		{"reach_clients not a bool", "gw:\n  reach_clients: maybe\n", `line 2: client "gw": reach_clients "maybe": want true or false`},
		{"reach_clients a list", "gw:\n  reach_clients: [true]\n", `line 2: client "gw": reach_clients: want true or false, found a list`},
		{"address a map", "gw:\n  address: {x: 1}\n", `line 2: client "gw": address: want a value or a list of values, found a map`},
		{"nested list", "gw:\n  routes:\n    - [198.18.10.0/24]\n", `line 3: client "gw": routes: want a list of values, found a list in it`},
		{"empty list item", "gw:\n  advertise:\n    -\n", `line 3: client "gw": advertise: want a list of values, found nothing in it`},
		{"entry not a map", "laptop: 100.64.0.10\n", `line 1: client "laptop": want its settings (address, routes, advertise, reach_clients) below it, found the value "100.64.0.10"`},
		{"top level a list", "- a\n- b\n", `line 1: want client certificate names as keys, each with its settings below it (address, routes, advertise, reach_clients); found a list`},
		{"top level a value", "laptop\n", `line 1: want client certificate names as keys, each with its settings below it (address, routes, advertise, reach_clients); found the value "laptop"`},
		{"key a list", "[a, b]: {}\n", `line 1: want a name as the key, found a list`},
		{"merge key", "base: &b\n  reach_clients: true\ngw:\n  <<: *b\n", `line 4: merge keys (<<) are not supported: write each setting out`},
		{"YAML syntax", "laptop:\n  address: 100.64.0.10\n routes: []\n", `line 2: did not find expected key`},
		{"tab indentation", "laptop:\n\taddress: 100.64.0.10\n", `line 2: found character that cannot start any token`},
		{"name with spaces", "' laptop':\n", `line 1: client " laptop": a certificate name without surrounding spaces is required`},
		// Mistakes in the values, at the line of the value.
		{"address outside the subnet", "laptop:\n  address: 100.64.1.10\n", `line 2: client "laptop": address 100.64.1.10 is not a client address of 100.64.0.0/24`},
		{"server address", "laptop:\n  address: 100.64.0.1\n", `line 2: client "laptop": address 100.64.0.1 is not a client address of 100.64.0.0/24`},
		{"broadcast address", "laptop:\n  address: 100.64.0.255\n", `line 2: client "laptop": address 100.64.0.255 is not a client address of 100.64.0.0/24`},
		{"network address", "laptop:\n  address: 100.64.0.0\n", `line 2: client "laptop": address 100.64.0.0 is not a client address of 100.64.0.0/24`},
		{"two IPv4 addresses", "laptop:\n  address:\n    - 100.64.0.10\n    - 100.64.0.11\n", `line 4: client "laptop": more than one IPv4 address`},
		{"not an address", "laptop:\n  address: nonsense\n", `line 2: client "laptop": address "nonsense": want an IP address such as 100.64.0.10`},
		{"address taken", "a:\n  address: 100.64.0.10\nb:\n  address: 100.64.0.10\n", `line 4: client "b": address 100.64.0.10 is already "a"'s`},
		{"host bits", "laptop:\n  routes: [198.18.10.1/24]\n", `line 2: client "laptop": routes: "198.18.10.1/24" has host bits set; did you mean 198.18.10.0/24?`},
		{"not a CIDR", "laptop:\n  routes: [bogus]\n", `line 2: client "laptop": routes: "bogus": want a CIDR such as 198.18.20.0/24`},
		{"advertise default", "gw:\n  advertise: [0.0.0.0/0]\n", `line 2: client "gw": advertise 0.0.0.0/0: a default route cannot be advertised`},
		{"advertise tunnel", "gw:\n  advertise:\n    - 198.18.20.0/24\n    - 100.64.0.0/16\n", `line 4: client "gw": advertise 100.64.0.0/16 overlaps the tunnel subnet`},
		{"advertise mapped", "gw:\n  advertise: [\"::ffff:198.18.0.0/112\"]\n", `line 2: client "gw": advertise: "::ffff:198.18.0.0/112": IPv4-mapped IPv6; write the IPv4 prefix`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseClients([]byte(tc.file), pool, pool6)
			if err == nil || err.Error() != tc.want {
				t.Errorf("parseClients(%q) = %v\nwant %s", tc.file, err, tc.want)
			}
		})
	}
	// IPv6 addresses need an IPv6 pool.
	if _, err := parseClients([]byte("a:\n  address: \"fd00:64::9\"\n"), pool, nil); err == nil || err.Error() != `line 2: client "a": IPv6 address fd00:64::9 needs --subnet6` {
		t.Errorf("IPv6 address without --subnet6: %v", err)
	}
	// An empty file, or one with comments only, is an empty policy.
	for _, file := range []string{"", "# nobody yet\n", "---\n", "~\n"} {
		if c, err := parseClients([]byte(file), pool, pool6); err != nil || len(c) != 0 {
			t.Errorf("parseClients(%q) = %v, %v; want no policies", file, c, err)
		}
	}
}

// TestLoadClientsNamesTheFile checks the whole message an operator sees for a typo: the file,
// the line, the key, the client and the known keys.
func TestLoadClientsNamesTheFile(t *testing.T) {
	pool, pool6 := testPools(t)
	path := filepath.Join(t.TempDir(), "clients.yaml")
	if err := os.WriteFile(path, []byte("# policies\nlaptop:\n  adress: 100.64.0.10\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := loadClients(path, pool, pool6)
	want := path + `: line 3: unknown key "adress" in client "laptop" (known: address, routes, advertise, reach_clients)`
	if err == nil || err.Error() != want {
		t.Errorf("loadClients = %v\nwant %s", err, want)
	}
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	if _, err := loadClients(missing, pool, pool6); err == nil || err.Error() != "--clients: open "+missing+": no such file or directory" {
		t.Errorf("loadClients(missing) = %v", err)
	}
}

// TestParseClientsAliases checks that YAML anchors and aliases work as values.
func TestParseClientsAliases(t *testing.T) {
	pool, pool6 := testPools(t)
	const file = `
a:
  routes: &lan [198.18.10.0/24]
b:
  routes: *lan
  reach_clients: &yes true
c:
  reach_clients: *yes
`
	got, err := parseClients([]byte(file), pool, pool6)
	if err != nil {
		t.Fatal(err)
	}
	lan := []netip.Prefix{netip.MustParsePrefix("198.18.10.0/24")}
	if !reflect.DeepEqual(got["a"].Routes, lan) || !reflect.DeepEqual(got["b"].Routes, lan) || got["c"].Reach == nil || !*got["c"].Reach {
		t.Errorf("parseClients with aliases = %+v", got)
	}
}
