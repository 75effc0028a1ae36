package state

import (
	"errors"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// quietZap is the etcd client's own logger: none. Its retries during an
// outage would flood the log; Etcd reports the store's health itself.
func quietZap() *zap.Logger { return zap.NewNop() }

// liveKeys are the keys a gateway holds under its etcd lease while it
// runs (its directory entries, its live address claims, its own entry),
// written by one goroutine so that callers never wait for the store. A
// key is first written unconditionally (a new claim wins over older
// ones); later rewrites (a new lease after an outage) only replace the
// gateway's own value or an absent key: a key another gateway wrote
// meanwhile is lost, and onLost is told.
type liveKeys struct {
	e    *Etcd
	kick chan struct{}

	mu      sync.Mutex
	keys    map[string]*liveKey // guarded by mu; what the gateway holds
	pending map[string]liveOp   // guarded by mu; what is still to write
}

// liveKey is one held key.
type liveKey struct {
	val string
	// rev is the revision of the gateway's last write of the key (0:
	// not written yet); a rewrite is made only over it.
	rev int64
	// other is the highest revision at which another gateway was seen to
	// write the key while the gateway's own write was pending.
	other  int64
	onLost func(by string) // nil: nobody to tell
}

// liveOp is a write to make: put the held value, or delete val if the
// key still holds it.
type liveOp struct {
	put bool
	val string // for a delete
}

func newLiveKeys(e *Etcd) *liveKeys {
	return &liveKeys{e: e, kick: make(chan struct{}, 1), keys: map[string]*liveKey{}, pending: map[string]liveOp{}}
}

func (l *liveKeys) wake() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// set holds key with val; onLost is told if another gateway takes it.
// It does not block.
func (l *liveKeys) set(key, val string, onLost func(by string)) {
	l.mu.Lock()
	if k := l.keys[key]; k != nil && k.val == val && k.rev != 0 {
		l.mu.Unlock()
		return // held and written already
	}
	l.keys[key] = &liveKey{val: val, onLost: onLost}
	l.pending[key] = liveOp{put: true}
	l.mu.Unlock()
	l.wake()
}

// drop lets key go: it is deleted if it still holds the gateway's value.
// It does not block.
func (l *liveKeys) drop(key string) {
	l.mu.Lock()
	k := l.keys[key]
	if k == nil {
		l.mu.Unlock()
		return
	}
	delete(l.keys, key)
	l.pending[key] = liveOp{val: k.val}
	l.mu.Unlock()
	l.wake()
}

// held reports whether the gateway holds key.
func (l *liveKeys) held(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.keys[key] != nil
}

// rewriteAll has every held key written again (under a new lease).
func (l *liveKeys) rewriteAll() {
	l.mu.Lock()
	for key := range l.keys {
		l.pending[key] = liveOp{put: true}
	}
	l.mu.Unlock()
	l.wake()
}

// observe is told by a watch that the key holds val since rev (val ""
// for a deletion). Another gateway's write after the gateway's own
// loses the key; one during the gateway's pending write is kept in mind
// until that write's revision is known.
func (l *liveKeys) observe(key, val string, rev int64) {
	l.mu.Lock()
	k := l.keys[key]
	if k == nil || val == "" || val == k.val {
		l.mu.Unlock()
		return
	}
	if k.rev == 0 {
		k.other = max(k.other, rev)
		l.mu.Unlock()
		return
	}
	if rev <= k.rev {
		l.mu.Unlock()
		return
	}
	l.loseLocked(key, k, val)
}

// loseLocked forgets key, taken by another gateway (by), and tells its
// onLost. l.mu is held; it is released.
func (l *liveKeys) loseLocked(key string, k *liveKey, by string) {
	delete(l.keys, key)
	delete(l.pending, key)
	l.mu.Unlock()
	if k.onLost != nil {
		k.onLost(by)
	}
}

// run writes what is pending until the Etcd closes, retrying (with a
// growing pause) while the store does not answer.
func (l *liveKeys) run() {
	defer l.e.wg.Done()
	wait := 100 * time.Millisecond
	for {
		select {
		case <-l.e.ctx.Done():
			return
		case <-l.kick:
		}
		for l.e.ctx.Err() == nil {
			l.mu.Lock()
			ops := l.pending
			l.pending = map[string]liveOp{}
			l.mu.Unlock()
			if len(ops) == 0 {
				break
			}
			failed := false
			for key, op := range ops {
				if failed || !l.write(key, op) {
					failed = true
					l.mu.Lock()
					if _, newer := l.pending[key]; !newer {
						l.pending[key] = op
					}
					l.mu.Unlock()
				}
			}
			if !failed {
				wait = 100 * time.Millisecond
				continue
			}
			select {
			case <-l.e.ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, 2*time.Second)
		}
	}
}

// write makes one write; false if the store did not answer.
func (l *liveKeys) write(key string, op liveOp) bool {
	ctx, cancel := l.e.reqCtx()
	defer cancel()
	if !op.put {
		_, err := l.e.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(key), "=", op.val)).
			Then(clientv3.OpDelete(key)).Commit()
		return l.result(err)
	}
	l.mu.Lock()
	k := l.keys[key]
	if k == nil {
		l.mu.Unlock()
		return true // dropped meanwhile
	}
	val, rev := k.val, k.rev
	l.mu.Unlock()
	lease := clientv3.LeaseID(l.e.lease.Load())
	put := clientv3.OpPut(key, val, clientv3.WithLease(lease))
	if rev == 0 {
		resp, err := l.e.cli.Put(ctx, key, val, clientv3.WithLease(lease))
		if !l.result(err) {
			return false
		}
		if err != nil {
			return true // a lost lease: rewritten under the next
		}
		l.wrote(key, k, resp.Header.Revision)
		return true
	}
	// A rewrite: only over the gateway's own last write, or an absent
	// key (the old lease expired and took it).
	for range 3 {
		resp, err := l.e.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(put).Else(clientv3.OpGet(key)).Commit()
		if !l.result(err) {
			return false
		}
		if err != nil {
			return true
		}
		if resp.Succeeded {
			l.wrote(key, k, resp.Header.Revision)
			return true
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		switch {
		case len(kvs) == 0:
			rev = 0 // absent: write it anew over nothing
		case string(kvs[0].Value) == val:
			rev = kvs[0].ModRevision // the gateway's own, under an old lease
		default:
			l.mu.Lock()
			if l.keys[key] != k {
				l.mu.Unlock()
				return true
			}
			l.loseLocked(key, k, string(kvs[0].Value))
			return true
		}
	}
	return true
}

// wrote records the revision of the gateway's write of key (held as k),
// and loses the key if another gateway wrote it after that.
func (l *liveKeys) wrote(key string, k *liveKey, rev int64) {
	l.mu.Lock()
	if l.keys[key] != k {
		l.mu.Unlock()
		return
	}
	k.rev = rev
	if k.other > rev {
		l.mu.Unlock()
		l.check(key, k)
		return
	}
	l.mu.Unlock()
}

// check reads key and loses it if another gateway holds it now.
func (l *liveKeys) check(key string, k *liveKey) {
	ctx, cancel := l.e.reqCtx()
	defer cancel()
	resp, err := l.e.cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) == 0 {
		return
	}
	l.observe(key, string(resp.Kvs[0].Value), resp.Kvs[0].ModRevision)
}

// result sorts a write's error: true if the store answered (err nil,
// or a lost lease, which is granted anew), false if it did not.
func (l *liveKeys) result(err error) bool {
	if err == nil {
		l.e.ok()
		return true
	}
	if isLeaseGone(err) {
		l.e.noteLeaseError(err)
		l.e.ok()
		return true
	}
	l.e.fail(err)
	return false
}

// isLeaseGone reports whether err says the lease no longer exists.
func isLeaseGone(err error) bool { return errors.Is(err, rpctypes.ErrLeaseNotFound) }
