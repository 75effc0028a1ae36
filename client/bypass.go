package client

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"

	"tlsvpn/routing"
)

// bypassFollower keeps the full tunnel's host route to the server
// outside the tunnel (routing.Bypass) on the address actually dialed:
// with several servers, or a name with several addresses, each attempt
// may go elsewhere, and a dial to an address without the route would
// only loop into the tunnel. It is off until start; Close removes the
// route. Safe for concurrent use.
type bypassFollower struct {
	tun string
	log *slog.Logger
	// add is routing.AddBypass; tests replace it.
	add func(ctx context.Context, addr netip.Addr, tunIf string) (bypassRoute, error)

	mu  sync.Mutex
	cur bypassRoute // nil while off
	at  netip.Addr  // the address cur keeps outside the tunnel
}

// bypassRoute is what bypassFollower needs of a *routing.Bypass.
type bypassRoute interface {
	Refresh(ctx context.Context) (bool, error)
	Close() error
}

func newBypassFollower(tun string, log *slog.Logger) *bypassFollower {
	return &bypassFollower{tun: tun, log: log, add: func(ctx context.Context, addr netip.Addr, tunIf string) (bypassRoute, error) {
		return routing.AddBypass(ctx, addr, tunIf)
	}}
}

// on reports whether the route is kept (the tunnel took the default
// route).
func (b *bypassFollower) on() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cur != nil
}

// start puts the route on addr, the server the session is connected to,
// before the tunnel takes everything else.
func (b *bypassFollower) start(ctx context.Context, addr netip.Addr) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.moveLocked(ctx, addr)
}

// follow runs before each dial (serverDialer.before): while on, it moves
// the route to addr if it is elsewhere, and otherwise re-pins it if the
// way to the server changed (roaming: another gateway or interface).
func (b *bypassFollower) follow(ctx context.Context, addr netip.AddrPort) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur == nil {
		return nil
	}
	if b.at == addr.Addr() {
		changed, err := b.cur.Refresh(ctx)
		if changed && err == nil {
			b.log.Info("route to the server moved outside the tunnel", "server", addr.Addr())
		}
		return err
	}
	return b.moveLocked(ctx, addr.Addr())
}

// moveLocked adds the route to addr, then removes the one it replaces.
func (b *bypassFollower) moveLocked(ctx context.Context, addr netip.Addr) error {
	r, err := b.add(ctx, addr, b.tun)
	if err != nil {
		return err
	}
	if b.cur != nil {
		b.log.Info("route outside the tunnel follows the server", "from", b.at, "to", addr)
		if err := b.cur.Close(); err != nil {
			b.log.Warn("removing the route to the previous server", "addr", b.at, "err", err)
		}
	}
	b.cur, b.at = r, addr
	return nil
}

// Close removes the route; it is idempotent.
func (b *bypassFollower) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur == nil {
		return nil
	}
	err := b.cur.Close()
	b.cur = nil
	return err
}
