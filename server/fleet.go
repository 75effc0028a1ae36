package server

// A gateway of a fleet (Config.State "etcd"): its address leases, session
// directory, revocation list and session ticket keys are shared with the
// other gateways through etcd (package state's etcd backend). See
// docs/FLEET.md.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"tlsvpn/certs"
	"tlsvpn/control"
	"tlsvpn/internal/service"
	"tlsvpn/state"
	"tlsvpn/tunnel"
)

// State backends of Config.State.
const (
	StateFile = "file" // one gateway on its own (the default; "" too)
	StateEtcd = "etcd" // a fleet sharing its state through etcd
)

// fleetTicketKeyCheck is how often a gateway of a fleet takes up the
// ticket keys the rotating gateway wrote: a rotation reaches every
// gateway within it.
const fleetTicketKeyCheck = 5 * time.Second

// fleetStartTimeout bounds the wait for the store at start (the first
// ticket keys included).
const fleetStartTimeout = 15 * time.Second

// fleet is a gateway's share of the fleet's state.
type fleet struct {
	store     *state.Etcd
	endpoints []string
	dir       *state.EtcdDirectory
	tickets   *state.EtcdTicketKeys
	policy    *fleetPolicy // the clients policy in etcd; set by startPolicy
}

// validateFleet refuses fleet settings that cannot run.
func (c Config) validateFleet() error {
	switch c.State {
	case "", StateFile:
		return nil
	case StateEtcd:
	default:
		return fmt.Errorf("state %q: want file or etcd", c.State)
	}
	var errs []error
	if len(c.Etcd.Endpoints) == 0 {
		errs = append(errs, errors.New("state etcd: etcd-endpoints required"))
	}
	if c.Etcd.Gateway == "" {
		errs = append(errs, errors.New("state etcd: gateway-name required"))
	}
	if c.CRL != "" {
		errs = append(errs, errors.New("state etcd: the fleet's CRL is published in etcd ('tunneld fleet publish-crl'), not read from --crl"))
	}
	return errors.Join(errs...)
}

// openFleet connects to the fleet's store with cfg's settings, reads the
// directory and waits for the shared ticket keys. nil, nil without
// state: etcd.
func openFleet(ctx context.Context, cfg Config, log *slog.Logger) (*fleet, error) {
	if cfg.State != StateEtcd {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, fleetStartTimeout)
	defer cancel()
	opts := cfg.Etcd
	opts.Logger = log
	store, err := state.OpenEtcd(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("state etcd: %w", err)
	}
	f := &fleet{store: store, endpoints: opts.Endpoints}
	if f.dir, err = store.Directory(); err == nil {
		f.tickets, err = store.TicketKeys()
	}
	if err == nil {
		_, err = f.tickets.WaitKeys(ctx)
	}
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("state etcd: %w", err)
	}
	log.Info("fleet state in etcd", "gateway", store.Gateway(), "endpoints", opts.Endpoints, "prefix", store.Prefix(), "fleet_sessions", f.dir.Len())
	return f, nil
}

// leases returns the fleet's leases of subnet.
func (f *fleet) leases(subnet netip.Prefix) (state.Leases, error) {
	l, err := f.store.Leases(subnet)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// revocation returns the checker of the CRL published in etcd, signed by
// the CA in caFile.
func (f *fleet) revocation(caFile string) (state.Revocation, error) {
	ca, err := certs.LoadCACert(caFile)
	if err != nil {
		return nil, err
	}
	rev, err := f.store.Revocation(ca)
	if err != nil {
		return nil, fmt.Errorf("state etcd: %w", err)
	}
	return rev, nil
}

// status is the store's part of 'tunneld status'.
func (f *fleet) status() *control.StoreStatus {
	h := f.store.Health()
	st := &control.StoreStatus{Backend: StateEtcd, Gateway: f.store.Gateway(), Endpoints: f.endpoints,
		Up: h.Up, Since: h.Since, Error: h.Err, Refusals: h.Refusals, LeaseLost: h.LeaseLost, FleetSessions: f.dir.Len()}
	held := f.dir.PerGateway()
	for _, g := range f.store.Gateways() {
		st.Gateways = append(st.Gateways, control.FleetGateway{Name: g, Sessions: held[g]})
	}
	return st
}

// gauges are the store's metrics.
func (f *fleet) gauges() []service.Gauge {
	return []service.Gauge{
		{Name: "store_up", Help: "1 while the fleet's state store (etcd) answers, else 0.", Value: func() float64 {
			if f.store.Up() {
				return 1
			}
			return 0
		}},
		{Name: "store_refusals_total", Counter: true, Help: "New clients and address moves refused because the state store was unreachable.",
			Value: func() float64 { return float64(f.store.Health().Refusals) }},
		{Name: "store_lease_lost_total", Counter: true, Help: "Times the gateway's etcd lease expired during an outage and its claims were written again.",
			Value: func() float64 { return float64(f.store.Health().LeaseLost) }},
		{Name: "fleet_sessions", Help: "Identities with a session on any gateway of the fleet, as last seen in the store.",
			Value: func() float64 { return float64(f.dir.Len()) }},
	}
}

// replaceOnOtherGateway has srv close a session another gateway took over.
func (f *fleet) replaceOnOtherGateway(srv *tunnel.Server) {
	f.dir.OnReplaced(func(identity, gateway string) {
		srv.Replace(identity, "replaced by a new session on gateway "+gateway)
	})
}
