package state

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"tlsvpn/certs"
)

// crlKey is where the fleet's CRL is published.
func (e *Etcd) crlKey() string { return e.prefix + "crl" }

// errCRLNotPublished is the read error of a CRL key that holds nothing.
var errCRLNotPublished = errors.New("no CRL published in etcd: publish one with 'tunneld fleet publish-crl'")

// Revocation returns the fleet's revocation checker: the CRL published at
// PREFIX crl (PEM, signed by ca, as 'tunneld pki' writes it), followed by
// a watch. It is the file backend's checker (certs.Revocation) reading
// the key instead of a file, so it checks and fails closed exactly as it
// does: an unpublished, unparsable, wrongly signed, expired or older CRL
// refuses every client. While the store is down the CRL last read stays
// in force until it expires. The server's periodic check
// (ReloadIfChanged, every --crl-check) picks up a new one and closes the
// sessions it revokes.
func (e *Etcd) Revocation(ca *x509.Certificate) (*certs.Revocation, error) {
	key := e.crlKey()
	var mu sync.Mutex
	var data []byte // nil: not published
	err := e.follow(key, false, func(kvs []*mvccpb.KeyValue) {
		mu.Lock()
		data = nil
		if len(kvs) > 0 {
			data = kvs[0].Value
		}
		mu.Unlock()
	}, func(ev *clientv3.Event) {
		mu.Lock()
		data = nil
		if ev.Type == clientv3.EventTypePut {
			data = ev.Kv.Value
		}
		mu.Unlock()
		select {
		case e.crlChanged <- struct{}{}:
		default: // a check is due already
		}
	})
	if err != nil {
		return nil, fmt.Errorf("etcd: reading the CRL: %w: %w", ErrStoreUnavailable, err)
	}
	read := func(string) ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		if data == nil {
			return nil, errCRLNotPublished
		}
		return data, nil
	}
	return certs.NewRevocation("etcd:"+key, ca, certs.RevocationOptions{ReadFile: read})
}

// CRLChanged receives when the published CRL changes, so that the
// gateway checks its sessions at once (Revocation.ReloadIfChanged).
func (e *Etcd) CRLChanged() <-chan struct{} { return e.crlChanged }

// PublishCRL publishes the CRL in pem (as 'tunneld pki revoke' or 'crl'
// writes it) for the fleet, after checking it as every gateway will:
// signed by ca, not expired, and not older (by CRL number) than the one
// published. It returns the CRL published.
func (e *Etcd) PublishCRL(ctx context.Context, pem []byte, ca *x509.Certificate) (*certs.CRL, error) {
	return PublishCRL(ctx, e.cli, e.prefix, pem, ca)
}

// PublishCRL is Etcd.PublishCRL through a client of the cluster, for the
// fleet whose keys start with prefix ("": DefaultEtcdPrefix).
func PublishCRL(ctx context.Context, cli *clientv3.Client, prefix string, pem []byte, ca *x509.Certificate) (*certs.CRL, error) {
	key := cleanPrefix(prefix) + "crl"
	check := func(b []byte) (*certs.CRL, error) {
		r, err := certs.NewRevocation("etcd:"+key, ca, certs.RevocationOptions{ReadFile: func(string) ([]byte, error) { return b, nil }})
		if err != nil {
			return nil, err
		}
		return r.Current()
	}
	crl, err := check(pem)
	if err != nil {
		return nil, err
	}
	for range 5 {
		cur, err := cli.Get(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
		}
		var rev int64
		if len(cur.Kvs) > 0 {
			rev = cur.Kvs[0].ModRevision
			if old, err := check(cur.Kvs[0].Value); err == nil && numberBelow(crl.List.Number, old.List.Number) {
				return nil, fmt.Errorf("this CRL has number %v, older than number %v published: publish the current crl.pem", crl.List.Number, old.List.Number)
			}
		}
		resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(clientv3.OpPut(key, string(pem))).Commit()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
		}
		if resp.Succeeded {
			return crl, nil
		}
	}
	return nil, errors.New("the published CRL kept changing; try again")
}

// numberBelow reports whether CRL number n is older than m (a missing
// number is older than any).
func numberBelow(n, m *big.Int) bool {
	return m != nil && (n == nil || n.Cmp(m) < 0)
}

// EtcdTicketKeys are the fleet's TLS session ticket keys, one set shared
// by every gateway so that a client resumes on any of them:
//
//	PREFIX tickets -> {"keys":[{"key":BASE64,"created":TIME},...]}, newest first
//
// One gateway at a time (the leader of an etcd election at PREFIX
// tickets-leader) rotates them on the schedule of TicketKeysOptions; every
// gateway follows the key with a watch and seals with the newest key it
// has. The keys are held in memory and in etcd, never written to a
// gateway's disk (etcd's own data directory holds them: see
// docs/FLEET.md).
type EtcdTicketKeys struct {
	e   *Etcd
	key string

	mu   sync.Mutex
	keys []ticketKey // guarded by mu; newest first, as last read
	set  [][32]byte  // guarded by mu; keys' bytes, as Keys returns them
	cond *sync.Cond  // signalled when keys change
}

var _ TicketKeys = (*EtcdTicketKeys)(nil)

// storedKeys is the JSON of the tickets key.
type storedKeys struct {
	Keys []storedKey `json:"keys"`
}

type storedKey struct {
	Key     []byte    `json:"key"`
	Created time.Time `json:"created"`
}

// TicketKeys returns the fleet's ticket keys, having read them, and
// joins the election of the gateway that rotates them. Keys fails until
// a first set is in the store: WaitKeys waits for it.
func (e *Etcd) TicketKeys() (*EtcdTicketKeys, error) {
	e.mu.Lock()
	if e.tickets != nil {
		e.mu.Unlock()
		return e.tickets, nil
	}
	e.mu.Unlock()
	k := &EtcdTicketKeys{e: e, key: e.prefix + "tickets"}
	k.cond = sync.NewCond(&k.mu)
	load := func(v []byte) {
		var st storedKeys
		if v != nil {
			if err := json.Unmarshal(v, &st); err != nil {
				e.log.Error("session ticket keys in etcd unreadable: keeping those in force", "err", err)
				return
			}
		}
		keys := make([]ticketKey, 0, len(st.Keys))
		for _, sk := range st.Keys {
			if len(sk.Key) != 32 {
				continue
			}
			var tk ticketKey
			copy(tk.key[:], sk.Key)
			tk.created = sk.Created
			keys = append(keys, tk)
		}
		k.mu.Lock()
		if len(keys) > 0 || v == nil {
			k.keys = keys
			k.set = nil
		}
		k.cond.Broadcast()
		k.mu.Unlock()
	}
	err := e.follow(k.key, false, func(kvs []*mvccpb.KeyValue) {
		if len(kvs) == 0 {
			load(nil)
			return
		}
		load(kvs[0].Value)
	}, func(ev *clientv3.Event) {
		if ev.Type == clientv3.EventTypePut {
			load(ev.Kv.Value)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("etcd: reading the session ticket keys: %w: %w", ErrStoreUnavailable, err)
	}
	e.wg.Add(1)
	go k.lead()
	e.mu.Lock()
	e.tickets = k
	e.mu.Unlock()
	return k, nil
}

// Keys returns the key set in force, newest first, without the keys
// whose tickets can no longer be valid; an error while there is none
// (none rotated in yet, or the store was unreachable for longer than
// the ticket lifetime: the gateway then keeps the set it has).
func (k *EtcdTicketKeys) Keys() ([][32]byte, error) {
	now := time.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	keys := usableKeys(k.keys, now, k.e.ticketO.Lifetime)
	if len(keys) == 0 {
		return nil, errors.New("no usable session ticket keys in etcd yet (the rotating gateway writes them)")
	}
	if k.set == nil || len(k.set) != len(keys) {
		k.set = make([][32]byte, len(keys))
		for i, tk := range keys {
			k.set[i] = tk.key
		}
	}
	return k.set, nil
}

// WaitKeys waits until Keys has a set (the first gateway's leader
// writes one within a second of starting) or ctx ends.
func (k *EtcdTicketKeys) WaitKeys(ctx context.Context) ([][32]byte, error) {
	stop := context.AfterFunc(ctx, func() {
		k.mu.Lock()
		k.cond.Broadcast()
		k.mu.Unlock()
	})
	defer stop()
	for {
		keys, err := k.Keys()
		if err == nil || ctx.Err() != nil {
			return keys, err
		}
		k.mu.Lock()
		if len(usableKeys(k.keys, time.Now(), k.e.ticketO.Lifetime)) == 0 && ctx.Err() == nil {
			k.cond.Wait()
		}
		k.mu.Unlock()
	}
}

// usableKeys drops the keys whose last ticket has expired: key i stopped
// sealing when key i-1 was made.
func usableKeys(keys []ticketKey, now time.Time, lifetime time.Duration) []ticketKey {
	for i := 1; i < len(keys); i++ {
		if !now.Before(keys[i-1].created.Add(lifetime)) {
			return keys[:i]
		}
	}
	return keys
}

// lead campaigns for the rotating gateway's place (an election on its
// own etcd session, so the place goes with the gateway) and, while
// leader, rotates the keys when due. It starts over when the session
// ends (the store was unreachable for longer than its TTL).
func (k *EtcdTicketKeys) lead() {
	e := k.e
	defer e.wg.Done()
	for e.ctx.Err() == nil {
		sess, err := concurrency.NewSession(e.cli, concurrency.WithTTL(int(ttlSeconds(e.ttl))), concurrency.WithContext(e.ctx))
		if err != nil {
			select {
			case <-e.ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		el := concurrency.NewElection(sess, e.prefix+"tickets-leader")
		if err := el.Campaign(e.ctx, e.gateway); err == nil {
			e.log.Info("rotating the fleet's session ticket keys (elected)")
			k.rotateWhileLeader(sess, el)
		}
		// The session's context may have ended (Close): revoke its lease
		// with one of its own, so the next gateway leads at once.
		ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
		e.cli.Revoke(ctx, sess.Lease())
		cancel()
		sess.Close()
	}
}

// rotateWhileLeader rotates when due until the session ends.
func (k *EtcdTicketKeys) rotateWhileLeader(sess *concurrency.Session, el *concurrency.Election) {
	e := k.e
	every := min(e.ticketO.Rotation/4, time.Minute)
	for {
		next, err := k.rotate(el)
		if err != nil {
			e.log.Warn("rotating session ticket keys", "err", err)
			next = time.Second
		}
		select {
		case <-e.ctx.Done():
			return
		case <-sess.Done():
			e.log.Warn("no longer rotating the fleet's session ticket keys: etcd session lost")
			return
		case <-time.After(min(max(next, 10*time.Millisecond), every)):
		}
	}
}

// rotate adds a key when the newest is Rotation old (or there is none)
// and drops expired ones, in a transaction that holds only while this
// gateway leads and nobody changed the keys since it read them. It
// returns when the next rotation is due.
func (k *EtcdTicketKeys) rotate(el *concurrency.Election) (time.Duration, error) {
	e := k.e
	ctx, cancel := e.reqCtx()
	defer cancel()
	resp, err := e.cli.Get(ctx, k.key)
	if err != nil {
		return 0, err
	}
	var st storedKeys
	var rev int64
	if len(resp.Kvs) > 0 {
		rev = resp.Kvs[0].ModRevision
		if err := json.Unmarshal(resp.Kvs[0].Value, &st); err != nil {
			st = storedKeys{} // unreadable: start a new set
		}
	}
	now := time.Now()
	if len(st.Keys) > 0 {
		if due := st.Keys[0].Created.Add(e.ticketO.Rotation); now.Before(due) {
			return due.Sub(now), nil
		}
	}
	nk := storedKey{Key: make([]byte, 32), Created: now.UTC()}
	rand.Read(nk.Key) // never fails (crypto/rand)
	keys := []storedKey{nk}
	for i, sk := range st.Keys {
		newer := nk.Created
		if i > 0 {
			newer = st.Keys[i-1].Created
		}
		if !now.Before(newer.Add(e.ticketO.Lifetime)) {
			break
		}
		keys = append(keys, sk)
	}
	b, err := json.Marshal(storedKeys{Keys: keys})
	if err != nil {
		return 0, err
	}
	tx, err := e.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.ModRevision(k.key), "=", rev),
		clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev()),
	).Then(clientv3.OpPut(k.key, string(b))).Commit()
	if err != nil {
		return 0, err
	}
	if !tx.Succeeded {
		return 0, errors.New("the keys changed, or this gateway no longer leads")
	}
	e.log.Info("session ticket keys rotated", "keys", len(keys))
	return e.ticketO.Rotation, nil
}
