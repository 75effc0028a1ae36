package state

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"net/url"
	"strings"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"tlsvpn/routing"
)

// EtcdLeases are the address leases of one subnet, shared by the fleet.
// An identity's address is kept under two keys written together in one
// transaction, so that neither an address nor an identity is ever leased
// twice:
//
//	PREFIX pools/SUBNET/ids/IDENTITY  ->  ADDRESS
//	PREFIX pools/SUBNET/addrs/ADDRESS ->  IDENTITY
//
// Both are permanent (no etcd lease): an identity keeps its address on
// every gateway and across restarts, as with the file backend. Which
// gateway uses the address now is a third key, the live claim, attached
// to that gateway's etcd lease (see EtcdDirectory), so it goes with the
// gateway while the address stays reserved:
//
//	PREFIX pools/SUBNET/live/ADDRESS  ->  GATEWAY
//
// Every gateway caches the leases (followed by a watch), so a known
// identity gets its address without asking the store, also while the
// store is down; a new identity's lease and a Pin need the store, and are
// refused (ErrStoreUnavailable) while it does not answer.
type EtcdLeases struct {
	e    *Etcd
	pool *routing.Pool // the subnet's address arithmetic; leases nothing
	dir  string        // PREFIX pools/SUBNET/

	mu     sync.Mutex
	byID   map[string]netip.Addr // guarded by mu
	byAddr map[netip.Addr]string // guarded by mu
	next   netip.Addr            // guarded by mu; where the search for a free address starts
}

var _ Leases = (*EtcdLeases)(nil)

// Leases returns the shared leases of subnet, having read them all.
func (e *Etcd) Leases(subnet netip.Prefix) (*EtcdLeases, error) {
	pool, err := routing.NewPool(subnet)
	if err != nil {
		return nil, err
	}
	subnet = pool.Subnet()
	l := &EtcdLeases{e: e, pool: pool,
		dir:  e.prefix + "pools/" + strings.ReplaceAll(subnet.String(), "/", "_") + "/",
		byID: map[string]netip.Addr{}, byAddr: map[netip.Addr]string{}, next: pool.ServerAddr().Next()}
	err = e.follow(l.dir+"addrs/", true, func(kvs []*mvccpb.KeyValue) {
		l.mu.Lock()
		defer l.mu.Unlock()
		clear(l.byID)
		clear(l.byAddr)
		for _, kv := range kvs {
			if a, ok := l.addrOf(string(kv.Key)); ok {
				l.learnLocked(a, string(kv.Value))
			}
		}
	}, func(ev *clientv3.Event) {
		a, ok := l.addrOf(string(ev.Kv.Key))
		if !ok {
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		if ev.Type == clientv3.EventTypeDelete {
			l.forgetLocked(a)
			return
		}
		l.learnLocked(a, string(ev.Kv.Value))
	})
	if err != nil {
		return nil, fmt.Errorf("etcd: reading the leases of %v: %w: %w", subnet, ErrStoreUnavailable, err)
	}
	e.mu.Lock()
	e.pools = append(e.pools, l)
	e.mu.Unlock()
	return l, nil
}

func (l *EtcdLeases) idKey(identity string) string { return l.dir + "ids/" + url.PathEscape(identity) }
func (l *EtcdLeases) addrKey(a netip.Addr) string  { return l.dir + "addrs/" + a.String() }
func (l *EtcdLeases) liveKey(a netip.Addr) string  { return l.dir + "live/" + a.String() }

// addrOf parses the address of an addrs/ key.
func (l *EtcdLeases) addrOf(key string) (netip.Addr, bool) {
	s, ok := strings.CutPrefix(key, l.dir+"addrs/")
	if !ok {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	return a, err == nil && l.pool.IsClientAddr(a)
}

// learnLocked records that a is leased to identity (which holds no
// other address). l.mu is held.
func (l *EtcdLeases) learnLocked(a netip.Addr, identity string) {
	if old, ok := l.byAddr[a]; ok && old != identity && l.byID[old] == a {
		delete(l.byID, old)
	}
	if old, ok := l.byID[identity]; ok && old != a && l.byAddr[old] == identity {
		delete(l.byAddr, old)
	}
	l.byAddr[a] = identity
	l.byID[identity] = a
}

// forgetLocked records that a is leased to nobody. l.mu is held.
func (l *EtcdLeases) forgetLocked(a netip.Addr) {
	if id, ok := l.byAddr[a]; ok {
		delete(l.byAddr, a)
		if l.byID[id] == a {
			delete(l.byID, id)
		}
	}
}

// Subnet is the subnet the addresses come from.
func (l *EtcdLeases) Subnet() netip.Prefix { return l.pool.Subnet() }

// ServerAddr is the gateways' address in the subnet (every gateway of
// the fleet has it on its TUN device).
func (l *EtcdLeases) ServerAddr() netip.Addr { return l.pool.ServerAddr() }

// IsClientAddr reports whether a may be leased.
func (l *EtcdLeases) IsClientAddr(a netip.Addr) bool { return l.pool.IsClientAddr(a) }

// Len is the number of leases known.
func (l *EtcdLeases) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.byID)
}

// Lookup returns identity's address, as last seen in the store.
func (l *EtcdLeases) Lookup(identity string) (netip.Addr, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a, ok := l.byID[identity]
	return a, ok
}

// Owner returns the identity a is leased to, as last seen in the store.
func (l *EtcdLeases) Owner(a netip.Addr) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	id, ok := l.byAddr[a]
	return id, ok
}

// Assign returns identity's address: the one it has (from the cache,
// without asking the store), or a free one leased to it in the store by
// a transaction that succeeds only if neither the identity nor the
// address has a lease (another gateway's concurrent lease of either
// wins, and is used or skipped). A new lease is refused while the store
// is down.
func (l *EtcdLeases) Assign(identity string) (netip.Addr, error) {
	if identity == "" {
		return netip.Addr{}, errors.New("assign address: empty identity")
	}
	if a, ok := l.Lookup(identity); ok {
		return a, nil
	}
	what := fmt.Sprintf("new address for %q from %v", identity, l.Subnet())
	if !l.e.Up() {
		return netip.Addr{}, l.e.refuse(what, nil)
	}
	for range l.pool.Cap() + 1 {
		cand, ok := l.free()
		if !ok {
			return netip.Addr{}, fmt.Errorf("assign address to %q from %v: %w", identity, l.Subnet(), routing.ErrPoolExhausted)
		}
		idKey, addrKey := l.idKey(identity), l.addrKey(cand)
		var resp *clientv3.TxnResponse
		err := l.e.do(func(ctx context.Context) (err error) {
			resp, err = l.e.cli.Txn(ctx).
				If(clientv3.Compare(clientv3.CreateRevision(idKey), "=", 0), clientv3.Compare(clientv3.CreateRevision(addrKey), "=", 0)).
				Then(clientv3.OpPut(idKey, cand.String()), clientv3.OpPut(addrKey, identity)).
				Else(clientv3.OpGet(idKey), clientv3.OpGet(addrKey)).Commit()
			return err
		})
		if err != nil {
			return netip.Addr{}, l.e.refuse(what, err)
		}
		l.mu.Lock()
		if resp.Succeeded {
			l.learnLocked(cand, identity)
			l.next = cand.Next()
			l.mu.Unlock()
			return cand, nil
		}
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			// Another gateway leased identity an address meanwhile.
			a, err := netip.ParseAddr(string(kvs[0].Value))
			if err == nil {
				l.learnLocked(a, identity)
			}
			l.mu.Unlock()
			if err != nil {
				return netip.Addr{}, fmt.Errorf("assign address to %q: the store holds %q: %w", identity, kvs[0].Value, err)
			}
			return a, nil
		}
		if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
			l.learnLocked(cand, string(kvs[0].Value)) // taken: try the next
		} else {
			l.next = cand.Next()
		}
		l.mu.Unlock()
	}
	return netip.Addr{}, fmt.Errorf("assign address to %q from %v: no free address after as many tries as addresses", identity, l.Subnet())
}

// free returns the first address at or after l.next (wrapping around)
// that the cache knows no lease of.
func (l *EtcdLeases) free() (netip.Addr, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.byAddr) >= l.pool.Cap() {
		return netip.Addr{}, false
	}
	first := l.pool.ServerAddr().Next()
	a := l.next
	if !l.pool.IsClientAddr(a) {
		a = first
	}
	for range l.pool.Cap() {
		if _, taken := l.byAddr[a]; !taken {
			return a, true
		}
		if a = a.Next(); !l.pool.IsClientAddr(a) {
			a = first
		}
	}
	return netip.Addr{}, false
}

// Pin leases addr to identity, taking it from its holder (returned) and
// freeing identity's previous address, in one transaction over what it
// read (retried if another gateway changed either meanwhile). It needs
// the store: it is refused while the store is down. Other gateways
// learn the move through their watch; a session of the evicted identity
// on another gateway keeps the address until it reconnects there.
func (l *EtcdLeases) Pin(identity string, addr netip.Addr) (evicted string, err error) {
	if identity == "" {
		return "", errors.New("pin address: empty identity")
	}
	if !l.IsClientAddr(addr) {
		return "", fmt.Errorf("pin %v for %q: not a client address of pool %v", addr, identity, l.Subnet())
	}
	if owner, ok := l.Owner(addr); ok && owner == identity {
		return "", nil
	}
	what := fmt.Sprintf("pin %v for %q", addr, identity)
	idKey, addrKey := l.idKey(identity), l.addrKey(addr)
	for range 10 {
		var cur *clientv3.TxnResponse
		err := l.e.do(func(ctx context.Context) (err error) {
			cur, err = l.e.cli.Txn(ctx).Then(clientv3.OpGet(addrKey), clientv3.OpGet(idKey)).Commit()
			return err
		})
		if err != nil {
			return "", l.e.refuse(what, err)
		}
		var owner string
		var addrRev, idRev int64
		var old netip.Addr
		if kvs := cur.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			owner, addrRev = string(kvs[0].Value), kvs[0].ModRevision
		}
		if kvs := cur.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
			old, _ = netip.ParseAddr(string(kvs[0].Value))
			idRev = kvs[0].ModRevision
		}
		if owner == identity {
			l.mu.Lock()
			l.learnLocked(addr, identity)
			l.mu.Unlock()
			return "", nil
		}
		ops := []clientv3.Op{clientv3.OpPut(addrKey, identity), clientv3.OpPut(idKey, addr.String())}
		if owner != "" {
			ops = append(ops, clientv3.OpDelete(l.idKey(owner)))
		}
		if old.IsValid() && old != addr {
			ops = append(ops, clientv3.OpDelete(l.addrKey(old)))
		}
		var resp *clientv3.TxnResponse
		err = l.e.do(func(ctx context.Context) (err error) {
			resp, err = l.e.cli.Txn(ctx).
				If(clientv3.Compare(clientv3.ModRevision(addrKey), "=", addrRev), clientv3.Compare(clientv3.ModRevision(idKey), "=", idRev)).
				Then(ops...).Commit()
			return err
		})
		if err != nil {
			return "", l.e.refuse(what, err)
		}
		if !resp.Succeeded {
			continue
		}
		l.mu.Lock()
		if old.IsValid() {
			l.forgetLocked(old)
		}
		l.learnLocked(addr, identity)
		l.mu.Unlock()
		return owner, nil
	}
	return "", fmt.Errorf("%s: the leases kept changing; try again", what)
}

// Flush does nothing: every lease is in the store when it is made.
func (l *EtcdLeases) Flush() error { return nil }

// claimLive holds identity's live claim of its address, if it has one.
func (l *EtcdLeases) claimLive(identity string) {
	if a, ok := l.Lookup(identity); ok {
		l.e.live.set(l.liveKey(a), l.e.gateway, nil)
	}
}

// releaseLive lets identity's live claim go.
func (l *EtcdLeases) releaseLive(identity string) {
	if a, ok := l.Lookup(identity); ok {
		l.e.live.drop(l.liveKey(a))
	}
}

// LiveClaim returns the gateway whose live claim a has, read from the
// store now.
func (l *EtcdLeases) LiveClaim(a netip.Addr) (gateway string, ok bool, err error) {
	ctx, cancel := l.e.reqCtx()
	defer cancel()
	resp, err := l.e.cli.Get(ctx, l.liveKey(a))
	if err != nil {
		return "", false, err
	}
	if len(resp.Kvs) == 0 {
		return "", false, nil
	}
	return string(resp.Kvs[0].Value), true, nil
}

// EtcdDirectory is the fleet's session directory: which gateway holds
// each identity's session, one key per identity attached to the holding
// gateway's etcd lease:
//
//	PREFIX sessions/IDENTITY -> GATEWAY
//
// A Claim writes the key (a new session wins over older ones); every
// gateway follows the keys with a watch, and a gateway whose claim is
// overwritten by another's closes its session there (OnReplaced): one
// session per identity across the fleet. A Release deletes the key only
// if it is still this gateway's. Claims and releases are written in the
// background and survive an outage of the store (written when it is
// back; a claim another gateway made meanwhile wins).
type EtcdDirectory struct {
	e   *Etcd
	dir string // PREFIX sessions/

	mu       sync.Mutex
	holders  map[string]string              // guarded by mu; identity -> gateway, as last seen
	replaced func(identity, gateway string) // guarded by mu
}

var _ Directory = (*EtcdDirectory)(nil)

// Directory returns the fleet's session directory, having read it.
func (e *Etcd) Directory() (*EtcdDirectory, error) {
	e.mu.Lock()
	if e.dir != nil {
		e.mu.Unlock()
		return e.dir, nil
	}
	e.mu.Unlock()
	d := &EtcdDirectory{e: e, dir: e.prefix + "sessions/", holders: map[string]string{}}
	err := e.follow(d.dir, true, func(kvs []*mvccpb.KeyValue) {
		d.mu.Lock()
		clear(d.holders)
		for _, kv := range kvs {
			if id, ok := d.identityOf(string(kv.Key)); ok {
				d.holders[id] = string(kv.Value)
			}
		}
		d.mu.Unlock()
		for _, kv := range kvs {
			e.live.observe(string(kv.Key), string(kv.Value), kv.ModRevision)
		}
	}, func(ev *clientv3.Event) {
		id, ok := d.identityOf(string(ev.Kv.Key))
		if !ok {
			return
		}
		d.mu.Lock()
		if ev.Type == clientv3.EventTypeDelete {
			if e.live.held(string(ev.Kv.Key)) {
				d.holders[id] = e.gateway // gone with an old lease; written again
			} else {
				delete(d.holders, id)
			}
			d.mu.Unlock()
			return
		}
		d.holders[id] = string(ev.Kv.Value)
		d.mu.Unlock()
		e.live.observe(string(ev.Kv.Key), string(ev.Kv.Value), ev.Kv.ModRevision)
	})
	if err != nil {
		return nil, fmt.Errorf("etcd: reading the session directory: %w: %w", ErrStoreUnavailable, err)
	}
	e.mu.Lock()
	e.dir = d
	e.mu.Unlock()
	return d, nil
}

func (d *EtcdDirectory) key(identity string) string { return d.dir + url.PathEscape(identity) }

func (d *EtcdDirectory) identityOf(key string) (string, bool) {
	s, ok := strings.CutPrefix(key, d.dir)
	if !ok {
		return "", false
	}
	id, err := url.PathUnescape(s)
	return id, err == nil
}

// OnReplaced sets what is called (from a watch's goroutine; it must not
// block for long) when another gateway claims an identity this gateway
// holds: the gateway closes its session with "replaced".
func (d *EtcdDirectory) OnReplaced(f func(identity, gateway string)) {
	d.mu.Lock()
	d.replaced = f
	d.mu.Unlock()
}

// Claim records that this gateway holds identity's session, with its
// live address claims. It does not block.
func (d *EtcdDirectory) Claim(identity string) {
	d.mu.Lock()
	d.holders[identity] = d.e.gateway
	d.mu.Unlock()
	d.e.live.set(d.key(identity), d.e.gateway, func(by string) {
		d.e.log.Info("session claimed by another gateway: closing it here", "peer", identity, "gateway", by)
		d.e.forEachPool(func(l *EtcdLeases) { l.releaseLive(identity) })
		d.mu.Lock()
		f := d.replaced
		d.mu.Unlock()
		if f != nil {
			f(identity, by)
		}
	})
	d.e.forEachPool(func(l *EtcdLeases) { l.claimLive(identity) })
}

// Release records that identity's session here ended; the key is
// deleted only if it is still this gateway's. It does not block.
func (d *EtcdDirectory) Release(identity string) {
	d.mu.Lock()
	if d.holders[identity] == d.e.gateway {
		delete(d.holders, identity)
	}
	d.mu.Unlock()
	d.e.live.drop(d.key(identity))
	d.e.forEachPool(func(l *EtcdLeases) { l.releaseLive(identity) })
}

// Holder returns the gateway holding identity's session, as last seen.
func (d *EtcdDirectory) Holder(identity string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	g, ok := d.holders[identity]
	return g, ok
}

// Len is the number of identities held across the fleet, as last seen.
func (d *EtcdDirectory) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.holders)
}

// PerGateway counts the identities each gateway holds, as last seen.
func (d *EtcdDirectory) PerGateway() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]int{}
	for _, g := range d.holders {
		out[g]++
	}
	return out
}

// Holders returns the gateway holding each identity's session, as last
// seen: a copy, by identity.
func (d *EtcdDirectory) Holders() map[string]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.holders)
}

// forEachPool calls f with each of the gateway's leases.
func (e *Etcd) forEachPool(f func(*EtcdLeases)) {
	e.mu.Lock()
	pools := append([]*EtcdLeases(nil), e.pools...)
	e.mu.Unlock()
	for _, l := range pools {
		f(l)
	}
}
