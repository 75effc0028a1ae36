package routingtest

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"tlsvpn/routing"
)

func TestRecorder(t *testing.T) {
	pfx := netip.MustParsePrefix
	tests := []struct {
		name    string
		cfgs    []routing.Config // applied in order
		wantErr bool             // from the last Set
		want    string
	}{
		{name: "nothing set"},
		{
			name: "full",
			cfgs: []routing.Config{{
				Interface: "tunnelc0",
				MTU:       1400,
				Addresses: []netip.Prefix{pfx("fd00:64::2/64"), pfx("100.64.0.2/24")},
				Routes:    []netip.Prefix{pfx("192.0.2.0/24"), pfx("10.1.2.3/8"), pfx("10.0.0.0/8")},
			}},
			want: "addr 100.64.0.2/24 dev tunnelc0\n" +
				"addr fd00:64::2/64 dev tunnelc0\n" +
				"mtu 1400 dev tunnelc0\n" +
				"route 10.0.0.0/8 dev tunnelc0\n" +
				"route 192.0.2.0/24 dev tunnelc0\n",
		},
		{
			name: "mtu zero is not rendered",
			cfgs: []routing.Config{{Interface: "tunneld0", Addresses: []netip.Prefix{pfx("100.64.0.1/24")}}},
			want: "addr 100.64.0.1/24 dev tunneld0\n",
		},
		{
			name: "last set wins",
			cfgs: []routing.Config{
				{Interface: "tunnelc0", Routes: []netip.Prefix{pfx("10.0.0.0/8")}},
				{Interface: "tunnelc0", Routes: []netip.Prefix{pfx("192.0.2.0/24")}},
			},
			want: "route 192.0.2.0/24 dev tunnelc0\n",
		},
		{
			name: "invalid config keeps state",
			cfgs: []routing.Config{
				{Interface: "tunnelc0", MTU: 1280},
				{Interface: ""},
			},
			wantErr: true,
			want:    "mtu 1280 dev tunnelc0\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Recorder
			var err error
			for _, cfg := range tt.cfgs {
				err = r.Set(t.Context(), cfg)
			}
			if (err != nil) != tt.wantErr {
				t.Errorf("last Set error = %v, wantErr %v", err, tt.wantErr)
			}
			if got := r.String(); got != tt.want {
				t.Errorf("String() =\n%s\nwant\n%s", got, tt.want)
			}
			if got := r.Sets(); got != len(tt.cfgs) {
				t.Errorf("Sets() = %d, want %d", got, len(tt.cfgs))
			}
		})
	}
}

func TestRecorderCopiesConfig(t *testing.T) {
	var r Recorder
	routes := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	if err := r.Set(t.Context(), routing.Config{Interface: "tunnelc0", Routes: routes}); err != nil {
		t.Fatal(err)
	}
	routes[0] = netip.MustParsePrefix("192.0.2.0/24")
	if got, want := r.String(), "route 10.0.0.0/8 dev tunnelc0\n"; got != want {
		t.Errorf("after caller mutated its slice: String() = %q, want %q", got, want)
	}
	cfg := r.Config()
	cfg.Routes[0] = netip.MustParsePrefix("192.0.2.0/24")
	if got := r.Config().Routes[0].String(); got != "10.0.0.0/8" {
		t.Errorf("Config() aliases internal state: route = %s after mutation", got)
	}
}

func TestRecorderFailAndClose(t *testing.T) {
	var r Recorder
	ctx := context.Background()
	cfg := routing.Config{Interface: "tunnelc0", MTU: 1400}
	if err := r.Set(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	r.FailNextSet(boom)
	if err := r.Set(ctx, routing.Config{Interface: "tunnelc0", MTU: 1280}); !errors.Is(err, boom) {
		t.Errorf("Set after FailNextSet = %v, want %v", err, boom)
	}
	if got, want := r.String(), "mtu 1400 dev tunnelc0\n"; got != want {
		t.Errorf("failed Set changed state: String() = %q, want %q", got, want)
	}
	if err := r.Set(ctx, cfg); err != nil {
		t.Errorf("Set after one failure = %v, want nil", err)
	}
	if r.Closed() {
		t.Errorf("Closed() = true before Close")
	}
	for range 2 {
		if err := r.Close(); err != nil {
			t.Errorf("Close() = %v", err)
		}
	}
	if !r.Closed() || r.String() != "" {
		t.Errorf("after Close: Closed() = %v, String() = %q; want true, empty", r.Closed(), r.String())
	}
	if err := r.Set(ctx, cfg); !errors.Is(err, routing.ErrClosed) {
		t.Errorf("Set after Close = %v, want routing.ErrClosed", err)
	}
	if got := r.Sets(); got != 4 {
		t.Errorf("Sets() = %d, want 4", got)
	}
}
