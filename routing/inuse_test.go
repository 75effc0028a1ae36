package routing

import (
	"net/netip"
	"strings"
	"testing"
)

func TestSubnetConflict(t *testing.T) {
	p := netip.MustParsePrefix
	host := []InUse{
		{Ifname: "lo", Prefix: p("127.0.0.1/8")},
		{Ifname: "eth0", Prefix: p("198.18.0.1/24")},
		{Ifname: "eth0", Prefix: p("0.0.0.0/0"), Route: true},         // a device default route
		{Ifname: "tunnelc0", Prefix: p("0.0.0.0/1"), Route: true},     // a full tunnel's half
		{Ifname: "eth0", Prefix: p("100.64.0.0/10"), Route: true},     // an aggregate
		{Ifname: "tunneld0", Prefix: p("100.64.0.1/24")},              // another instance
		{Ifname: "tunneld0", Prefix: p("100.64.0.0/24"), Route: true}, // its kernel route
		{Ifname: "eth1", Prefix: p("198.19.5.0/28"), Route: true},     // a small network
		{Ifname: "tunneld0", Prefix: p("fd00:64::1/64")},
		{Ifname: "eth0", Prefix: p("fe80::1/64")},
	}
	tests := []struct {
		subnet string
		want   string // "" for no conflict
	}{
		{"100.64.1.0/24", ""}, // inside the aggregate route only
		{"100.64.0.0/24", "address 100.64.0.1/24 on tunneld0"}, // the same subnet
		{"100.64.0.128/25", "address 100.64.0.1/24 on tunneld0"},
		{"100.64.0.0/16", "address 100.64.0.1/24 on tunneld0"}, // a wider one
		{"198.18.0.0/16", "address 198.18.0.1/24 on eth0"},
		{"198.19.0.0/16", "route 198.19.5.0/28 on eth1"}, // a route inside it
		{"198.19.5.0/29", ""},                            // inside a route: ours is more specific
		{"fd00:64::/64", "address fd00:64::1/64 on tunneld0"},
		{"fd00:65::/64", ""},
		{"fe80::/10", "address fe80::1/64 on eth0"},
	}
	for _, tt := range tests {
		u, ok := SubnetConflict(p(tt.subnet), host)
		got := ""
		if ok {
			got = u.String()
		}
		if got != tt.want {
			t.Errorf("SubnetConflict(%s) = %q, want %q", tt.subnet, got, tt.want)
		}
	}
}

func TestConflictError(t *testing.T) {
	name := (&ConflictError{Ifname: "tunneld0", PID: 42, Command: "tunneld"}).Error()
	if name != "interface tunneld0 already exists (its TUN device is held by tunneld, pid 42)" {
		t.Errorf("name conflict: %q", name)
	}
	if s := (&ConflictError{Ifname: "tunneld0"}).Error(); s != "interface tunneld0 already exists (a TUN device another process holds)" {
		t.Errorf("name conflict, holder unknown: %q", s)
	}
	if s := (&ConflictError{Ifname: "eth0", NotTUN: true}).Error(); s != "interface eth0 already exists (not a TUN device)" {
		t.Errorf("name conflict, not a TUN: %q", s)
	}
	sub := (&ConflictError{Ifname: "tunneld1", Subnet: netip.MustParsePrefix("100.64.0.0/24"),
		Used: InUse{Ifname: "tunneld0", Prefix: netip.MustParsePrefix("100.64.0.1/24")}}).Error()
	if !strings.Contains(sub, "tunnel subnet 100.64.0.0/24 overlaps the address 100.64.0.1/24 on tunneld0") {
		t.Errorf("subnet conflict: %q", sub)
	}
}

func TestFirewallTableName(t *testing.T) {
	if got := FirewallTable("tunneld0"); got != "tlsvpn-tunneld0" {
		t.Errorf("FirewallTable(tunneld0) = %q", got)
	}
	if FirewallTable("a") == LegacyFirewallTable || FirewallTable("tunneld0") == FirewallTable("tunneld1") {
		t.Error("instances share a table name")
	}
	for _, o := range []FirewallOptions{{}, {Instance: "a234567890123456"}} {
		if err := o.validate(); err == nil {
			t.Errorf("FirewallOptions{Instance: %q}.validate() = nil", o.Instance)
		}
	}
	if err := (FirewallOptions{Instance: "tunneld0"}).validate(); err != nil {
		t.Errorf("validate(tunneld0) = %v", err)
	}
}
