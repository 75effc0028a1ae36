package routing

import (
	"net"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestCleanupOwns: which routes the cleanup of one instance removes,
// without root.
func TestCleanupOwns(t *testing.T) {
	const ours, other, underlay = 7, 8, 2 // link indexes
	exists := map[int]bool{1: true, underlay: true, ours: true, other: true}
	gw := net.ParseIP("198.18.0.1")
	tests := []struct {
		name      string
		r         netlink.Route
		linkIndex int // of the instance cleaned up; 0: its link is gone
		want      bool
	}{
		{"route on our link", netlink.Route{Protocol: RouteProtocol, LinkIndex: ours}, ours, true},
		{"route on another instance's link", netlink.Route{Protocol: RouteProtocol, LinkIndex: other}, ours, false},
		{"route of ours after our link went", netlink.Route{Protocol: RouteProtocol, LinkIndex: other}, 0, false},
		{"our bypass", netlink.Route{Protocol: BypassProtocol, LinkIndex: underlay, Gw: gw, Priority: ours}, ours, true},
		{"another instance's bypass", netlink.Route{Protocol: BypassProtocol, LinkIndex: underlay, Gw: gw, Priority: other}, ours, false},
		{"a gone instance's bypass", netlink.Route{Protocol: BypassProtocol, LinkIndex: underlay, Gw: gw, Priority: 42}, ours, true},
		{"a gone instance's bypass, our link gone too", netlink.Route{Protocol: BypassProtocol, LinkIndex: underlay, Gw: gw, Priority: 42}, 0, true},
		{"an older version's bypass (metric 0)", netlink.Route{Protocol: RouteProtocol, LinkIndex: underlay, Gw: gw}, 0, true},
		{"an older version's IPv6 bypass (metric 1024)", netlink.Route{Protocol: RouteProtocol, LinkIndex: underlay, Gw: net.ParseIP("2001:db8::1"), Priority: 1024}, ours, true},
	}
	for _, tt := range tests {
		if got := cleanupOwns(tt.r, tt.linkIndex, exists); got != tt.want {
			t.Errorf("%s: cleanupOwns = %v, want %v", tt.name, got, tt.want)
		}
	}
}
