package server

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"tlsvpn/control"
	"tlsvpn/routing/bgp"
	"tlsvpn/state"
	"tlsvpn/tunnel"
)

// announcer keeps the BGP speaker's routes equal to what this gateway
// holds: a host route for each tunnel address of each client with a
// session here, and the networks accepted behind site gateways. The
// session hooks only note the change (they run under the tunnel server's
// lock and must not block); one goroutine turns a burst of changes into
// one update of the speaker.
type announcer struct {
	sp          *bgp.Speaker
	pool, pool6 state.Leases // pool6 nil without --subnet6
	log         *slog.Logger

	mu   sync.Mutex
	ids  map[string]bool           // identities with a session here
	nets map[string][]netip.Prefix // accepted networks by identity
	wake chan struct{}             // buffered 1: something changed
}

func newAnnouncer(sp *bgp.Speaker, pool, pool6 state.Leases, log *slog.Logger) *announcer {
	return &announcer{sp: sp, pool: pool, pool6: pool6, log: log,
		ids: map[string]bool{}, nets: map[string][]netip.Prefix{}, wake: make(chan struct{}, 1)}
}

func (a *announcer) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// claim and release are the Directory-like hooks of tunnel.ServerConfig.
func (a *announcer) claim(id string) {
	a.mu.Lock()
	a.ids[id] = true
	a.mu.Unlock()
	a.poke()
}

func (a *announcer) release(id string) {
	a.mu.Lock()
	delete(a.ids, id)
	a.mu.Unlock()
	a.poke()
}

// peers takes the sessions with accepted networks (PeersChanged).
func (a *announcer) peers(list []tunnel.Peer) {
	nets := make(map[string][]netip.Prefix, len(list))
	for _, p := range list {
		if len(p.Nets) > 0 {
			nets[p.Identity] = p.Nets
		}
	}
	a.mu.Lock()
	a.nets = nets
	a.mu.Unlock()
	a.poke()
}

// routes returns what should be announced now.
func (a *announcer) routes() []netip.Prefix {
	a.mu.Lock()
	ids := make([]string, 0, len(a.ids))
	for id := range a.ids {
		ids = append(ids, id)
	}
	var out []netip.Prefix
	for id, nets := range a.nets {
		if a.ids[id] {
			out = append(out, nets...)
		}
	}
	a.mu.Unlock()
	for _, id := range ids {
		for _, pool := range []state.Leases{a.pool, a.pool6} {
			if pool == nil {
				continue
			}
			if addr, ok := pool.Lookup(id); ok {
				out = append(out, netip.PrefixFrom(addr, addr.BitLen()))
			}
		}
	}
	return out
}

// run applies changes until ctx ends; an update that fails is retried.
func (a *announcer) run(ctx context.Context) {
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.wake:
		case <-retry.C:
		}
		if err := a.sp.Set(ctx, a.routes()); err != nil && ctx.Err() == nil {
			a.log.Error("BGP routes not updated; retrying", "err", err)
			retry.Reset(time.Second)
		}
	}
}

// status is the speaker's part of tunneld status.
func (a *announcer) status(ctx context.Context) *control.BGPStatus {
	st := &control.BGPStatus{Routes: len(a.sp.Announced())}
	for _, p := range a.sp.Peers(ctx) {
		st.Peers = append(st.Peers, control.BGPPeer{Peer: p.Peer.String(), State: p.State, Since: p.Since})
	}
	return st
}
