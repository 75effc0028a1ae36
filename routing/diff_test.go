package routing

import (
	"net/netip"
	"strings"
	"testing"
)

func prefixes(t *testing.T, s string) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for f := range strings.FieldsSeq(s) {
		out = append(out, netip.MustParsePrefix(f))
	}
	return out
}

func TestDiff(t *testing.T) {
	tests := []struct {
		name      string
		current   string
		desired   string
		conflicts func(a, b netip.Prefix) bool
		want      string
	}{
		{name: "empty"},
		{name: "equal", current: "10.0.0.0/8 fd00::/8", desired: "fd00::/8 10.0.0.0/8"},
		{name: "all new", desired: "10.0.0.0/8 192.0.2.0/24", want: "+10.0.0.0/8 +192.0.2.0/24"},
		{name: "all stale", current: "10.0.0.0/8 192.0.2.0/24", want: "-10.0.0.0/8 -192.0.2.0/24"},
		{
			name:    "adds before deletes",
			current: "10.0.0.0/8 172.16.0.0/12",
			desired: "172.16.0.0/12 192.0.2.0/24 fd00::/8",
			want:    "+192.0.2.0/24 +fd00::/8 -10.0.0.0/8",
		},
		{
			name:    "duplicates collapse",
			current: "10.0.0.0/8 10.0.0.0/8",
			desired: "192.0.2.0/24 192.0.2.0/24",
			want:    "+192.0.2.0/24 -10.0.0.0/8",
		},
		{
			name:    "prefix length change is add and delete",
			current: "100.64.0.2/24",
			desired: "100.64.0.2/16",
			want:    "+100.64.0.2/16 -100.64.0.2/24",
		},
		{
			name:      "conflicting stale entry is deleted first",
			current:   "fd00::2/64 fd00::9/64 100.64.0.2/24",
			desired:   "fd00::2/48 100.64.1.3/24",
			conflicts: addrConflict,
			want:      "-fd00::2/64 +100.64.1.3/24 +fd00::2/48 -100.64.0.2/24 -fd00::9/64",
		},
		{
			name:      "ipv4 readdress in the same subnet deletes first",
			current:   "100.64.0.2/24",
			desired:   "100.64.0.3/24",
			conflicts: addrConflict,
			want:      "-100.64.0.2/24 +100.64.0.3/24",
		},
		{
			name:      "no conflict across subnets",
			current:   "100.64.0.2/24 fd00::2/64",
			desired:   "100.64.1.2/24 fd00::3/64",
			conflicts: addrConflict,
			want:      "+100.64.1.2/24 +fd00::3/64 -100.64.0.2/24 -fd00::2/64",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cur, want := prefixes(t, tt.current), prefixes(t, tt.desired)
			ops := diff(cur, want, tt.conflicts)
			var got []string
			for _, o := range ops {
				got = append(got, o.String())
			}
			if g := strings.Join(got, " "); g != tt.want {
				t.Errorf("diff(%v, %v) = %q, want %q", cur, want, g, tt.want)
			}
		})
	}
}

// TestDiffConverges checks the contract on arbitrary inputs: applying the
// ops to current yields desired.
func TestDiffConverges(t *testing.T) {
	sets := []string{"", "10.0.0.0/8", "10.0.0.0/8 10.0.0.0/16", "fd00::/8 10.0.0.0/8 192.0.2.0/24", "192.0.2.0/24 fd00::1/64 fd00::1/48"}
	for _, c := range sets {
		for _, d := range sets {
			for _, conflicts := range []func(a, b netip.Prefix) bool{nil, addrConflict} {
				state := map[netip.Prefix]bool{}
				for _, p := range prefixes(t, c) {
					state[p] = true
				}
				for _, o := range diff(prefixes(t, c), prefixes(t, d), conflicts) {
					if o.add == state[o.prefix] {
						t.Fatalf("diff(%q, %q): op %v is redundant", c, d, o)
					}
					state[o.prefix] = o.add
				}
				want := map[netip.Prefix]bool{}
				for _, p := range prefixes(t, d) {
					want[p] = true
				}
				for p, in := range state {
					if in != want[p] {
						t.Errorf("diff(%q, %q): after ops %v present=%v, want %v", c, d, p, in, want[p])
					}
				}
			}
		}
	}
}
