package server

// 'tunneld clients --fleet': every identity with a session on some
// gateway of the fleet, from the session directory in etcd.

import (
	"errors"
	"maps"
	"slices"

	"tlsvpn/control"
	"tlsvpn/state"
)

// sessions lists the fleet's sessions as this gateway last saw the
// directory, by identity, with their leased addresses (pool6 nil
// without an IPv6 pool).
func (f *fleet) sessions(pool, pool6 state.Leases) []control.FleetSession {
	holders := f.dir.Holders()
	out := make([]control.FleetSession, 0, len(holders))
	for _, id := range slices.Sorted(maps.Keys(holders)) {
		s := control.FleetSession{Identity: id, Gateway: holders[id], Here: holders[id] == f.store.Gateway()}
		for _, p := range []state.Leases{pool, pool6} {
			if p == nil {
				continue
			}
			if a, ok := p.Lookup(id); ok {
				s.Addresses = append(s.Addresses, a)
			}
		}
		out = append(out, s)
	}
	return out
}

// fleetClients answers 'tunneld clients --fleet'.
func (c *controlSource) fleetClients() (any, error) {
	if c.fleetSessions == nil {
		return nil, errors.New("clients --fleet: this gateway is not in a fleet (state: etcd); 'tunneld clients' lists its sessions")
	}
	return c.fleetSessions(), nil
}
