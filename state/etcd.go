package state

// The etcd backend: the state of a fleet of gateways, shared through an
// etcd cluster. Etcd is one gateway's connection to the store; it hands
// out the Leases, Directory, Revocation and TicketKeys of that gateway.
// docs/FLEET.md describes the keys and what is consistent when.

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// Defaults of EtcdOptions.
const (
	DefaultEtcdPrefix = "/tlsvpn/"
	// DefaultEtcdTTL is the TTL of a gateway's etcd lease: a gateway that
	// dies loses its directory entries and live address claims this long
	// after its last keepalive.
	DefaultEtcdTTL = 10 * time.Second
	// DefaultEtcdTimeout bounds one request to the store.
	DefaultEtcdTimeout = 3 * time.Second
	// DefaultFleetTicketRotation and DefaultFleetTicketLifetime are the
	// shared ticket keys' schedule: a new key every hour (as Cloudflare
	// and OpenResty rotate theirs), and a ticket usable for a day.
	DefaultFleetTicketRotation = time.Hour
	DefaultFleetTicketLifetime = 24 * time.Hour
)

// ErrStoreUnavailable is wrapped by the errors of what needs the store
// while it cannot be reached (a new identity's address, an address move).
var ErrStoreUnavailable = errors.New("state store unreachable")

// EtcdOptions configure OpenEtcd.
type EtcdOptions struct {
	// Endpoints are the etcd members' client URLs, e.g.
	// https://198.18.1.1:2379; required.
	Endpoints []string
	// CertFile and KeyFile are the gateway's client certificate and key
	// for etcd (both or neither); CAFile is the CA etcd's certificates
	// chain to ("": the system's). Any of them makes the connection TLS.
	CertFile, KeyFile, CAFile string
	// Prefix is put before every key; "": DefaultEtcdPrefix. Fleets
	// sharing one cluster use different prefixes.
	Prefix string
	// Gateway names this gateway in the fleet; required, unique.
	Gateway string
	// TTL of the gateway's etcd lease; 0: DefaultEtcdTTL.
	TTL time.Duration
	// Timeout of one request; 0: DefaultEtcdTimeout.
	Timeout time.Duration
	// TicketRotation and TicketLifetime: see TicketKeysOptions; 0:
	// DefaultFleetTicketRotation and DefaultFleetTicketLifetime.
	TicketRotation, TicketLifetime time.Duration
	Logger                         *slog.Logger // nil: slog.Default()
}

// StoreHealth is what Etcd.Health reports.
type StoreHealth struct {
	Up bool // the last request (or probe) succeeded
	// Since is when Up last changed (the start, before the first change).
	Since time.Time
	Err   string // why the store is down, when it is
	// Refusals counts what was refused because the store was down (a
	// new identity, an address move).
	Refusals uint64
	// LeaseLost counts the times the gateway's etcd lease expired (an
	// outage longer than its TTL) and a new one was granted.
	LeaseLost uint64
}

// Etcd is one gateway's connection to the fleet's etcd cluster. It keeps
// a lease (TTL) alive, to which the gateway's directory entries and live
// address claims are attached, writes those in the background (so that
// sessions never wait for the store, and an outage only delays them),
// and follows the keys it caches with watches. Close ends it all.
type Etcd struct {
	cli     *clientv3.Client
	prefix  string
	gateway string
	ttl     time.Duration
	timeout time.Duration
	ticketO TicketKeysOptions
	log     *slog.Logger
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	lease      atomic.Int64 // clientv3.LeaseID in force
	leaseLost  chan struct{}
	crlChanged chan struct{} // see CRLChanged
	up         atomic.Bool
	refusals   atomic.Uint64
	lostCount  atomic.Uint64
	healthMu   sync.Mutex
	since      time.Time // guarded by healthMu
	lastErr    string    // guarded by healthMu

	live *liveKeys

	mu       sync.Mutex
	pools    []*EtcdLeases   // guarded by mu
	gateways map[string]bool // guarded by mu; the live gateways
	dir      *EtcdDirectory  // guarded by mu
	tickets  *EtcdTicketKeys // guarded by mu
}

// OpenEtcd connects to the cluster, grants the gateway's lease and
// registers the gateway. It fails if the store cannot be reached within
// the options' timeout: a gateway does not start without its state.
func OpenEtcd(ctx context.Context, opts EtcdOptions) (*Etcd, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints")
	}
	if opts.Gateway == "" {
		return nil, errors.New("etcd: no gateway name")
	}
	if strings.Contains(opts.Gateway, "/") {
		return nil, fmt.Errorf("etcd: gateway name %q holds a '/'", opts.Gateway)
	}
	e := &Etcd{prefix: opts.Prefix, gateway: opts.Gateway, ttl: opts.TTL, timeout: opts.Timeout, log: opts.Logger,
		ticketO:   TicketKeysOptions{Rotation: opts.TicketRotation, Lifetime: opts.TicketLifetime},
		leaseLost: make(chan struct{}, 1), crlChanged: make(chan struct{}, 1)}
	e.prefix = cleanPrefix(e.prefix)
	if e.ttl <= 0 {
		e.ttl = DefaultEtcdTTL
	}
	if e.timeout <= 0 {
		e.timeout = DefaultEtcdTimeout
	}
	if e.ticketO.Rotation <= 0 {
		e.ticketO.Rotation = DefaultFleetTicketRotation
	}
	if e.ticketO.Lifetime <= 0 {
		e.ticketO.Lifetime = DefaultFleetTicketLifetime
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	e.log = e.log.With("store", "etcd")
	opts.TTL, opts.Timeout = e.ttl, e.timeout
	var err error
	if e.cli, err = DialEtcd(opts); err != nil {
		return nil, err
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	gctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	l, err := e.cli.Grant(gctx, ttlSeconds(e.ttl))
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("etcd %s: %w: %w", strings.Join(opts.Endpoints, ","), ErrStoreUnavailable, err)
	}
	e.lease.Store(int64(l.ID))
	e.up.Store(true)
	e.since = time.Now()
	e.live = newLiveKeys(e)
	e.live.set(e.prefix+"gateways/"+e.gateway, time.Now().UTC().Format(time.RFC3339), nil)
	e.wg.Add(3)
	go e.keepLease()
	go e.live.run()
	go e.probe()
	if err := e.followGateways(); err != nil {
		e.Close()
		return nil, fmt.Errorf("etcd: reading the fleet's gateways: %w: %w", ErrStoreUnavailable, err)
	}
	return e, nil
}

// followGateways keeps the set of live gateways (PREFIX gateways/NAME,
// each under its gateway's lease) up to date.
func (e *Etcd) followGateways() error {
	dir := e.prefix + "gateways/"
	return e.follow(dir, true, func(kvs []*mvccpb.KeyValue) {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.gateways = map[string]bool{e.gateway: true}
		for _, kv := range kvs {
			e.gateways[strings.TrimPrefix(string(kv.Key), dir)] = true
		}
	}, func(ev *clientv3.Event) {
		name := strings.TrimPrefix(string(ev.Kv.Key), dir)
		e.mu.Lock()
		defer e.mu.Unlock()
		if ev.Type == clientv3.EventTypeDelete && name != e.gateway {
			delete(e.gateways, name)
		} else {
			e.gateways[name] = true
		}
	})
}

// Gateways are the names of the fleet's live gateways (this one
// included), sorted, as last seen in the store.
func (e *Etcd) Gateways() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Sorted(maps.Keys(e.gateways))
}

// DialEtcd returns a client of the cluster of opts (endpoints, TLS
// files), for OpenEtcd and for tools such as 'tunneld fleet'. It does
// not wait for a connection: the first request does.
func DialEtcd(opts EtcdOptions) (*clientv3.Client, error) {
	tlsCfg, err := EtcdTLS(opts)
	if err != nil {
		return nil, err
	}
	timeout, ttl := cmp.Or(opts.Timeout, DefaultEtcdTimeout), cmp.Or(opts.TTL, DefaultEtcdTTL)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            opts.Endpoints,
		TLS:                  tlsCfg,
		DialTimeout:          timeout,
		DialKeepAliveTime:    ttl / 3,
		DialKeepAliveTimeout: timeout,
		// gRPC's own reconnection backs off up to 2 minutes: after an
		// outage the gateways would refuse new clients that long after
		// etcd is back. Members are few and near: retry every second.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: timeout,
		})},
		Logger: quietZap(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", strings.Join(opts.Endpoints, ","), err)
	}
	return cli, nil
}

// EtcdTLS is the TLS configuration of a client of opts (nil: plain):
// the client certificate and CA files loaded.
func EtcdTLS(opts EtcdOptions) (*tls.Config, error) {
	if (opts.CertFile == "") != (opts.KeyFile == "") {
		return nil, errors.New("etcd: a client certificate needs its key, and a key its certificate")
	}
	if opts.CertFile == "" && opts.CAFile == "" {
		for _, ep := range opts.Endpoints {
			if strings.HasPrefix(ep, "https://") {
				return &tls.Config{MinVersion: tls.VersionTLS12}, nil
			}
		}
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if opts.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(opts.CertFile, opts.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if opts.CAFile != "" {
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("etcd CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd CA %s: no PEM certificate", opts.CAFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// cleanPrefix is prefix ("": DefaultEtcdPrefix) ending in a '/'.
func cleanPrefix(prefix string) string {
	if prefix == "" {
		return DefaultEtcdPrefix
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return prefix
}

// ttlSeconds is d in whole seconds, at least one.
func ttlSeconds(d time.Duration) int64 { return max(int64((d+time.Second-1)/time.Second), 1) }

// Gateway is this gateway's name in the fleet.
func (e *Etcd) Gateway() string { return e.gateway }

// Prefix is what every key of the fleet starts with.
func (e *Etcd) Prefix() string { return e.prefix }

// Client is the etcd client, for tests and tools.
func (e *Etcd) Client() *clientv3.Client { return e.cli }

// Close stops the background work, revokes the gateway's lease (its
// directory entries and live claims go at once, not after the TTL) and
// closes the connection.
func (e *Etcd) Close() error {
	if e.cancel != nil {
		e.cancel()
	}
	// The background work ends with the context, except a request that
	// does not take it: the election's resign after a canceled campaign
	// waits for the store as long as the client is open. So wait for a
	// request's time, then close the client under it.
	done := make(chan struct{})
	go func() {
		e.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(e.timeout):
	}
	if id := clientv3.LeaseID(e.lease.Load()); id != 0 {
		ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
		e.cli.Revoke(ctx, id) // best effort: the TTL frees them otherwise
		cancel()
	}
	err := e.cli.Close()
	<-done
	return err
}

// Health reports whether the store answers.
func (e *Etcd) Health() StoreHealth {
	e.healthMu.Lock()
	defer e.healthMu.Unlock()
	return StoreHealth{Up: e.up.Load(), Since: e.since, Err: e.lastErr, Refusals: e.refusals.Load(), LeaseLost: e.lostCount.Load()}
}

// Up reports whether the last request to the store succeeded.
func (e *Etcd) Up() bool { return e.up.Load() }

// ok records that a request succeeded.
func (e *Etcd) ok() {
	if e.up.Load() {
		return
	}
	e.healthMu.Lock()
	if !e.up.Load() {
		e.up.Store(true)
		e.since, e.lastErr = time.Now(), ""
		e.log.Info("state store reachable again: catching up")
	}
	e.healthMu.Unlock()
}

// fail records that a request failed (not a refused compare: the store
// did not answer).
func (e *Etcd) fail(err error) {
	if e.ctx.Err() != nil {
		return
	}
	e.healthMu.Lock()
	e.lastErr = err.Error()
	if e.up.Load() {
		e.up.Store(false)
		e.since = time.Now()
		e.log.Error("state store unreachable: keeping live sessions and known clients, refusing new clients and address moves until it is back", "err", err)
	}
	e.healthMu.Unlock()
}

// refuse counts a refusal for want of the store and returns its error.
func (e *Etcd) refuse(what string, err error) error {
	e.refusals.Add(1)
	if err == nil {
		e.log.Warn("refused: needs the state store, which is unreachable", "what", what)
		return fmt.Errorf("%s: %w", what, ErrStoreUnavailable)
	}
	e.log.Warn("refused: needs the state store, which is unreachable", "what", what, "err", err)
	return fmt.Errorf("%s: %w: %v", what, ErrStoreUnavailable, err)
}

// reqCtx is the context of one request.
func (e *Etcd) reqCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(e.ctx, e.timeout)
}

// do runs req with the request timeout, and again if it fails, while
// less than twice the timeout has passed (at most three tries): when
// etcd's leader dies, the requests in flight to it fail at once, and a
// request that another member forwarded to it is lost and waits out its
// timeout, while new ones succeed as soon as another member leads. A
// store that does not answer at all costs two timeouts, as before. It
// records whether the store answered.
func (e *Etcd) do(req func(ctx context.Context) error) error {
	var err error
	start := time.Now()
	for range 3 {
		ctx, cancel := e.reqCtx()
		err = req(ctx)
		cancel()
		if err == nil || e.ctx.Err() != nil || time.Since(start) >= 2*e.timeout {
			break
		}
	}
	if err != nil {
		e.fail(err)
		return err
	}
	e.ok()
	return nil
}

// probe reads a key every third of the TTL (at most a second apart) to
// know whether the store answers even when nothing else asks it. Two
// failures in a row mark it down: one may be a leader change.
func (e *Etcd) probe() {
	defer e.wg.Done()
	t := time.NewTicker(min(e.ttl/3, time.Second))
	defer t.Stop()
	failed := 0
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := e.reqCtx()
		_, err := e.cli.Get(ctx, e.prefix+"gateways/"+e.gateway)
		cancel()
		switch {
		case err == nil:
			failed = 0
			e.ok()
		case failed > 0:
			e.fail(err)
		default:
			failed++
		}
	}
}

// keepLease keeps the gateway's lease alive; when it is lost (the store
// was unreachable for longer than the TTL) it grants a new one and has
// every live key written again under it.
func (e *Etcd) keepLease() {
	defer e.wg.Done()
	for {
		id := clientv3.LeaseID(e.lease.Load())
		ka, err := e.cli.KeepAlive(e.ctx, id)
		if err == nil {
		alive:
			for {
				select {
				case _, ok := <-ka:
					if !ok {
						break alive
					}
				case <-e.leaseLost:
					break alive
				case <-e.ctx.Done():
					return
				}
			}
		}
		if e.ctx.Err() != nil {
			return
		}
		e.lostCount.Add(1)
		e.log.Warn("etcd lease lost: granting a new one and writing this gateway's claims again")
		for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
			ctx, cancel := e.reqCtx()
			l, err := e.cli.Grant(ctx, ttlSeconds(e.ttl))
			cancel()
			if err == nil {
				e.ok()
				e.lease.Store(int64(l.ID))
				break
			}
			e.fail(err)
			select {
			case <-e.ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		e.live.rewriteAll()
	}
}

// noteLeaseError has the lease granted anew if err says it is gone.
func (e *Etcd) noteLeaseError(err error) {
	if isLeaseGone(err) {
		select {
		case e.leaseLost <- struct{}{}:
		default:
		}
	}
}

// follow lists the keys under key (one key unless prefix) and then
// follows their changes: reset gets the whole list, at the start and
// again whenever the watch had to start over (a compaction), and apply
// each change. The first list is read before follow returns; its error
// is follow's.
func (e *Etcd) follow(key string, prefix bool, reset func([]*mvccpb.KeyValue), apply func(*clientv3.Event)) error {
	var opts []clientv3.OpOption
	if prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	list := func() (int64, error) {
		ctx, cancel := e.reqCtx()
		defer cancel()
		resp, err := e.cli.Get(ctx, key, opts...)
		if err != nil {
			e.fail(err)
			return 0, err
		}
		e.ok()
		reset(resp.Kvs)
		return resp.Header.Revision, nil
	}
	rev, err := list()
	if err != nil {
		return err
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for e.ctx.Err() == nil {
			wctx, cancel := context.WithCancel(e.ctx)
			wch := e.cli.Watch(clientv3.WithRequireLeader(wctx), key, append(opts, clientv3.WithRev(rev+1))...)
		watch:
			for {
				// Not a range over wch: while the store is unreachable the
				// client does not close the channel when its context ends.
				var resp clientv3.WatchResponse
				var ok bool
				select {
				case <-e.ctx.Done():
					cancel()
					return
				case resp, ok = <-wch:
				}
				if !ok {
					break watch
				}
				if err := resp.Err(); err != nil {
					e.log.Debug("watch ended", "key", key, "err", err)
					break watch
				}
				for _, ev := range resp.Events {
					apply(ev)
					rev = ev.Kv.ModRevision
				}
				if resp.Header.Revision > rev && len(resp.Events) == 0 {
					rev = resp.Header.Revision
				}
			}
			cancel()
			// The watch ended: the store lost its leader or compacted
			// past rev. List again (until it answers) and go on from there.
			for e.ctx.Err() == nil {
				r, err := list()
				if err == nil {
					rev = r
					break
				}
				select {
				case <-e.ctx.Done():
				case <-time.After(500 * time.Millisecond):
				}
			}
		}
	}()
	return nil
}
