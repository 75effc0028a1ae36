package tunnel

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestConfigRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"minimal", Config{
			Addr:       netip.MustParsePrefix("100.64.0.2/24"),
			ServerAddr: netip.MustParseAddr("100.64.0.1"),
			MTU:        1500,
		}},
		{"full", Config{
			Addr:       netip.MustParsePrefix("100.64.0.9/22"),
			ServerAddr: netip.MustParseAddr("100.64.0.1"),
			Addr6:      netip.MustParsePrefix("fd00::9/64"),
			Server6:    netip.MustParseAddr("fd00::1"),
			MTU:        9000,
			Routes: []netip.Prefix{
				netip.MustParsePrefix("198.18.10.0/24"),
				netip.MustParsePrefix("0.0.0.0/0"),
				netip.MustParsePrefix("2001:db8::/32"),
			},
			Keepalive: 10 * time.Second,
			Caps:      CapGSO,
			DNS:       []netip.Addr{netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("fd00:64::1")},
			Accepted:  []netip.Prefix{netip.MustParsePrefix("198.18.20.0/24"), netip.MustParsePrefix("2001:db8:20::/64")},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := MarshalConfig(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			got, err := UnmarshalConfig(b)
			if err != nil {
				t.Fatalf("UnmarshalConfig(%x): %v", b, err)
			}
			if !reflect.DeepEqual(got, tt.cfg) {
				t.Fatalf("round trip = %+v, want %+v", got, tt.cfg)
			}
		})
	}
}

func TestMarshalConfigRejects(t *testing.T) {
	good := Config{Addr: netip.MustParsePrefix("100.64.0.2/24"), ServerAddr: netip.MustParseAddr("100.64.0.1"), MTU: 1500}
	tests := []struct {
		name string
		mod  func(*Config)
	}{
		{"no addr", func(c *Config) { c.Addr = netip.Prefix{} }},
		{"v6 addr as v4", func(c *Config) { c.Addr = netip.MustParsePrefix("fd00::2/64") }},
		{"small mtu", func(c *Config) { c.MTU = 100 }},
		{"huge mtu", func(c *Config) { c.MTU = 70000 }},
		{"too many routes", func(c *Config) { c.Routes = make([]netip.Prefix, MaxRoutes+1) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.mod(&c)
			if _, err := MarshalConfig(c); err == nil {
				t.Fatalf("MarshalConfig(%+v): no error", c)
			}
		})
	}
}

func TestUnmarshalConfigErrors(t *testing.T) {
	good, _ := MarshalConfig(Config{Addr: netip.MustParsePrefix("100.64.0.2/24"), ServerAddr: netip.MustParseAddr("100.64.0.1"), MTU: 1500})
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"bad version", append([]byte{9}, good[1:]...)},
		{"truncated", good[:len(good)-1]},
		{"unknown critical", append(append([]byte{}, good...), 0xff, 0, 0)},
		{"missing address", []byte{ControlVersion}},
		{"bad prefix bits", []byte{ControlVersion, cfgTagAddr4, 0, 5, 100, 64, 0, 2, 33}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := UnmarshalConfig(tt.in); !errors.Is(err, ErrBadControl) {
				t.Fatalf("UnmarshalConfig(%x) error = %v, want ErrBadControl", tt.in, err)
			}
		})
	}
	// Unknown non-critical attributes are skipped.
	if _, err := UnmarshalConfig(append(append([]byte{}, good...), 0x7e, 0, 1, 0)); err != nil {
		t.Fatalf("unknown optional attribute: %v", err)
	}
}

func TestCloseRoundTrip(t *testing.T) {
	long := strings.Repeat("é", MaxReasonLen)
	code, reason, err := UnmarshalClose(MarshalClose(CloseReplaced, long))
	if err != nil || code != CloseReplaced || len(reason) > MaxReasonLen || !strings.HasPrefix(long, reason) {
		t.Fatalf("close round trip: code %d reason len %d err %v", code, len(reason), err)
	}
	if _, _, err := UnmarshalClose([]byte{1}); err == nil {
		t.Fatal("1-byte close: no error")
	}
}

func FuzzUnmarshalConfig(f *testing.F) {
	b, _ := MarshalConfig(Config{
		Addr: netip.MustParsePrefix("100.64.0.2/24"), ServerAddr: netip.MustParseAddr("100.64.0.1"),
		Addr6: netip.MustParsePrefix("fd00::2/64"), MTU: 1500,
		Routes: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15"), netip.MustParsePrefix("2001:db8::/32")},
	})
	f.Add(b)
	f.Add([]byte{ControlVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := UnmarshalConfig(b)
		if err != nil {
			return
		}
		// Anything accepted must re-encode and decode to the same value.
		b2, err := MarshalConfig(c)
		if err != nil {
			t.Fatalf("accepted config %+v does not re-encode: %v", c, err)
		}
		c2, err := UnmarshalConfig(b2)
		if err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("re-encoded config %+v decodes to %+v, %v", c, c2, err)
		}
	})
}

func TestHelloRoundTrip(t *testing.T) {
	for _, h := range []Hello{
		{},
		{Caps: CapGSO, Software: "tunnelc"},
		{Caps: CapGSO, Advertise: []netip.Prefix{
			netip.MustParsePrefix("198.18.20.0/24"),
			netip.MustParsePrefix("2001:db8:20::/64"),
		}},
	} {
		got, err := UnmarshalHello(MarshalHello(h))
		if err != nil || !reflect.DeepEqual(got, h) {
			t.Errorf("round trip of %+v = %+v, %v", h, got, err)
		}
	}
	// Host bits are masked away; a mapped or unknown-family prefix is an error.
	b := appendPrefix([]byte{ControlVersion}, helloTagAdvertise, netip.MustParsePrefix("198.18.20.7/24"), true)
	if h, err := UnmarshalHello(b); err != nil || h.Advertise[0] != netip.MustParsePrefix("198.18.20.0/24") {
		t.Errorf("advertise 198.18.20.7/24 decodes to %+v, %v; want 198.18.20.0/24", h, err)
	}
	for _, bad := range [][]byte{
		appendPrefix([]byte{ControlVersion}, helloTagAdvertise, netip.MustParsePrefix("::ffff:198.18.0.0/112"), true),
		appendAttr([]byte{ControlVersion}, helloTagAdvertise, []byte{5, 1, 2, 3, 4, 24}),
		appendAttr([]byte{ControlVersion}, helloTagAdvertise, []byte{4, 1, 2, 3, 4, 33}),
		appendAttr([]byte{ControlVersion}, helloTagAdvertise, nil),
	} {
		if h, err := UnmarshalHello(bad); !errors.Is(err, ErrBadControl) {
			t.Errorf("UnmarshalHello(%x) = %+v, %v; want ErrBadControl", bad, h, err)
		}
	}
	many := Hello{Advertise: make([]netip.Prefix, MaxRoutes+1)}
	for i := range many.Advertise {
		many.Advertise[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
	}
	if h, err := UnmarshalHello(MarshalHello(many)); err != nil || len(h.Advertise) != MaxRoutes {
		t.Errorf("hello with %d prefixes: decoded %d, %v; want the first %d", MaxRoutes+1, len(h.Advertise), err, MaxRoutes)
	}
}

func FuzzUnmarshalHello(f *testing.F) {
	f.Add(MarshalHello(Hello{Caps: 1, Software: "x"}))
	f.Add(MarshalHello(Hello{Caps: 1, Advertise: []netip.Prefix{netip.MustParsePrefix("198.18.20.0/24"), netip.MustParsePrefix("2001:db8:20::/64")}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := UnmarshalHello(b)
		if err != nil {
			return
		}
		if h2, err := UnmarshalHello(MarshalHello(h)); err != nil || !reflect.DeepEqual(h2, h) {
			t.Fatalf("hello %+v re-decodes to %+v, %v", h, h2, err)
		}
	})
}

func FuzzUnmarshalClose(f *testing.F) {
	f.Add(MarshalClose(CloseShutdown, "bye"))
	f.Fuzz(func(t *testing.T, b []byte) {
		code, reason, err := UnmarshalClose(b)
		if err != nil {
			return
		}
		if c2, r2, err := UnmarshalClose(MarshalClose(code, reason)); err != nil || c2 != code || r2 != reason {
			t.Fatalf("close (%d, %q) re-decodes to (%d, %q), %v", code, reason, c2, r2, err)
		}
	})
}
