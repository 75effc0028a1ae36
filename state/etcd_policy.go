package state

// The fleet's clients policy in etcd:
//
//	PREFIX clients -> the policy's YAML, as 'tunneld fleet publish-clients' read it
//
// The store keeps the bytes only: the policy is parsed and validated by
// whoever publishes it and again by every gateway (against its own
// address pools) before it applies it, as a reload of a --clients file.

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// MaxPolicySize bounds a published clients policy: etcd refuses requests
// over 1.5 MiB by default, and a policy of 10,000 clients is far smaller.
const MaxPolicySize = 1 << 20

// policyKey is where the fleet's clients policy is published.
func policyKey(prefix string) string { return cleanPrefix(prefix) + "clients" }

// EtcdPolicy follows the clients policy published for the fleet.
type EtcdPolicy struct {
	key     string        // immutable
	changed chan struct{} // see Changed

	mu   sync.Mutex
	data []byte // guarded by mu; the published policy
	rev  int64  // guarded by mu; its etcd revision, 0: none published
}

// Policy returns the fleet's clients policy, having read it, followed by
// a watch.
func (e *Etcd) Policy() (*EtcdPolicy, error) {
	p := &EtcdPolicy{key: policyKey(e.prefix), changed: make(chan struct{}, 1)}
	set := func(kv *mvccpb.KeyValue) {
		p.mu.Lock()
		p.data, p.rev = nil, 0
		if kv != nil {
			p.data, p.rev = kv.Value, kv.ModRevision
		}
		p.mu.Unlock()
		select {
		case p.changed <- struct{}{}:
		default: // news pending already
		}
	}
	err := e.follow(p.key, false, func(kvs []*mvccpb.KeyValue) {
		if len(kvs) == 0 {
			set(nil)
			return
		}
		set(kvs[0])
	}, func(ev *clientv3.Event) {
		if ev.Type == clientv3.EventTypeDelete {
			set(nil)
			return
		}
		set(ev.Kv)
	})
	if err != nil {
		return nil, fmt.Errorf("etcd: reading the clients policy: %w: %w", ErrStoreUnavailable, err)
	}
	return p, nil
}

// Current returns the published policy and its revision, which changes
// with every publication; rev 0: none is published.
func (p *EtcdPolicy) Current() (data []byte, rev int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.data, p.rev
}

// Changed receives (at most one pending value) when the published policy
// may have changed: compare Current's revision with the one applied.
func (p *EtcdPolicy) Changed() <-chan struct{} { return p.changed }

// Key is the policy's key, for logs and status.
func (p *EtcdPolicy) Key() string { return p.key }

// PublishPolicy writes the clients policy data (already validated by the
// caller, as a gateway will validate it) for the fleet whose keys start
// with prefix ("": DefaultEtcdPrefix), and returns its revision.
func PublishPolicy(ctx context.Context, cli *clientv3.Client, prefix string, data []byte) (rev int64, err error) {
	if len(data) > MaxPolicySize {
		return 0, fmt.Errorf("the policy is %d bytes, more than the %d a policy in etcd may have", len(data), MaxPolicySize)
	}
	if data == nil {
		return 0, errors.New("no policy to publish")
	}
	resp, err := cli.Put(ctx, policyKey(prefix), string(data))
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
	}
	return resp.Header.Revision, nil
}

// PolicyKey is the key of the clients policy of the fleet whose keys
// start with prefix ("": DefaultEtcdPrefix).
func PolicyKey(prefix string) string { return policyKey(prefix) }
