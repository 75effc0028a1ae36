package server

import (
	"maps"
	"net/netip"
	"slices"

	"tlsvpn/state"
	"tlsvpn/tunnel"
)

// ClientPolicy is one client's entry in the clients policy (tunneld
// --clients).
type ClientPolicy struct {
	Addr, Addr6 netip.Addr     // fixed tunnel addresses (invalid: from the pool)
	Routes      []netip.Prefix // nil: not given (Config.Routes apply); empty: push none
	Advertise   []netip.Prefix // networks the client may announce
	Reach       *bool          // reach_clients; nil: Config.ClientToClient
}

// Policies is a clients policy, by certificate name.
type Policies map[string]ClientPolicy

// Policy returns the tunnel.Policy of identity, with reach as the default
// for reach_clients.
func (c Policies) Policy(identity string, reach bool) tunnel.Policy {
	e, ok := c[identity]
	if !ok {
		return tunnel.Policy{ReachClients: reach}
	}
	p := tunnel.Policy{Routes: e.Routes, Advertise: e.Advertise, ReachClients: reach}
	if e.Reach != nil {
		p.ReachClients = *e.Reach
	}
	return p
}

// Pin leases each configured address to its client, taking it from any
// client that held it dynamically; it returns the identities whose
// address changed (their live sessions must reconnect). pool6 is nil
// without an IPv6 pool.
func (c Policies) Pin(pool, pool6 state.Leases) ([]string, error) {
	var moved []string
	for _, id := range slices.Sorted(maps.Keys(c)) {
		e := c[id]
		for _, pin := range []struct {
			p state.Leases
			a netip.Addr
		}{{pool, e.Addr}, {pool6, e.Addr6}} {
			if !pin.a.IsValid() || pin.p == nil {
				continue
			}
			before, _ := pin.p.Lookup(id)
			evicted, err := pin.p.Pin(id, pin.a)
			if err != nil {
				return moved, err
			}
			if before.IsValid() && before != pin.a {
				moved = append(moved, id)
			}
			if evicted != "" {
				moved = append(moved, evicted)
			}
		}
	}
	slices.Sort(moved)
	return slices.Compact(moved), nil
}

// policySet is the clients policy in force and the default of
// reach_clients (ClientToClient).
type policySet struct {
	clients Policies
	reach   bool
}

func (p *policySet) policy(id string) tunnel.Policy { return p.clients.Policy(id, p.reach) }
