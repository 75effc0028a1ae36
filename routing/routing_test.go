package routing

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	pfx := netip.MustParsePrefix
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{name: "minimal", cfg: Config{Interface: "tunnelc0"}},
		{name: "full", cfg: Config{Interface: "tunnelc0", MTU: 1400, Addresses: []netip.Prefix{pfx("100.64.0.2/24"), pfx("fd00::2/64")}, Routes: []netip.Prefix{pfx("0.0.0.0/0"), pfx("::/0")}}},
		{name: "no interface", cfg: Config{}, wantErr: true},
		{name: "long interface", cfg: Config{Interface: "0123456789abcdef"}, wantErr: true},
		{name: "negative mtu", cfg: Config{Interface: "tunnelc0", MTU: -1}, wantErr: true},
		{name: "zero address", cfg: Config{Interface: "tunnelc0", Addresses: []netip.Prefix{{}}}, wantErr: true},
		{name: "zero route", cfg: Config{Interface: "tunnelc0", Routes: []netip.Prefix{{}}}, wantErr: true},
		{name: "v4-mapped", cfg: Config{Interface: "tunnelc0", Routes: []netip.Prefix{pfx("::ffff:10.0.0.0/104")}}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err != nil) != tt.wantErr {
				t.Fatalf("Validate(%+v) = %v, wantErr %v", tt.cfg, err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("Validate(%+v) = %v, want errors.Is ErrInvalidConfig", tt.cfg, err)
			}
		})
	}
}

func TestConfigNormalized(t *testing.T) {
	pfx := netip.MustParsePrefix
	in := Config{
		Interface: "tunnelc0",
		MTU:       1400,
		Addresses: []netip.Prefix{pfx("fd00::2/64"), pfx("100.64.0.2/24"), pfx("100.64.0.2/24")},
		Routes:    []netip.Prefix{pfx("10.1.2.3/8"), pfx("10.0.0.0/8"), pfx("192.0.2.0/24")},
	}
	want := Config{
		Interface: "tunnelc0",
		MTU:       1400,
		Addresses: []netip.Prefix{pfx("100.64.0.2/24"), pfx("fd00::2/64")},
		Routes:    []netip.Prefix{pfx("10.0.0.0/8"), pfx("192.0.2.0/24")},
	}
	got := in.Normalized()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Normalized() = %+v, want %+v", got, want)
	}
	got.Addresses[0] = pfx("192.0.2.1/32")
	if in.Addresses[1] != pfx("100.64.0.2/24") || in.Addresses[0] != pfx("fd00::2/64") {
		t.Errorf("Normalized modified or aliased its input: %v", in.Addresses)
	}
}
