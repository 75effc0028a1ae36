package routing_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"tlsvpn/routing"
	"tlsvpn/routing/netnstest"
)

// TestCheckFree: in a namespace with a TUN device and a small route,
// CheckFree refuses the device's name and subnets that collide, and lets
// everything else through.
func TestCheckFree(t *testing.T) {
	n := netnstest.New(t)
	newTun(t, n, "tvtx0")
	n.Run(t, "ip", "link", "set", "tvtx0", "up")
	n.Run(t, "ip", "addr", "add", "100.64.0.1/24", "dev", "tvtx0")
	n.Run(t, "ip", "route", "add", "198.19.5.0/28", "dev", "lo")
	p := netip.MustParsePrefix
	tests := []struct {
		ifname  string
		subnets []netip.Prefix
		want    string // "" for nil
	}{
		{"tvtx0", []netip.Prefix{p("100.64.9.0/24")}, "interface tvtx0 already exists"},
		{"tvty0", []netip.Prefix{p("100.64.0.0/25")}, "tunnel subnet 100.64.0.0/25 overlaps the address 100.64.0.1/24 on tvtx0"},
		{"tvty0", []netip.Prefix{p("100.64.9.0/24"), p("198.19.0.0/16")}, "tunnel subnet 198.19.0.0/16 overlaps the route 198.19.5.0/28 on lo"},
		{"tvty0", []netip.Prefix{p("100.64.9.0/24"), p("fd00:64::/64")}, ""},
	}
	for _, tt := range tests {
		err := n.Do(func() error { return routing.CheckFree(tt.ifname, tt.subnets) })
		var ce *routing.ConflictError
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("CheckFree(%s, %v) = %v, want nil", tt.ifname, tt.subnets, err)
		case tt.want != "" && (!errors.As(err, &ce) || !strings.HasPrefix(err.Error(), tt.want)):
			t.Errorf("CheckFree(%s, %v) = %v, want a ConflictError %q", tt.ifname, tt.subnets, err, tt.want)
		}
	}
}
