package server

// The clients policy of a fleet (state: etcd): published in etcd with
// 'tunneld fleet publish-clients', followed by every gateway, which
// applies each new version as a reload applies a changed --clients file
// (only clients whose own entry changed reconnect). While a policy is
// published it is the one in force, and a local clients/--clients is
// ignored (with a warning); when none is published (or it is deleted),
// the local one is in force, as on a gateway of its own.

import (
	"errors"
	"fmt"

	"tlsvpn/state"
)

// fleetPolicy is the fleet's clients policy as this gateway applies it.
type fleetPolicy struct {
	follow *state.EtcdPolicy                                             // immutable
	parse  func(data []byte, pool, pool6 state.Leases) (Policies, error) // immutable

	// Guarded by the reloader's mu (set in New before the reloader runs).
	rev     int64    // revision in force; 0: none, the local policy is
	clients Policies // the published policy in force, when rev != 0
	badRev  int64    // a revision refused, not to be logged twice
}

// openPolicy follows the fleet's clients policy; parse validates a
// published one (Config.ParsePolicy).
func (f *fleet) openPolicy(parse func([]byte, state.Leases, state.Leases) (Policies, error)) (*fleetPolicy, error) {
	p, err := f.store.Policy()
	if err != nil {
		return nil, fmt.Errorf("state etcd: %w", err)
	}
	return &fleetPolicy{follow: p, parse: parse}, nil
}

// source names a published revision of the policy, for logs and reload
// reports.
func (p *fleetPolicy) source(rev int64) string {
	return fmt.Sprintf("etcd:%s (revision %d)", p.follow.Key(), rev)
}

// read parses the policy published now against the pools: its revision
// (0 if none is published) and policies.
func (p *fleetPolicy) read(pool, pool6 state.Leases) (Policies, int64, error) {
	data, rev := p.follow.Current()
	if rev == 0 {
		return nil, 0, nil
	}
	if p.parse == nil {
		return nil, rev, errors.New("this gateway cannot read a clients policy from etcd")
	}
	clients, err := p.parse(data, pool, pool6)
	if err != nil {
		return nil, rev, fmt.Errorf("clients policy published in %s: %w", p.source(rev), err)
	}
	return clients, rev, nil
}

// inForce returns the published policy in force, if one is.
func (p *fleetPolicy) inForce() (Policies, bool) {
	if p == nil || p.rev == 0 {
		return nil, false
	}
	return p.clients, true
}

// startPolicy returns the clients policy a gateway starts with: the
// fleet's if one is published (refusing to start if it does not
// validate here: there is no older one to keep), else the local one
// (cfg.Policy), and where it comes from.
func (s *Server) startPolicy(cfg Config) (Policies, string, error) {
	if s.fleet != nil {
		fp, err := s.fleet.openPolicy(cfg.ParsePolicy)
		if err != nil {
			return nil, "", err
		}
		s.fleet.policy = fp
		clients, rev, err := fp.read(s.pool, s.pool6)
		if err != nil {
			return nil, "", fmt.Errorf("%w; publish a policy that validates with 'tunneld fleet publish-clients'", err)
		}
		if rev != 0 {
			fp.rev, fp.clients = rev, clients
			if cfg.Policy != nil {
				s.log.Warn("the fleet's clients policy is published in etcd: the local clients policy is ignored", "ignored", cfg.PolicySource, "policy", fp.source(rev))
			}
			return clients, fp.source(rev), nil
		}
	}
	if cfg.Policy == nil {
		return nil, "", nil
	}
	clients, err := cfg.Policy(s.pool, s.pool6)
	return clients, cfg.PolicySource, err
}

// policyNews receives when the fleet's published policy may have
// changed; nil (never) without a fleet.
func (r *reloader) policyNews() <-chan struct{} {
	if r.fleetPolicy == nil {
		return nil
	}
	return r.fleetPolicy.follow.Changed()
}

// fleetPolicyChanged applies the fleet's clients policy as published
// now, as a reload applies a changed --clients file: a policy that does
// not validate here keeps the one in force, and says why; when the
// policy is deleted from etcd, the local one (if any) is in force again.
func (r *reloader) fleetPolicyChanged() {
	r.mu.Lock()
	defer r.mu.Unlock()
	fp := r.fleetPolicy
	clients, rev, err := fp.read(r.pool, r.pool6)
	switch {
	case rev == fp.rev:
		return // no news
	case err != nil:
		if rev != fp.badRev {
			r.log.Error("clients policy published in etcd does not validate on this gateway: keeping the policy in force", "err", err)
			fp.badRev = rev
		}
		return
	case rev == 0:
		fp.rev, fp.clients = 0, nil
		source := "no policy"
		if r.cur.Policy != nil {
			if clients, err = r.cur.Policy(r.pool, r.pool6); err != nil {
				r.log.Error("clients policy deleted from etcd, and the local one does not validate: keeping the fleet's last policy until a reload", "err", err)
				return
			}
			source = r.cur.PolicySource
		}
		r.log.Warn("clients policy deleted from etcd: the local one is in force", "policy", source)
		r.applyPolicyLocked(clients, r.cur.ClientToClient, source)
		return
	}
	fp.rev, fp.clients = rev, clients
	r.applyPolicyLocked(clients, r.cur.ClientToClient, fp.source(rev))
}
