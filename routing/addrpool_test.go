package routing

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
)

func TestNewPool(t *testing.T) {
	tests := []struct {
		name             string
		subnet           string
		wantErr          bool
		wantServer       string
		wantFirst        string
		wantLast         string
		wantCap          int
		wantSubnetString string
	}{
		{name: "v4 /24", subnet: "100.64.0.0/24", wantServer: "100.64.0.1", wantFirst: "100.64.0.2", wantLast: "100.64.0.254", wantCap: 253, wantSubnetString: "100.64.0.0/24"},
		{name: "v4 unmasked", subnet: "100.64.7.9/24", wantServer: "100.64.7.1", wantFirst: "100.64.7.2", wantLast: "100.64.7.254", wantCap: 253, wantSubnetString: "100.64.7.0/24"},
		{name: "v4 /30", subnet: "100.64.0.4/30", wantServer: "100.64.0.5", wantFirst: "100.64.0.6", wantLast: "100.64.0.6", wantCap: 1, wantSubnetString: "100.64.0.4/30"},
		{name: "v4 /10 capped", subnet: "100.64.0.0/10", wantServer: "100.64.0.1", wantFirst: "100.64.0.2", wantLast: "100.65.0.1", wantCap: MaxLeases, wantSubnetString: "100.64.0.0/10"},
		{name: "v4 /31", subnet: "100.64.0.0/31", wantErr: true},
		{name: "v4 /32", subnet: "100.64.0.1/32", wantErr: true},
		{name: "v6 /64 capped", subnet: "fd00:64::/64", wantServer: "fd00:64::1", wantFirst: "fd00:64::2", wantLast: "fd00:64::1:1", wantCap: MaxLeases, wantSubnetString: "fd00:64::/64"},
		{name: "v6 /120", subnet: "fd00:64::/120", wantServer: "fd00:64::1", wantFirst: "fd00:64::2", wantLast: "fd00:64::ff", wantCap: 254, wantSubnetString: "fd00:64::/120"},
		{name: "v6 /126", subnet: "fd00:64::/126", wantServer: "fd00:64::1", wantFirst: "fd00:64::2", wantLast: "fd00:64::3", wantCap: 2, wantSubnetString: "fd00:64::/126"},
		{name: "v6 /127", subnet: "fd00:64::/127", wantErr: true},
		{name: "v6 /128", subnet: "fd00:64::1/128", wantErr: true},
		{name: "v4-mapped", subnet: "::ffff:100.64.0.0/120", wantErr: true},
		{name: "invalid", subnet: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var subnet netip.Prefix
			if tt.subnet != "" {
				subnet = netip.MustParsePrefix(tt.subnet)
			}
			p, err := NewPool(subnet)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("NewPool(%v) = %v, want error", subnet, p.Subnet())
				}
				return
			}
			if err != nil {
				t.Fatalf("NewPool(%v): %v", subnet, err)
			}
			if got := p.Subnet().String(); got != tt.wantSubnetString {
				t.Errorf("Subnet() = %s, want %s", got, tt.wantSubnetString)
			}
			if got := p.ServerAddr().String(); got != tt.wantServer {
				t.Errorf("ServerAddr() = %s, want %s", got, tt.wantServer)
			}
			if got := p.Cap(); got != tt.wantCap {
				t.Errorf("Cap() = %d, want %d", got, tt.wantCap)
			}
			first, err := p.Assign("first")
			if err != nil || first.String() != tt.wantFirst {
				t.Errorf("Assign(first) = %v, %v; want %s", first, err, tt.wantFirst)
			}
			last := netip.MustParseAddr(tt.wantLast)
			id := "last"
			if first == last {
				id = "first" // one-client pool: re-reserving an existing lease succeeds
			}
			if err := p.Reserve(id, last); err != nil {
				t.Errorf("Reserve(%s, %v): %v", id, last, err)
			}
			if err := p.Reserve("past", last.Next()); err == nil {
				t.Errorf("Reserve(past, %v) = nil, want error (outside pool)", last.Next())
			}
		})
	}
}

func TestPoolAssign(t *testing.T) {
	p, err := NewPool(netip.MustParsePrefix("100.64.0.0/29")) // .2 - .6: 5 clients
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		identity string
		want     string // address, or "exhausted"
	}{
		{"alice", "100.64.0.2"},
		{"bob", "100.64.0.3"},
		{"alice", "100.64.0.2"}, // reconnect: same address
		{"carol", "100.64.0.4"},
		{"dave", "100.64.0.5"},
		{"erin", "100.64.0.6"},
		{"bob", "100.64.0.3"},
		{"frank", "exhausted"},
		{"erin", "100.64.0.6"}, // existing leases still work when full
	}
	for i, s := range steps {
		got, err := p.Assign(s.identity)
		if s.want == "exhausted" {
			if !errors.Is(err, ErrPoolExhausted) {
				t.Errorf("step %d: Assign(%q) = %v, %v; want ErrPoolExhausted", i, s.identity, got, err)
			}
			continue
		}
		if err != nil || got.String() != s.want {
			t.Errorf("step %d: Assign(%q) = %v, %v; want %s", i, s.identity, got, err, s.want)
		}
	}
	if got, ok := p.Lookup("carol"); !ok || got.String() != "100.64.0.4" {
		t.Errorf("Lookup(carol) = %v, %v; want 100.64.0.4, true", got, ok)
	}
	if got, ok := p.Lookup("frank"); ok {
		t.Errorf("Lookup(frank) = %v, true; want no lease", got)
	}
	if got := p.Len(); got != 5 {
		t.Errorf("Len() = %d, want 5", got)
	}
	if _, err := p.Assign(""); err == nil {
		t.Errorf("Assign(\"\") = nil error, want error")
	}
}

func TestPoolReserve(t *testing.T) {
	addr := netip.MustParseAddr
	tests := []struct {
		name     string
		identity string
		addr     netip.Addr
		wantErr  error // nil: success; errAny: any error
	}{
		{name: "fixed", identity: "alice", addr: addr("100.64.0.3")},
		{name: "same lease again", identity: "alice", addr: addr("100.64.0.3")},
		{name: "taken by other", identity: "bob", addr: addr("100.64.0.3"), wantErr: ErrAddrInUse},
		{name: "identity holds other", identity: "alice", addr: addr("100.64.0.4"), wantErr: errAny},
		{name: "server address", identity: "bob", addr: addr("100.64.0.1"), wantErr: errAny},
		{name: "network address", identity: "bob", addr: addr("100.64.0.0"), wantErr: errAny},
		{name: "broadcast address", identity: "bob", addr: addr("100.64.0.255"), wantErr: errAny},
		{name: "outside subnet", identity: "bob", addr: addr("192.0.2.2"), wantErr: errAny},
		{name: "wrong family", identity: "bob", addr: addr("fd00::2"), wantErr: errAny},
		{name: "invalid", identity: "bob", addr: netip.Addr{}, wantErr: errAny},
		{name: "empty identity", identity: "", addr: addr("100.64.0.9"), wantErr: errAny},
		{name: "last", identity: "bob", addr: addr("100.64.0.254")},
	}
	p, err := NewPool(netip.MustParsePrefix("100.64.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests { // sequential: steps share the pool
		t.Run(tt.name, func(t *testing.T) {
			err := p.Reserve(tt.identity, tt.addr)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Errorf("Reserve(%q, %v) = %v, want nil", tt.identity, tt.addr, err)
			case tt.wantErr == errAny && err == nil:
				t.Errorf("Reserve(%q, %v) = nil, want error", tt.identity, tt.addr)
			case tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Errorf("Reserve(%q, %v) = %v, want %v", tt.identity, tt.addr, err, tt.wantErr)
			}
		})
	}
	// Dynamic leases skip reserved addresses.
	got, err := p.Assign("carol")
	if err != nil || got != addr("100.64.0.2") {
		t.Errorf("Assign(carol) = %v, %v; want 100.64.0.2", got, err)
	}
	got, err = p.Assign("dave")
	if err != nil || got != addr("100.64.0.4") {
		t.Errorf("Assign(dave) = %v, %v; want 100.64.0.4 (skipping reserved .3)", got, err)
	}
}

func TestPoolPin(t *testing.T) {
	addr := netip.MustParseAddr
	path := filepath.Join(t.TempDir(), "leases.json")
	p, _, err := OpenPool(netip.MustParsePrefix("100.64.0.0/24"), path)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"alice", "bob"} { // .2, .3
		if _, err := p.Assign(id); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		identity    string
		addr        netip.Addr
		wantEvicted string
		wantErr     bool
	}{
		{"alice", addr("100.64.0.10"), "", false}, // moves alice, frees .2
		{"alice", addr("100.64.0.10"), "", false}, // again: no change
		{"carol", addr("100.64.0.3"), "bob", false},
		{"carol", addr("100.64.0.1"), "", true}, // the server's
		{"carol", addr("192.0.2.1"), "", true},  // outside
		{"", addr("100.64.0.20"), "", true},     // no identity
	}
	for _, st := range steps {
		evicted, err := p.Pin(st.identity, st.addr)
		if (err != nil) != st.wantErr || evicted != st.wantEvicted {
			t.Errorf("Pin(%q, %v) = %q, %v; want evicted %q, error %v", st.identity, st.addr, evicted, err, st.wantEvicted, st.wantErr)
		}
	}
	want := map[string]netip.Addr{"alice": addr("100.64.0.10"), "carol": addr("100.64.0.3")}
	check := func(p *Pool, when string) {
		t.Helper()
		for id, a := range want {
			if got, ok := p.Lookup(id); !ok || got != a {
				t.Errorf("%s: Lookup(%s) = %v, %v; want %v", when, id, got, ok, a)
			}
		}
		if got, ok := p.Lookup("bob"); ok {
			t.Errorf("%s: evicted bob still holds %v", when, got)
		}
	}
	check(p, "after Pin")
	// The move is durable, and bob gets the lowest free address again.
	p2, _, err := OpenPool(netip.MustParsePrefix("100.64.0.0/24"), path)
	if err != nil {
		t.Fatal(err)
	}
	check(p2, "after reopening")
	if got, err := p2.Assign("bob"); err != nil || got == addr("100.64.0.3") || got == addr("100.64.0.10") {
		t.Errorf("Assign(bob) after eviction = %v, %v; want a free address", got, err)
	}
}

var errAny = errors.New("any error")

func TestPoolConcurrent(t *testing.T) {
	p, err := NewPool(netip.MustParsePrefix("fd00:64::/118")) // 1022 clients
	if err != nil {
		t.Fatal(err)
	}
	const workers, identities = 8, 200
	strides := [workers]int{1, 3, 7, 9, 11, 13, 17, 19}
	results := make([][]netip.Addr, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			res := make([]netip.Addr, identities)
			for i := range identities {
				// Workers walk the identities in different orders;
				// strides are coprime to identities, so each walk is a
				// permutation.
				id := (i*strides[w] + w) % identities
				a, err := p.Assign(fmt.Sprintf("client-%d", id))
				if err != nil {
					t.Errorf("Assign(client-%d): %v", id, err)
					return
				}
				if got, ok := p.Lookup(fmt.Sprintf("client-%d", id)); !ok || got != a {
					t.Errorf("Lookup(client-%d) = %v, %v; want %v", id, got, ok, a)
				}
				res[id] = a
			}
			results[w] = res
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	seen := map[netip.Addr]int{}
	for id := range identities {
		a := results[0][id]
		for w := 1; w < workers; w++ {
			if results[w][id] != a {
				t.Errorf("client-%d got %v in worker 0 but %v in worker %d", id, a, results[w][id], w)
			}
		}
		if prev, dup := seen[a]; dup {
			t.Errorf("%v leased to both client-%d and client-%d", a, prev, id)
		}
		seen[a] = id
		if !p.Subnet().Contains(a) || a == p.ServerAddr() {
			t.Errorf("client-%d got %v, not a client address of %v", id, a, p.Subnet())
		}
	}
	if got := p.Len(); got != identities {
		t.Errorf("Len() = %d, want %d", got, identities)
	}
}
