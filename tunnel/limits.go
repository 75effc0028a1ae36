package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Connection limits. The server consults a Limiter around every accepted
// connection: AllowSource and AcquireHandshake before the TLS handshake
// (nothing from the peer has been parsed yet, so these protect the
// handshake stage itself), AcquireSession after it, once the identity is
// verified. Precedents (REFERENCE.md §4.3 items 2, 6 and 7): wireguard-go
// rate-limits handshakes per source (20/s, burst 5), OpenVPN allows 100
// connections per 10 s and 1024 clients by default, ocserv allows one
// connection per 100 ms and `max-same-clients 2`.

// Defaults for a zero LimitConfig.
const (
	// DefaultMaxHandshakes caps TLS handshakes in progress. Each costs a
	// goroutine, buffers and up to HandshakeTimeout of waiting, and the
	// server's key operations are its most expensive CPU work.
	DefaultMaxHandshakes = 64
	// DefaultMaxHandshakesPerSource caps the connections of one source
	// that are handshaking or queued for a slot, so that a few sources
	// cannot hold every slot with idle connections or fill the queue; a
	// busy office behind one NAT still has sixteen going at once (each
	// handshake takes milliseconds).
	DefaultMaxHandshakesPerSource = 16
	// DefaultReservedHandshakes are slots beyond MaxHandshakes kept for
	// clients that resume a TLS session or come from a source that
	// authenticated recently: the clients of a gateway under a flood still
	// get back in.
	DefaultReservedHandshakes = 16
	// DefaultHandshakeRate is the sustained rate of new connections
	// allowed from one source (IPv4 address or IPv6 /64), per second:
	// enough for an office behind one NAT, while one source can spend at
	// most about a twentieth of a core on handshakes. (wireguard-go allows
	// 20/s per source, for handshakes much cheaper than TLS's.)
	DefaultHandshakeRate = 50.0
	// DefaultHandshakeBurst lets a source open this many connections at
	// once: an office of a few hundred people behind one NAT reconnecting
	// after a restart of the gateway. What one source can hold at a time
	// is bounded by MaxHandshakesPerSource, not by this.
	DefaultHandshakeBurst = 300
	// DefaultMaxQueued bounds the connections waiting for a handshake
	// slot. Waiting instead of being refused, the clients of a restarted
	// gateway are served in turn at the rate the CPU allows, rather than
	// backing off further with every refusal.
	DefaultMaxQueued = 4096
	// DefaultMaxQueueWait is how long a connection waits for a slot
	// before it is refused: well within a client's handshake timeout.
	DefaultMaxQueueWait = 8 * time.Second
	// DefaultKnownFor is how long a source that authenticated stays known
	// (may use the reserved handshake slots).
	DefaultKnownFor = time.Hour
	// DefaultMaxSources bounds the per-source rate table (about 64 bytes a
	// source plus the map). When full, the least recently seen source is
	// forgotten.
	DefaultMaxSources = 4096
	// DefaultMaxClients caps distinct identities with a session
	// (OpenVPN's max-clients default).
	DefaultMaxClients = 1024
	// DefaultMaxSessionsPerIdentity lets a reconnecting client's new
	// session overlap the old one (ocserv max-same-clients 2).
	DefaultMaxSessionsPerIdentity = 2
)

// LimitConfig configures a Limiter. Its zero value means the defaults
// above. A negative MaxHandshakes, HandshakeRate, MaxClients or
// MaxSessionsPerIdentity turns that limit off; HandshakeBurst and
// MaxSources cannot be turned off (values below 1 mean the default).
type LimitConfig struct {
	MaxHandshakes          int // TLS handshakes in progress
	MaxHandshakesPerSource int // of those and the queued, from one source
	ReservedHandshakes     int // more, for resuming clients and known sources
	MaxQueued              int // connections waiting for a handshake slot
	MaxQueueWait           time.Duration
	KnownFor               time.Duration
	HandshakeRate          float64 // new connections per second per source
	HandshakeBurst         int     // bucket size per source (at least 1)
	MaxSources             int     // sources tracked for HandshakeRate
	MaxClients             int     // distinct identities with a session
	MaxSessionsPerIdentity int     // concurrent sessions of one identity
}

// withDefaults fills in defaults and maps every "off" to -1.
func (c LimitConfig) withDefaults() LimitConfig {
	intLimit := func(v *int, def int) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			*v = -1
		}
	}
	intLimit(&c.MaxHandshakes, DefaultMaxHandshakes)
	intLimit(&c.MaxHandshakesPerSource, DefaultMaxHandshakesPerSource)
	intLimit(&c.ReservedHandshakes, DefaultReservedHandshakes)
	intLimit(&c.MaxQueued, DefaultMaxQueued)
	if c.MaxQueueWait <= 0 {
		c.MaxQueueWait = DefaultMaxQueueWait
	}
	if c.KnownFor <= 0 {
		c.KnownFor = DefaultKnownFor
	}
	intLimit(&c.MaxClients, DefaultMaxClients)
	intLimit(&c.MaxSessionsPerIdentity, DefaultMaxSessionsPerIdentity)
	switch r := c.HandshakeRate; {
	case r == 0 || math.IsNaN(r):
		c.HandshakeRate = DefaultHandshakeRate
	case r < 0 || math.IsInf(r, 1):
		c.HandshakeRate = -1
	}
	if c.HandshakeBurst < 1 {
		c.HandshakeBurst = DefaultHandshakeBurst
	}
	if c.MaxSources < 1 {
		c.MaxSources = DefaultMaxSources
	}
	if c.MaxSources > math.MaxInt32 {
		c.MaxSources = math.MaxInt32 // bucket indices are int32
	}
	return c
}

var (
	// ErrTooManyClients: MaxClients identities already have a session.
	ErrTooManyClients = errors.New("too many clients")
	// ErrTooManySessions: the identity already has MaxSessionsPerIdentity
	// sessions.
	ErrTooManySessions = errors.New("too many sessions for one identity")
)

// LimitError is the error AcquireSession returns. It wraps
// ErrTooManyClients or ErrTooManySessions (use errors.Is) and says which
// limit was reached. Its message is safe to send to the refused client.
type LimitError struct {
	Err      error  // ErrTooManyClients or ErrTooManySessions
	Max      int    // the configured limit that was reached
	Identity string // the identity refused
}

func (e *LimitError) Error() string {
	if e.Err == ErrTooManySessions {
		return fmt.Sprintf("%v: %q is at the limit of %d", e.Err, e.Identity, e.Max)
	}
	return fmt.Sprintf("%v: limit of %d reached", e.Err, e.Max)
}

func (e *LimitError) Unwrap() error { return e.Err }

// LimitStats counts refusals by reason. Every field is updated atomically
// and may be read at any time. Refusals can come in floods, so log these
// periodically (Limiter implements slog.LogValuer) rather than once per
// refused connection.
type LimitStats struct {
	RefusedHandshakes atomic.Uint64 // MaxHandshakes handshakes already in progress
	RefusedSource     atomic.Uint64 // MaxHandshakesPerSource handshakes of the source in progress
	RefusedRate       atomic.Uint64 // source over HandshakeRate/HandshakeBurst
	RefusedResumption atomic.Uint64 // on a reserved slot, neither known nor resuming
	RefusedConns      atomic.Uint64 // ServerConfig.MaxConnections connections open
	Reserved          atomic.Uint64 // handshakes admitted on a reserved slot
	RefusedClients    atomic.Uint64 // ErrTooManyClients
	RefusedSessions   atomic.Uint64 // ErrTooManySessions
	SourcesEvicted    atomic.Uint64 // sources forgotten to stay within MaxSources
}

// LimitUsage is a snapshot of what a Limiter currently holds.
type LimitUsage struct {
	Handshakes int // handshakes in progress
	Queued     int // connections waiting for a handshake slot
	Sources    int // sources in the rate table
	Clients    int // distinct identities with a session
	Sessions   int // sessions
}

// Limiter enforces pre-authentication and connection limits. All methods
// are safe for concurrent use.
type Limiter struct {
	cfg   atomic.Pointer[LimitConfig] // defaults applied, -1 = off; swapped whole by SetConfig
	stats LimitStats

	handshakes atomic.Int64  // handshakes in progress on the shared slots
	reserved   atomic.Int64  // handshakes in progress on the reserved slots
	queued     atomic.Int64  // connections waiting for a slot
	freed      chan struct{} // a slot was freed: wakes one waiter

	srcMu sync.Mutex
	// Guarded by srcMu: the per-source token buckets, an LRU list threaded
	// through a slice that grows to at most cfg.MaxSources and is then
	// reused, so memory stays bounded whatever the number of sources.
	sources    map[sourceKey]int32 // source -> index into buckets
	buckets    []bucket
	head, tail int32 // most and least recently used bucket; -1 if none
	// inflight counts the handshakes in progress per source (entries go
	// when they reach 0, so it holds at most the handshakes in progress).
	inflight map[sourceKey]int32

	sessMu sync.Mutex
	// Guarded by sessMu.
	identities map[string]int // identity -> sessions it holds (> 0)
	sessions   int
}

// sourceKey is an IPv4 address as ::ffff:a.b.c.d or an IPv6 /64 prefix
// with the low 64 bits zero. It holds no pointers, so the GC never scans
// the map's keys.
type sourceKey [16]byte

type bucket struct {
	key        sourceKey
	tokens     float64
	last       time.Time // when tokens was last brought up to date
	knownUntil time.Time // a client from here authenticated (MarkKnown)
	prev, next int32     // LRU neighbours (towards head, towards tail); -1 if none
}

// NewLimiter returns a Limiter enforcing cfg, with defaults for zero fields.
func NewLimiter(cfg LimitConfig) *Limiter {
	cfg = cfg.withDefaults()
	l := &Limiter{
		sources:  make(map[sourceKey]int32),
		inflight: make(map[sourceKey]int32),
		// One token per slot that can be freed, so no release is lost
		// while several waiters sleep.
		freed:      make(chan struct{}, max(cfg.MaxHandshakes, 0)+max(cfg.ReservedHandshakes, 0)+1),
		head:       -1,
		tail:       -1,
		identities: make(map[string]int),
	}
	l.cfg.Store(&cfg)
	return l
}

// Config returns the limits in force: defaults filled in and -1 for a limit
// that is off. Log it at startup.
func (l *Limiter) Config() LimitConfig { return *l.cfg.Load() }

// SetConfig changes the limits of a running Limiter (tunneld's reload),
// with defaults for zero fields as in NewLimiter. MaxHandshakes,
// ReservedHandshakes and MaxSources keep the values NewLimiter gave them:
// they size what the Limiter allocated (the wake-ups of queued
// connections, the source table). What is held already is not taken
// back: a lower MaxClients refuses new identities, it does not close
// sessions; a lower HandshakeBurst caps each source's bucket when the
// source next connects.
func (l *Limiter) SetConfig(cfg LimitConfig) {
	cfg = cfg.withDefaults()
	cur := l.cfg.Load()
	cfg.MaxHandshakes, cfg.ReservedHandshakes, cfg.MaxSources = cur.MaxHandshakes, cur.ReservedHandshakes, cur.MaxSources
	l.cfg.Store(&cfg)
}

// Stats returns the refusal counters.
func (l *Limiter) Stats() *LimitStats { return &l.stats }

// noRelease is returned, non-nil, with every refusal so that a deferred
// release never panics.
func noRelease() {}

// AcquireHandshake reserves one of MaxHandshakes handshake slots without
// blocking. On success the caller must call release once the handshake has
// finished, whatever its outcome (extra calls do nothing). When every slot
// is taken it returns ok == false and the caller should close the
// connection at once, without logging it individually.
func (l *Limiter) AcquireHandshake() (release func(), ok bool) {
	cfg := l.cfg.Load()
	if limit := int64(cfg.MaxHandshakes); limit >= 0 {
		for {
			n := l.handshakes.Load()
			if n >= limit {
				l.stats.RefusedHandshakes.Add(1)
				return noRelease, false
			}
			if l.handshakes.CompareAndSwap(n, n+1) {
				break
			}
		}
	} else {
		l.handshakes.Add(1)
	}
	var done atomic.Bool
	return func() {
		if done.CompareAndSwap(false, true) {
			l.handshakes.Add(-1)
		}
	}, true
}

// AllowSource reports whether a new connection from addr may proceed to the
// TLS handshake, taking one token from the source's bucket: each source
// (an IPv4 address, or the /64 of an IPv6 address, since one host usually
// holds a whole /64) may connect HandshakeBurst times at once and
// HandshakeRate times per second after that. now is the current time
// (time.Now(); injected so tests need no sleeps).
//
// The table holds at most MaxSources sources; a new source beyond that
// evicts the least recently seen one, which starts again with a full
// bucket if it returns. Many-address floods are therefore bounded by
// MaxHandshakes, not by this check. An invalid addr (a listener that is
// not IP, such as net.Pipe or a Unix socket) is always allowed.
//
// For a source already in the table, AllowSource does not allocate.
func (l *Limiter) AllowSource(addr netip.Addr, now time.Time) bool {
	cfg := l.cfg.Load()
	if cfg.HandshakeRate < 0 || !addr.IsValid() {
		return true
	}
	l.srcMu.Lock()
	defer l.srcMu.Unlock()
	if !l.takeTokenLocked(keyOf(addr), now) {
		l.stats.RefusedRate.Add(1)
		return false
	}
	return true
}

// takeTokenLocked takes a token from key's bucket (true when the rate
// limit is off). The caller holds srcMu.
func (l *Limiter) takeTokenLocked(key sourceKey, now time.Time) bool {
	cfg := l.cfg.Load()
	i, ok := l.sources[key]
	if ok {
		l.moveToFrontLocked(i)
	} else {
		i = l.insertLocked(key, now)
	}
	if cfg.HandshakeRate < 0 {
		return true
	}
	b := &l.buckets[i]
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.tokens+d.Seconds()*cfg.HandshakeRate, float64(cfg.HandshakeBurst))
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Errors of Admit: why a connection was refused before its handshake.
var (
	ErrSourceRate       = errors.New("too many new connections from this source")
	ErrSourceHandshakes = errors.New("too many handshakes in progress from this source")
	ErrHandshakes       = errors.New("too many handshakes in progress")
)

// Admission is a connection's place in the handshake stage (Admit): its
// share of its source's handshakes, and a handshake slot once it has one.
type Admission struct {
	l         *Limiter
	key       sourceKey
	perSource bool
	known     bool
	slot      *atomic.Int64 // the counter of the slot held; nil while queued
	released  atomic.Bool
	// MustResume: the connection holds a reserved slot and its source is
	// not known, so it may go on only if its ClientHello offers a TLS
	// session to resume (the caller checks; RefuseResumption counts it).
	MustResume bool
}

// Admit decides, before anything is read from it, whether a new
// connection from src may go on to a TLS handshake:
//
//   - at most MaxHandshakesPerSource connections of one source are
//     handshaking or queued for a slot (ErrSourceHandshakes), so that a
//     few sources cannot take every slot or the whole queue;
//   - the source has a token in its bucket (ErrSourceRate, see
//     AllowSource); a refusal for the first reason takes no token;
//   - at most MaxQueued connections wait for a slot (ErrHandshakes).
//
// It takes one of MaxHandshakes shared slots if one is free, or, for a
// source that authenticated recently (MarkKnown), one of the
// ReservedHandshakes. Otherwise the connection is queued: the caller must
// Wait for a slot before reading from it. The caller must Release the
// Admission in any case. An invalid src (no IP) is limited by the slots
// only.
func (l *Limiter) Admit(src netip.Addr, now time.Time) (*Admission, error) {
	cfg := l.cfg.Load()
	a := &Admission{l: l, key: keyOf(src), perSource: src.IsValid() && cfg.MaxHandshakesPerSource >= 0}
	if src.IsValid() {
		l.srcMu.Lock()
		if a.perSource && l.inflight[a.key] >= int32(cfg.MaxHandshakesPerSource) {
			l.srcMu.Unlock()
			l.stats.RefusedSource.Add(1)
			return nil, ErrSourceHandshakes
		}
		if !l.takeTokenLocked(a.key, now) {
			l.srcMu.Unlock()
			l.stats.RefusedRate.Add(1)
			return nil, ErrSourceRate
		}
		if i, ok := l.sources[a.key]; ok {
			a.known = now.Before(l.buckets[i].knownUntil)
		}
		if a.perSource {
			l.inflight[a.key]++
		}
		l.srcMu.Unlock()
	}
	switch {
	case take(&l.handshakes, cfg.MaxHandshakes):
		a.slot = &l.handshakes
	case a.known && cfg.ReservedHandshakes > 0 && take(&l.reserved, cfg.ReservedHandshakes):
		a.slot = &l.reserved
		l.stats.Reserved.Add(1)
	case cfg.MaxQueued >= 0 && l.queued.Load() >= int64(cfg.MaxQueued):
		a.Release()
		l.stats.RefusedHandshakes.Add(1)
		return nil, ErrHandshakes
	default:
		l.queued.Add(1)
	}
	return a, nil
}

// Queued reports whether the connection still waits for a slot.
func (a *Admission) Queued() bool { return a.slot == nil }

// Wait waits, at most MaxQueueWait, for a handshake slot, in about the
// order the connections were queued, and returns nil once it holds one
// (at once if it already does). When none is free in time, a connection
// may still take a reserved slot provisionally (MustResume, unless its
// source is known); otherwise Wait returns ErrHandshakes. Call it once.
func (a *Admission) Wait(ctx context.Context) error {
	if a.slot != nil {
		return nil
	}
	l := a.l
	cfg := l.cfg.Load()
	defer l.queued.Add(-1)
	timer := time.NewTimer(cfg.MaxQueueWait)
	defer timer.Stop()
wait:
	for {
		if take(&l.handshakes, cfg.MaxHandshakes) {
			a.slot = &l.handshakes
			return nil
		}
		select {
		case <-l.freed:
		case <-ctx.Done():
			break wait
		case <-timer.C:
			break wait
		}
	}
	if cfg.ReservedHandshakes > 0 && take(&l.reserved, cfg.ReservedHandshakes) {
		a.slot, a.MustResume = &l.reserved, !a.known
		l.stats.Reserved.Add(1)
		return nil
	}
	l.stats.RefusedHandshakes.Add(1)
	return ErrHandshakes
}

// Release frees the connection's slot and its share of its source once
// the handshake has finished, whatever its outcome, or the connection was
// refused. Extra calls, and calls on nil, do nothing.
func (a *Admission) Release() {
	if a == nil || !a.released.CompareAndSwap(false, true) {
		return
	}
	l := a.l
	if a.slot != nil {
		a.slot.Add(-1)
		select {
		case l.freed <- struct{}{}: // wake a queued connection
		default:
		}
	}
	if a.perSource {
		l.srcMu.Lock()
		l.dropInflightLocked(a.key)
		l.srcMu.Unlock()
	}
}

// take takes one of limit slots counted in n (limit < 0: no limit).
func take(n *atomic.Int64, limit int) bool {
	if limit < 0 {
		n.Add(1)
		return true
	}
	for {
		v := n.Load()
		if v >= int64(limit) {
			return false
		}
		if n.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

func (l *Limiter) dropInflightLocked(key sourceKey) {
	if l.inflight[key] <= 1 {
		delete(l.inflight, key)
	} else {
		l.inflight[key]--
	}
}

// RefuseResumption counts a connection refused on a reserved slot because
// its ClientHello offered no session to resume.
func (l *Limiter) RefuseResumption() { l.stats.RefusedResumption.Add(1) }

// MarkKnown records that a client from src authenticated: for KnownFor,
// connections from src may use the reserved handshake slots. It also
// gives back the rate token the connection took: the rate limits what
// unauthenticated connections cost, and clients behind one address that
// come back one after another (an office after two restarts) should not
// exhaust their address's bucket by succeeding.
func (l *Limiter) MarkKnown(src netip.Addr, now time.Time) {
	cfg := l.cfg.Load()
	if !src.IsValid() {
		return
	}
	key := keyOf(src)
	l.srcMu.Lock()
	defer l.srcMu.Unlock()
	i, ok := l.sources[key]
	if !ok {
		i = l.insertLocked(key, now)
	}
	b := &l.buckets[i]
	b.knownUntil = now.Add(cfg.KnownFor)
	b.tokens = min(b.tokens+1, float64(cfg.HandshakeBurst))
}

func keyOf(addr netip.Addr) sourceKey {
	addr = addr.Unmap()
	k := sourceKey(addr.As16())
	if addr.Is6() {
		clear(k[8:])
	}
	return k
}

// insertLocked adds key with a full bucket at the front of the LRU list,
// evicting the tail if the table is full, and returns its index.
func (l *Limiter) insertLocked(key sourceKey, now time.Time) int32 {
	cfg := l.cfg.Load()
	var i int32
	if len(l.buckets) < cfg.MaxSources {
		i = int32(len(l.buckets))
		l.buckets = append(l.buckets, bucket{})
	} else {
		i = l.tail
		l.unlinkLocked(i)
		delete(l.sources, l.buckets[i].key)
		l.stats.SourcesEvicted.Add(1)
	}
	l.buckets[i] = bucket{key: key, tokens: float64(cfg.HandshakeBurst), last: now, prev: -1, next: -1}
	l.sources[key] = i
	l.pushFrontLocked(i)
	return i
}

func (l *Limiter) moveToFrontLocked(i int32) {
	if l.head != i {
		l.unlinkLocked(i)
		l.pushFrontLocked(i)
	}
}

func (l *Limiter) unlinkLocked(i int32) {
	b := &l.buckets[i]
	if b.prev >= 0 {
		l.buckets[b.prev].next = b.next
	} else {
		l.head = b.next
	}
	if b.next >= 0 {
		l.buckets[b.next].prev = b.prev
	} else {
		l.tail = b.prev
	}
	b.prev, b.next = -1, -1
}

func (l *Limiter) pushFrontLocked(i int32) {
	b := &l.buckets[i]
	b.prev, b.next = -1, l.head
	if l.head >= 0 {
		l.buckets[l.head].prev = i
	}
	l.head = i
	if l.tail < 0 {
		l.tail = i
	}
}

// AcquireSession reserves a session for identity, verified by the TLS
// handshake. It returns a *LimitError wrapping ErrTooManySessions when the
// identity already holds MaxSessionsPerIdentity sessions, or
// ErrTooManyClients when MaxClients other identities hold sessions. An
// identity that already has a session is never refused by MaxClients, so a
// client can reconnect to a full server; sessions can therefore reach
// MaxClients×MaxSessionsPerIdentity, but only while reconnects overlap,
// as the server replaces an identity's older session.
//
// On success the caller must call release when the session ends (extra
// calls do nothing).
func (l *Limiter) AcquireSession(identity string) (release func(), err error) {
	cfg := l.cfg.Load()
	l.sessMu.Lock()
	defer l.sessMu.Unlock()
	n := l.identities[identity]
	if limit := cfg.MaxSessionsPerIdentity; limit >= 0 && n >= limit {
		l.stats.RefusedSessions.Add(1)
		return noRelease, &LimitError{Err: ErrTooManySessions, Max: limit, Identity: identity}
	}
	if limit := cfg.MaxClients; n == 0 && limit >= 0 && len(l.identities) >= limit {
		l.stats.RefusedClients.Add(1)
		return noRelease, &LimitError{Err: ErrTooManyClients, Max: limit, Identity: identity}
	}
	l.identities[identity] = n + 1
	l.sessions++
	var done atomic.Bool
	return func() {
		if done.CompareAndSwap(false, true) {
			l.releaseSession(identity)
		}
	}, nil
}

func (l *Limiter) releaseSession(identity string) {
	l.sessMu.Lock()
	defer l.sessMu.Unlock()
	if n := l.identities[identity] - 1; n > 0 {
		l.identities[identity] = n
	} else {
		delete(l.identities, identity)
	}
	l.sessions--
}

// Usage returns what the Limiter currently holds.
func (l *Limiter) Usage() LimitUsage {
	u := LimitUsage{Handshakes: int(l.handshakes.Load() + l.reserved.Load()), Queued: int(l.queued.Load())}
	l.srcMu.Lock()
	u.Sources = len(l.sources)
	l.srcMu.Unlock()
	l.sessMu.Lock()
	u.Clients, u.Sessions = len(l.identities), l.sessions
	l.sessMu.Unlock()
	return u
}

// LogValue renders usage and refusal counters for a periodic log line, e.g.
// log.Info("connection limits", "limits", lim), which a text handler
// prints as limits.handshakes=3 limits.sources=12 … limits.refused_rate=40.
// Log Config() once at startup for the limits themselves.
func (l *Limiter) LogValue() slog.Value {
	u := l.Usage()
	s := &l.stats
	return slog.GroupValue(
		slog.Int("handshakes", u.Handshakes),
		slog.Int("queued", u.Queued),
		slog.Int("sources", u.Sources),
		slog.Int("clients", u.Clients),
		slog.Int("sessions", u.Sessions),
		slog.Uint64("refused_handshakes", s.RefusedHandshakes.Load()),
		slog.Uint64("refused_source_handshakes", s.RefusedSource.Load()),
		slog.Uint64("refused_rate", s.RefusedRate.Load()),
		slog.Uint64("refused_no_resumption", s.RefusedResumption.Load()),
		slog.Uint64("reserved_handshakes", s.Reserved.Load()),
		slog.Uint64("refused_clients", s.RefusedClients.Load()),
		slog.Uint64("refused_sessions", s.RefusedSessions.Load()),
		slog.Uint64("sources_evicted", s.SourcesEvicted.Load()),
	)
}

// SourceAddr returns the IP address of a connection's remote address
// (net.Conn.RemoteAddr) for AllowSource, or the zero Addr if it has none.
func SourceAddr(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case nil:
		return netip.Addr{}
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
