package state_test

import (
	"net/netip"
	"path/filepath"
	"testing"

	"tlsvpn/state"
)

// TestOpenLeases: a file keeps leases across a reopen (a restart), memory
// does not; both lease, look up and pin alike.
func TestOpenLeases(t *testing.T) {
	subnet := netip.MustParsePrefix("100.64.0.0/24")
	file := filepath.Join(t.TempDir(), "leases.json")
	for _, tc := range []struct {
		name, path string
		persists   bool
	}{
		{"memory", "", false},
		{"file", file, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, warnings, err := state.OpenLeases(subnet, tc.path)
			if err != nil || len(warnings) > 0 {
				t.Fatalf("OpenLeases = %v, %v", warnings, err)
			}
			if l.Subnet() != subnet || l.ServerAddr() != netip.MustParseAddr("100.64.0.1") {
				t.Fatalf("subnet %v, server %v", l.Subnet(), l.ServerAddr())
			}
			a, err := l.Assign("laptop")
			if err != nil || !l.IsClientAddr(a) {
				t.Fatalf("Assign(laptop) = %v, %v", a, err)
			}
			if got, ok := l.Lookup("laptop"); !ok || got != a {
				t.Fatalf("Lookup(laptop) = %v, %v; want %v", got, ok, a)
			}
			if evicted, err := l.Pin("phone", a); err != nil || evicted != "laptop" {
				t.Fatalf("Pin(phone, %v) = %q, %v; want laptop evicted", a, evicted, err)
			}
			if err := l.Flush(); err != nil {
				t.Fatal(err)
			}
			again, _, err := state.OpenLeases(subnet, tc.path)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := again.Lookup("phone")
			if ok != tc.persists || tc.persists && got != a {
				t.Fatalf("after a reopen, Lookup(phone) = %v, %v; want kept %v", got, ok, tc.persists)
			}
		})
	}
	if l, _, err := state.OpenLeases(netip.MustParsePrefix("fd00::/127"), ""); err == nil || l != nil {
		t.Fatalf("OpenLeases of a subnet without client addresses = %v, %v; want a nil Leases and an error", l, err)
	}
}
