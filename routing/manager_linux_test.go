package routing_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"tlsvpn/routing"
	"tlsvpn/routing/netnstest"
)

// newTun creates a TUN device named ifname (down, no carrier) inside n and
// deletes it in cleanup (it would also vanish with the namespace).
func newTun(t *testing.T, n *netnstest.NS, ifname string) {
	t.Helper()
	n.Run(t, "ip", "tuntap", "add", "dev", ifname, "mode", "tun")
	t.Cleanup(func() {
		if l, err := n.Handle().LinkByName(ifname); err == nil {
			if err := n.Handle().LinkDel(l); err != nil {
				t.Errorf("delete %s in %s: %v", ifname, n.Name, err)
			}
		}
	})
}

// newManager returns a Manager working in n, logging changes into the
// returned buffer, closed in cleanup.
func newManager(t *testing.T, n *netnstest.NS) (routing.Manager, *syncBuffer) {
	t.Helper()
	var logs syncBuffer
	m, err := routing.NewManager(routing.Options{
		Handle: n.Handle(),
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		t.Fatalf("NewManager: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close in cleanup: %v", err)
		}
	})
	return m, &logs
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// Take returns the buffered text and empties the buffer.
func (s *syncBuffer) Take() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.b.Reset()
	return s.b.String()
}

var protoNames = map[netlink.RouteProtocol]string{
	unix.RTPROT_KERNEL:    "kernel",
	unix.RTPROT_BOOT:      "boot",
	unix.RTPROT_STATIC:    "static",
	routing.RouteProtocol: "tlsvpn",
}

// kernelState renders the namespace's state as sorted lines: link MTU and
// state and the addresses of each of ifnames (except IPv6 link-local), and
// every unicast route of the main table (except IPv6 link-local and
// loopback), with its device and protocol.
func kernelState(t *testing.T, h *netlink.Handle, ifnames ...string) string {
	t.Helper()
	var lines []string
	for _, name := range ifnames {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatalf("LinkByName(%s): %v", name, err)
		}
		state := "down"
		if l.Attrs().Flags&net.FlagUp != 0 {
			state = "up"
		}
		lines = append(lines, fmt.Sprintf("link %s mtu %d %s", name, l.Attrs().MTU, state))
		addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			t.Fatalf("AddrList(%s): %v", name, err)
		}
		for _, a := range addrs {
			if a.IP.To4() == nil && a.IP.IsLinkLocalUnicast() {
				continue
			}
			lines = append(lines, fmt.Sprintf("addr %v dev %s", a.IPNet, name))
		}
	}
	routes, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{}, 0)
	if err != nil {
		t.Fatalf("RouteList: %v", err)
	}
	for _, r := range routes {
		if r.Type != unix.RTN_UNICAST || r.Dst == nil || r.Dst.IP.IsLinkLocalUnicast() || r.Dst.IP.IsLoopback() {
			continue
		}
		dev := "?"
		if l, err := h.LinkByIndex(r.LinkIndex); err == nil {
			dev = l.Attrs().Name
		}
		proto, ok := protoNames[r.Protocol]
		if !ok {
			proto = fmt.Sprint(int(r.Protocol))
		}
		lines = append(lines, fmt.Sprintf("route %v dev %s proto %s", r.Dst, dev, proto))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n") + "\n"
}

func pfxs(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// lines joins its arguments as kernelState does, sorting them.
func lines(ls ...string) string {
	ls = slices.Clone(ls)
	slices.Sort(ls)
	return strings.Join(ls, "\n") + "\n"
}

// TestManagerLifecycle walks one Manager through Set, a repeated Set, a
// changed Set and Close, next to addresses and routes the test added
// itself, which must survive untouched.
func TestManagerLifecycle(t *testing.T) {
	n := netnstest.New(t)
	h := n.Handle()
	newTun(t, n, "tunnelc0")
	// Foreign state, added before the Manager runs: an address on the
	// tunnel (the primary of its subnet) and a route on lo.
	n.Run(t, "ip", "addr", "add", "100.64.0.77/24", "dev", "tunnelc0")
	n.Run(t, "ip", "route", "add", "198.18.7.0/24", "dev", "lo")
	m, logs := newManager(t, n)

	foreign := []string{
		"addr 100.64.0.77/24 dev tunnelc0",
		"route 100.64.0.0/24 dev tunnelc0 proto kernel", // of 100.64.0.77/24
		"route 198.18.7.0/24 dev lo proto boot",
	}
	steps := []struct {
		name      string
		before    []string // ip commands (space-separated args) run first
		cfg       routing.Config
		want      []string // in addition to foreign
		wantNoLog bool     // the Set must change nothing
	}{
		{
			name: "initial",
			cfg: routing.Config{
				Interface: "tunnelc0",
				MTU:       1400,
				Addresses: pfxs("100.64.0.2/24", "fd00:64::2/64"),
				// 100.64.0.0/24 is already routed by the kernel's
				// prefix route: satisfied, not owned.
				Routes: pfxs("198.19.0.0/16", "192.0.2.0/24", "fd00:100::/56", "100.64.0.0/24"),
			},
			want: []string{
				"link tunnelc0 mtu 1400 up",
				"addr 100.64.0.2/24 dev tunnelc0",
				"addr fd00:64::2/64 dev tunnelc0",
				"route 192.0.2.0/24 dev tunnelc0 proto tlsvpn",
				"route 198.19.0.0/16 dev tunnelc0 proto tlsvpn",
				"route fd00:100::/56 dev tunnelc0 proto tlsvpn",
				"route fd00:64::/64 dev tunnelc0 proto kernel",
			},
		},
		{
			name: "same again, unnormalized",
			cfg: routing.Config{
				Interface: "tunnelc0",
				MTU:       1400,
				Addresses: pfxs("fd00:64::2/64", "100.64.0.2/24", "100.64.0.2/24"),
				Routes:    pfxs("100.64.0.0/24", "fd00:100::1/56", "198.19.1.1/16", "192.0.2.0/24"),
			},
			want: []string{
				"link tunnelc0 mtu 1400 up",
				"addr 100.64.0.2/24 dev tunnelc0",
				"addr fd00:64::2/64 dev tunnelc0",
				"route 192.0.2.0/24 dev tunnelc0 proto tlsvpn",
				"route 198.19.0.0/16 dev tunnelc0 proto tlsvpn",
				"route fd00:100::/56 dev tunnelc0 proto tlsvpn",
				"route fd00:64::/64 dev tunnelc0 proto kernel",
			},
			wantNoLog: true,
		},
		{
			name: "changed",
			before: []string{
				"route add 198.18.8.0/24 dev tunnelc0",
				"-6 route add fd00:200::/64 dev tunnelc0",
			},
			cfg: routing.Config{
				Interface: "tunnelc0",
				MTU:       1280,
				// Same subnet, new address; same IPv6 address,
				// new length.
				Addresses: pfxs("100.64.0.3/24", "fd00:64::2/48"),
				Routes:    pfxs("198.19.0.0/16", "198.18.10.0/24", "fd00:100::/56", "100.64.0.0/24"),
			},
			want: []string{
				"link tunnelc0 mtu 1280 up",
				"addr 100.64.0.3/24 dev tunnelc0",
				"addr fd00:64::2/48 dev tunnelc0",
				"route 198.18.8.0/24 dev tunnelc0 proto boot",
				"route 198.18.10.0/24 dev tunnelc0 proto tlsvpn",
				"route 198.19.0.0/16 dev tunnelc0 proto tlsvpn",
				"route fd00:100::/56 dev tunnelc0 proto tlsvpn",
				"route fd00:200::/64 dev tunnelc0 proto boot",
				"route fd00:64::/48 dev tunnelc0 proto kernel",
			},
		},
		{
			name: "nothing wanted",
			cfg:  routing.Config{Interface: "tunnelc0"},
			want: []string{
				"link tunnelc0 mtu 1280 up",
				"route 198.18.8.0/24 dev tunnelc0 proto boot",
				"route fd00:200::/64 dev tunnelc0 proto boot",
			},
		},
		{
			name: "again before Close",
			cfg: routing.Config{
				Interface: "tunnelc0",
				Addresses: pfxs("100.64.0.4/24", "fd00:64::4/64"),
				Routes:    pfxs("198.19.0.0/16", "fd00:100::/56"),
			},
			want: []string{
				"link tunnelc0 mtu 1280 up",
				"addr 100.64.0.4/24 dev tunnelc0",
				"addr fd00:64::4/64 dev tunnelc0",
				"route 198.18.8.0/24 dev tunnelc0 proto boot",
				"route 198.19.0.0/16 dev tunnelc0 proto tlsvpn",
				"route fd00:100::/56 dev tunnelc0 proto tlsvpn",
				"route fd00:200::/64 dev tunnelc0 proto boot",
				"route fd00:64::/64 dev tunnelc0 proto kernel",
			},
		},
	}
	for _, s := range steps {
		for _, c := range s.before {
			n.Run(t, "ip", strings.Fields(c)...)
		}
		if err := m.Set(t.Context(), s.cfg); err != nil {
			t.Fatalf("step %q: Set: %v", s.name, err)
		}
		want := lines(append(slices.Clone(foreign), s.want...)...)
		if got := kernelState(t, h, "tunnelc0"); got != want {
			t.Fatalf("step %q: kernel state:\n%s\nwant:\n%s", s.name, got, want)
		}
		if log := logs.Take(); s.wantNoLog && log != "" {
			t.Errorf("step %q: Set logged changes, want none:\n%s", s.name, log)
		}
	}

	// What `ip` shows for our protocol, as an operator would look.
	if out := n.Run(t, "ip", "-d", "route", "show", "proto", fmt.Sprint(routing.RouteProtocol)); !strings.Contains(out, "unicast 198.19.0.0/16 dev tunnelc0 scope link") {
		t.Errorf("ip -d route show proto %d:\n%s\nwant the 198.19.0.0/16 device route, scope link", routing.RouteProtocol, out)
	}
	if out := n.Run(t, "ip", "-6", "-d", "route", "show", "proto", fmt.Sprint(routing.RouteProtocol)); !strings.Contains(out, "unicast fd00:100::/56 dev tunnelc0 scope global") {
		t.Errorf("ip -6 -d route show proto %d:\n%s\nwant fd00:100::/56", routing.RouteProtocol, out)
	}

	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	want := lines(append(slices.Clone(foreign),
		"link tunnelc0 mtu 1280 up",
		"route 198.18.8.0/24 dev tunnelc0 proto boot",
		"route fd00:200::/64 dev tunnelc0 proto boot",
	)...)
	if got := kernelState(t, h, "tunnelc0"); got != want {
		t.Errorf("after Close: kernel state:\n%s\nwant:\n%s", got, want)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := m.Set(t.Context(), routing.Config{Interface: "tunnelc0"}); !errors.Is(err, routing.ErrClosed) {
		t.Errorf("Set after Close = %v, want ErrClosed", err)
	}
}

func TestManagerSetErrors(t *testing.T) {
	n := netnstest.New(t)
	newTun(t, n, "tunnelc0")
	tests := []struct {
		name    string
		cfg     routing.Config
		wantIs  error
		wantMsg string
	}{
		{name: "no interface", cfg: routing.Config{}, wantIs: routing.ErrInvalidConfig},
		{name: "negative mtu", cfg: routing.Config{Interface: "tunnelc0", MTU: -1}, wantIs: routing.ErrInvalidConfig},
		{name: "invalid prefix", cfg: routing.Config{Interface: "tunnelc0", Routes: []netip.Prefix{{}}}, wantIs: routing.ErrInvalidConfig},
		{name: "missing link", cfg: routing.Config{Interface: "nope0"}, wantMsg: "find link nope0"},
		{
			name:    "route owned by another link",
			cfg:     routing.Config{Interface: "tunnelc0", Routes: pfxs("198.18.9.0/24")},
			wantMsg: "add route 198.18.9.0/24 dev tunnelc0: file exists",
		},
	}
	n.Run(t, "ip", "route", "add", "198.18.9.0/24", "dev", "lo")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _ := newManager(t, n)
			err := m.Set(t.Context(), tt.cfg)
			if err == nil {
				t.Fatalf("Set(%+v) = nil, want error", tt.cfg)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("Set(%+v) = %v, want errors.Is %v", tt.cfg, err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Set(%+v) = %q, want it to contain %q", tt.cfg, err, tt.wantMsg)
			}
		})
	}
}

// TestManagerLinkGone checks that Close succeeds when the interface was
// deleted under the Manager (taking its addresses and routes with it).
func TestManagerLinkGone(t *testing.T) {
	n := netnstest.New(t)
	newTun(t, n, "tunnelc0")
	m, _ := newManager(t, n)
	cfg := routing.Config{Interface: "tunnelc0", Addresses: pfxs("100.64.0.2/24", "fd00:64::2/64"), Routes: pfxs("198.19.0.0/16", "fd00:100::/56")}
	if err := m.Set(t.Context(), cfg); err != nil {
		t.Fatalf("Set: %v", err)
	}
	n.Run(t, "ip", "link", "del", "tunnelc0")
	if err := m.Close(); err != nil {
		t.Errorf("Close after link deleted = %v, want nil", err)
	}
}

// TestManagerSwitchInterface checks that moving to another interface
// configures the new one before clearing the old one.
func TestManagerSwitchInterface(t *testing.T) {
	n := netnstest.New(t)
	newTun(t, n, "tunnelc0")
	newTun(t, n, "tunnelc1")
	m, _ := newManager(t, n)
	for _, ifname := range []string{"tunnelc0", "tunnelc1"} {
		cfg := routing.Config{Interface: ifname, MTU: 1400, Addresses: pfxs("100.64.0.2/24"), Routes: pfxs("198.19.0.0/16")}
		if err := m.Set(t.Context(), cfg); err != nil {
			t.Fatalf("Set(%s): %v", ifname, err)
		}
	}
	want := lines(
		"link tunnelc0 mtu 1400 up",
		"link tunnelc1 mtu 1400 up",
		"addr 100.64.0.2/24 dev tunnelc1",
		"route 100.64.0.0/24 dev tunnelc1 proto kernel",
		"route 198.19.0.0/16 dev tunnelc1 proto tlsvpn",
	)
	if got := kernelState(t, n.Handle(), "tunnelc0", "tunnelc1"); got != want {
		t.Errorf("kernel state:\n%s\nwant:\n%s", got, want)
	}
}

// TestManagerAdoptsLeftovers checks that routes with our protocol left on
// the interface by an earlier process are owned: removed when not wanted
// and by Close.
func TestManagerAdoptsLeftovers(t *testing.T) {
	n := netnstest.New(t)
	newTun(t, n, "tunnelc0")
	n.Run(t, "ip", "link", "set", "tunnelc0", "up")
	proto := fmt.Sprint(routing.RouteProtocol)
	n.Run(t, "ip", "route", "add", "198.18.30.0/24", "dev", "tunnelc0", "proto", proto)
	n.Run(t, "ip", "route", "add", "198.18.31.0/24", "dev", "tunnelc0", "proto", proto)
	m, _ := newManager(t, n)
	if err := m.Set(t.Context(), routing.Config{Interface: "tunnelc0", Routes: pfxs("198.18.31.0/24")}); err != nil {
		t.Fatalf("Set: %v", err)
	}
	want := lines("link tunnelc0 mtu 1500 up", "route 198.18.31.0/24 dev tunnelc0 proto tlsvpn")
	if got := kernelState(t, n.Handle(), "tunnelc0"); got != want {
		t.Errorf("after Set: kernel state:\n%s\nwant:\n%s", got, want)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	want = lines("link tunnelc0 mtu 1500 up")
	if got := kernelState(t, n.Handle(), "tunnelc0"); got != want {
		t.Errorf("after Close: kernel state:\n%s\nwant:\n%s", got, want)
	}
}

// TestCleanup simulates a crash (no Close) and checks that Cleanup of one
// instance removes its routes and addresses and the bypass routes of gone
// instances, and nothing of other instances or anyone else.
func TestCleanup(t *testing.T) {
	const (
		ours      = "198.18.20.0/24 dev tunnelc0 scope link"
		other     = "198.18.21.0/24 dev tunnelc1 scope link"
		byOurs    = "198.18.40.1 via 198.18.99.1 dev uplink0 metric OURS"
		byOther   = "198.18.40.2 via 198.18.99.1 dev uplink0 metric OTHER"
		byOrphan  = "198.18.40.3 via 198.18.99.1 dev uplink0 metric 99999"
		byLegacy  = "198.18.40.4 via 198.18.99.1 dev uplink0" // RouteProtocol, metric 0
		ourAddr   = "100.64.0.2/24"
		otherAddr = "100.64.1.2/24"
	)
	tests := []struct {
		name     string
		ifname   string
		want116  []string // ip -4 route show table all proto 116
		want117  []string // ip -4 route show table all proto 117
		wantAddr bool     // tunnelc0 keeps its address
	}{
		{
			name:    "this instance's routes, addresses and bypass",
			ifname:  "tunnelc0",
			want116: []string{other},
			want117: []string{byOther},
		},
		{
			name:     "bypass routes of gone instances only",
			ifname:   "",
			want116:  []string{ours, other},
			want117:  []string{byOurs, byOther},
			wantAddr: true,
		},
		{
			name:     "interface missing",
			ifname:   "nope0",
			want116:  []string{ours, other},
			want117:  []string{byOurs, byOther},
			wantAddr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := netnstest.New(t)
			for _, name := range []string{"tunnelc0", "tunnelc1", "uplink0"} {
				newTun(t, n, name)
				n.Run(t, "ip", "link", "set", name, "up")
			}
			n.Run(t, "ip", "addr", "add", "198.18.99.2/24", "dev", "uplink0")
			n.Run(t, "ip", "addr", "add", otherAddr, "dev", "tunnelc1")
			m, err := routing.NewManager(routing.Options{Handle: n.Handle()})
			if err != nil {
				t.Fatal(err)
			}
			cfg := routing.Config{Interface: "tunnelc0", Addresses: pfxs(ourAddr), Routes: pfxs("198.18.20.0/24")}
			if err := m.Set(t.Context(), cfg); err != nil {
				t.Fatalf("Set: %v", err)
			}
			// "Crash": m is dropped without Close. Another instance
			// (tunnelc1) lives; bypass routes of this one, the other one,
			// a gone one and an older version's; and a foreign route.
			idx := func(name string) string {
				l, err := n.Handle().LinkByName(name)
				if err != nil {
					t.Fatal(err)
				}
				return strconv.Itoa(l.Attrs().Index)
			}
			expand := strings.NewReplacer("OURS", idx("tunnelc0"), "OTHER", idx("tunnelc1")).Replace
			p116, p117 := strconv.Itoa(routing.RouteProtocol), strconv.Itoa(routing.BypassProtocol)
			n.Run(t, "ip", "route", "add", "198.18.21.0/24", "dev", "tunnelc1", "proto", p116)
			for _, r := range []string{byOurs, byOther, byOrphan} {
				n.Run(t, "ip", append(append([]string{"route", "add"}, strings.Fields(expand(r))...), "proto", p117)...)
			}
			n.Run(t, "ip", append(append([]string{"route", "add"}, strings.Fields(byLegacy)...), "proto", p116)...)
			n.Run(t, "ip", "route", "add", "198.18.7.0/24", "dev", "lo")

			check := func(when string) {
				t.Helper()
				for _, c := range []struct {
					proto string
					want  []string
				}{{p116, tt.want116}, {p117, tt.want117}} {
					want := make([]string, len(c.want))
					for i, r := range c.want {
						want[i] = expand(r)
					}
					got := strings.Split(strings.TrimSpace(n.Run(t, "ip", "-4", "route", "show", "table", "all", "proto", c.proto)), "\n")
					for i := range got {
						got[i] = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(got[i]), "linkdown")) // TUN without a reader
					}
					if lines(got...) != lines(want...) {
						t.Errorf("%s Cleanup(%q): proto %s routes:\n%s\nwant:\n%s", when, tt.ifname, c.proto, lines(got...), lines(want...))
					}
				}
				if got := hasAddrOn(t, n, "tunnelc0", ourAddr); got != tt.wantAddr {
					t.Errorf("%s Cleanup(%q): tunnelc0 has %s = %v, want %v", when, tt.ifname, ourAddr, got, tt.wantAddr)
				}
				if !hasAddrOn(t, n, "tunnelc1", otherAddr) {
					t.Errorf("%s Cleanup(%q): the other instance lost its address", when, tt.ifname)
				}
				if out := n.Run(t, "ip", "route", "show", "198.18.7.0/24"); !strings.Contains(out, "dev lo") {
					t.Errorf("%s Cleanup(%q): foreign route removed", when, tt.ifname)
				}
			}
			// Cleanup works in the calling thread's namespace.
			if err := n.Do(func() error { return routing.Cleanup(t.Context(), tt.ifname) }); err != nil {
				t.Fatalf("Cleanup(%q): %v", tt.ifname, err)
			}
			check("after")
			// Running it again finds nothing to do.
			if err := n.Do(func() error { return routing.Cleanup(t.Context(), tt.ifname) }); err != nil {
				t.Errorf("second Cleanup(%q): %v", tt.ifname, err)
			}
			check("after a second")
		})
	}
}

// hasAddrOn reports whether ifname in n has the address addr (CIDR).
func hasAddrOn(t *testing.T, n *netnstest.NS, ifname, addr string) bool {
	t.Helper()
	return strings.Contains(n.Run(t, "ip", "addr", "show", "dev", ifname), " "+addr+" ")
}

// TestManagerReaddress checks address changes that make the kernel drop
// state on its own: deleting the only IPv4 address flushes the device's
// IPv4 routes, which Set must restore.
func TestManagerReaddress(t *testing.T) {
	tests := []struct {
		name     string
		from, to []string
		want     []string
	}{
		{
			name: "same subnet",
			from: []string{"100.64.0.2/24"},
			to:   []string{"100.64.0.3/24"},
			want: []string{"addr 100.64.0.3/24 dev tunnelc0", "route 100.64.0.0/24 dev tunnelc0 proto kernel"},
		},
		{
			name: "other subnet",
			from: []string{"100.64.0.2/24"},
			to:   []string{"100.64.1.2/24"},
			want: []string{"addr 100.64.1.2/24 dev tunnelc0", "route 100.64.1.0/24 dev tunnelc0 proto kernel"},
		},
		{
			name: "prefix length",
			from: []string{"100.64.0.2/24", "fd00:64::2/64"},
			to:   []string{"100.64.0.2/16", "fd00:64::2/56"},
			want: []string{
				"addr 100.64.0.2/16 dev tunnelc0", "route 100.64.0.0/16 dev tunnelc0 proto kernel",
				"addr fd00:64::2/56 dev tunnelc0", "route fd00:64::/56 dev tunnelc0 proto kernel",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := netnstest.New(t)
			newTun(t, n, "tunnelc0")
			m, _ := newManager(t, n)
			routes := pfxs("198.19.0.0/16", "fd00:100::/56")
			for _, addrs := range [][]string{tt.from, tt.to} {
				if err := m.Set(t.Context(), routing.Config{Interface: "tunnelc0", Addresses: pfxs(addrs...), Routes: routes}); err != nil {
					t.Fatalf("Set(addresses %v): %v", addrs, err)
				}
			}
			want := lines(append([]string{
				"link tunnelc0 mtu 1500 up",
				"route 198.19.0.0/16 dev tunnelc0 proto tlsvpn",
				"route fd00:100::/56 dev tunnelc0 proto tlsvpn",
			}, tt.want...)...)
			if got := kernelState(t, n.Handle(), "tunnelc0"); got != want {
				t.Errorf("after %v -> %v: kernel state:\n%s\nwant:\n%s", tt.from, tt.to, got, want)
			}
		})
	}
}
