package state_test

import (
	"testing"

	"tlsvpn/state"
)

func TestMemoryDirectory(t *testing.T) {
	d := state.NewMemoryDirectory("gw1:443")
	var _ state.Directory = d
	if h, ok := d.Holder("laptop"); ok {
		t.Fatalf("Holder(laptop) = %q before a claim", h)
	}
	d.Claim("laptop")
	d.Claim("phone")
	if h, ok := d.Holder("laptop"); !ok || h != "gw1:443" {
		t.Fatalf("Holder(laptop) = %q, %v; want gw1:443", h, ok)
	}
	d.Release("laptop")
	if _, ok := d.Holder("laptop"); ok {
		t.Fatal("Holder(laptop) after its release")
	}
	if _, ok := d.Holder("phone"); !ok || d.Len() != 1 {
		t.Fatalf("phone held %v, %d held; want phone alone", ok, d.Len())
	}
}
