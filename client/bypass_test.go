package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
)

// fakeRoute records what a bypassFollower does to its routes.
type fakeRoute struct {
	addr netip.Addr
	ops  *[]string
}

func (r fakeRoute) Refresh(context.Context) (bool, error) {
	*r.ops = append(*r.ops, "refresh "+r.addr.String())
	return false, nil
}

func (r fakeRoute) Close() error {
	*r.ops = append(*r.ops, "del "+r.addr.String())
	return nil
}

// TestBypassFollower: the route outside the tunnel is off until the
// tunnel takes the default route, then follows each address dialed:
// the new route is added before the old one goes, and dialing the same
// address again only re-pins it (roaming).
func TestBypassFollower(t *testing.T) {
	var ops []string
	b := newBypassFollower("tunnelc0", slog.New(slog.DiscardHandler))
	b.add = func(_ context.Context, addr netip.Addr, tun string) (bypassRoute, error) {
		if addr == netip.MustParseAddr("192.0.2.99") {
			return nil, errors.New("no route to server 192.0.2.99 to keep outside the tunnel")
		}
		ops = append(ops, "add "+addr.String()+" "+tun)
		return fakeRoute{addr, &ops}, nil
	}
	ctx := context.Background()
	ap := netip.MustParseAddrPort
	steps := []func() error{
		func() error { return b.follow(ctx, ap("192.0.2.1:443")) }, // off: nothing
		func() error { return b.start(ctx, netip.MustParseAddr("192.0.2.1")) },
		func() error { return b.follow(ctx, ap("192.0.2.1:443")) },
		func() error { return b.follow(ctx, ap("192.0.2.2:443")) },
		func() error { return b.follow(ctx, ap("[2001:db8::2]:443")) },
		b.Close,
		b.Close,
	}
	for i, s := range steps {
		if err := s(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	want := `add 192.0.2.1 tunnelc0
refresh 192.0.2.1
add 192.0.2.2 tunnelc0
del 192.0.2.1
add 2001:db8::2 tunnelc0
del 192.0.2.2
del 2001:db8::2`
	if got := strings.Join(ops, "\n"); got != want {
		t.Errorf("routes:\n%s\nwant:\n%s", got, want)
	}

	// A route that cannot be added fails that dial and keeps the old one.
	ops = nil
	if err := b.start(ctx, netip.MustParseAddr("192.0.2.1")); err != nil {
		t.Fatal(err)
	}
	if err := b.follow(ctx, ap("192.0.2.99:443")); err == nil {
		t.Error("follow to an address with no route succeeded")
	}
	if err := b.follow(ctx, ap("192.0.2.1:443")); err != nil {
		t.Error(err)
	}
	if got := fmt.Sprint(ops); got != "[add 192.0.2.1 tunnelc0 refresh 192.0.2.1]" {
		t.Errorf("after a failed move: %s", got)
	}
}
