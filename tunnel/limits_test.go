package tunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// t0 is an arbitrary start for injected time.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func TestLimitConfigDefaults(t *testing.T) {
	def := LimitConfig{
		MaxHandshakes:          DefaultMaxHandshakes,
		MaxHandshakesPerSource: DefaultMaxHandshakesPerSource,
		ReservedHandshakes:     DefaultReservedHandshakes,
		MaxQueued:              DefaultMaxQueued,
		MaxQueueWait:           DefaultMaxQueueWait,
		KnownFor:               DefaultKnownFor,
		HandshakeRate:          DefaultHandshakeRate,
		HandshakeBurst:         DefaultHandshakeBurst,
		MaxSources:             DefaultMaxSources,
		MaxClients:             DefaultMaxClients,
		MaxSessionsPerIdentity: DefaultMaxSessionsPerIdentity,
	}
	tests := []struct {
		name string
		in   LimitConfig
		want LimitConfig
	}{
		{"zero", LimitConfig{}, def},
		{"set", LimitConfig{1, 7, 8, 9, time.Second, time.Minute, 2.5, 3, 4, 5, 6}, LimitConfig{1, 7, 8, 9, time.Second, time.Minute, 2.5, 3, 4, 5, 6}},
		{"off", LimitConfig{MaxHandshakes: -5, MaxHandshakesPerSource: -1, ReservedHandshakes: -1, MaxQueued: -1, HandshakeRate: -1, MaxClients: -1, MaxSessionsPerIdentity: -2},
			LimitConfig{-1, -1, -1, -1, DefaultMaxQueueWait, DefaultKnownFor, -1, DefaultHandshakeBurst, DefaultMaxSources, -1, -1}},
		{"cannot turn off burst or sources", LimitConfig{HandshakeBurst: -1, MaxSources: -1}, def},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NewLimiter(tt.in).Config(); got != tt.want {
				t.Errorf("NewLimiter(%+v).Config() = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestLimitHandshakes(t *testing.T) {
	tests := []struct {
		name string
		max  int // config value
		n    int // acquisitions that must succeed before one fails; 0: none fails
	}{
		{"one", 1, 1},
		{"three", 3, 3},
		{"default", 0, DefaultMaxHandshakes},
		{"off", -1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLimiter(LimitConfig{MaxHandshakes: tt.max})
			var releases []func()
			count := tt.n
			if count == 0 {
				count = 1000
			}
			for i := range count {
				release, ok := l.AcquireHandshake()
				if !ok {
					t.Fatalf("AcquireHandshake() #%d refused, want ok", i+1)
				}
				releases = append(releases, release)
			}
			if got := l.Usage().Handshakes; got != count {
				t.Errorf("Usage().Handshakes = %d, want %d", got, count)
			}
			if tt.n == 0 {
				return
			}
			release, ok := l.AcquireHandshake()
			if ok {
				t.Fatalf("AcquireHandshake() with %d in progress = ok, want refused", tt.n)
			}
			release() // a refusal's release is a harmless no-op
			if got := l.Stats().RefusedHandshakes.Load(); got != 1 {
				t.Errorf("RefusedHandshakes = %d, want 1", got)
			}

			// Releasing twice frees one slot, not two.
			releases[0]()
			releases[0]()
			if _, ok := l.AcquireHandshake(); !ok {
				t.Fatalf("AcquireHandshake() after release refused, want ok")
			}
			if _, ok := l.AcquireHandshake(); ok {
				t.Fatalf("AcquireHandshake() after double release of one slot = ok, want refused")
			}
			for _, r := range releases[1:] {
				r()
			}
			if got := l.Usage().Handshakes; got != 1 {
				t.Errorf("Usage().Handshakes after releases = %d, want 1", got)
			}
		})
	}
}

func TestLimitSessions(t *testing.T) {
	// step acquires a session for id (and checks err), or, when release
	// is set, releases the session acquired at step index release-1.
	type step struct {
		id      string
		release int
		err     error
	}
	tests := []struct {
		name         string
		cfg          LimitConfig
		steps        []step
		clients      int // refusals expected
		sessions     int
		wantClients  int // usage at the end
		wantSessions int
	}{
		{
			name: "default two per identity",
			steps: []step{
				{id: "alice"}, {id: "alice"}, {id: "alice", err: ErrTooManySessions},
				{release: 1}, {id: "alice"},
			},
			sessions: 1, wantClients: 1, wantSessions: 2,
		},
		{
			name: "max clients",
			cfg:  LimitConfig{MaxClients: 2},
			steps: []step{
				{id: "a"}, {id: "b"}, {id: "c", err: ErrTooManyClients},
				{id: "a"}, // a reconnecting identity is not a new client
				{release: 2}, {id: "c"}, {id: "b", err: ErrTooManyClients},
			},
			clients: 2, wantClients: 2, wantSessions: 3,
		},
		{
			name: "one per identity",
			cfg:  LimitConfig{MaxSessionsPerIdentity: 1},
			steps: []step{
				{id: "a"}, {id: "a", err: ErrTooManySessions}, {id: "b"},
				{release: 1}, {release: 1}, {id: "a"}, {id: "a", err: ErrTooManySessions},
			},
			sessions: 2, wantClients: 2, wantSessions: 2,
		},
		{
			name: "sessions checked before clients",
			cfg:  LimitConfig{MaxClients: 1, MaxSessionsPerIdentity: 1},
			steps: []step{
				{id: "a"}, {id: "a", err: ErrTooManySessions}, {id: "b", err: ErrTooManyClients},
			},
			clients: 1, sessions: 1, wantClients: 1, wantSessions: 1,
		},
		{
			name: "off",
			cfg:  LimitConfig{MaxClients: -1, MaxSessionsPerIdentity: -1},
			steps: []step{
				{id: "a"}, {id: "a"}, {id: "a"}, {id: "b"}, {release: 4},
			},
			wantClients: 1, wantSessions: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLimiter(tt.cfg)
			releases := make([]func(), len(tt.steps))
			for i, s := range tt.steps {
				if s.release > 0 {
					releases[s.release-1]()
					continue
				}
				release, err := l.AcquireSession(s.id)
				releases[i] = release
				if !errors.Is(err, s.err) {
					t.Fatalf("step %d: AcquireSession(%q) = %v, want %v", i, s.id, err, s.err)
				}
				if err == nil {
					continue
				}
				var le *LimitError
				if !errors.As(err, &le) {
					t.Fatalf("step %d: AcquireSession(%q) = %T, want *LimitError", i, s.id, err)
				}
				want := l.Config().MaxClients
				if s.err == ErrTooManySessions {
					want = l.Config().MaxSessionsPerIdentity
				}
				if le.Max != want || le.Identity != s.id {
					t.Errorf("step %d: AcquireSession(%q) = %+v, want Max %d", i, s.id, le, want)
				}
			}
			st := l.Stats()
			if got, want := [2]uint64{st.RefusedClients.Load(), st.RefusedSessions.Load()},
				[2]uint64{uint64(tt.clients), uint64(tt.sessions)}; got != want {
				t.Errorf("refused clients, sessions = %v, want %v", got, want)
			}
			u := l.Usage()
			if u.Clients != tt.wantClients || u.Sessions != tt.wantSessions {
				t.Errorf("Usage() = %+v, want %d clients, %d sessions", u, tt.wantClients, tt.wantSessions)
			}
		})
	}
}

func TestLimitErrorMessage(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{&LimitError{Err: ErrTooManyClients, Max: 1024, Identity: "bob"}, "too many clients: limit of 1024 reached"},
		{&LimitError{Err: ErrTooManySessions, Max: 2, Identity: "bob"}, `too many sessions for one identity: "bob" is at the limit of 2`},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

func TestLimitSourceRate(t *testing.T) {
	type call struct {
		at   time.Duration // since t0
		want bool
	}
	allowed := func(at time.Duration, n int) []call {
		c := make([]call, n)
		for i := range c {
			c[i] = call{at, true}
		}
		return c
	}
	cat := func(parts ...[]call) []call {
		var all []call
		for _, p := range parts {
			all = append(all, p...)
		}
		return all
	}
	tests := []struct {
		name  string
		cfg   LimitConfig
		calls []call
	}{
		{
			name: "default burst then 50/s",
			calls: cat(allowed(0, DefaultHandshakeBurst), []call{
				{0, false},
				{10 * time.Millisecond, false}, // half a token
				{24 * time.Millisecond, true},  // 1.2 tokens
				{24 * time.Millisecond, false}, // 0.2 left
				{64 * time.Millisecond, true},  // 2.2 tokens
				{64 * time.Millisecond, true},
				{64 * time.Millisecond, false},
			}),
		},
		{
			name: "refill capped at burst",
			cfg:  LimitConfig{HandshakeRate: 1, HandshakeBurst: 3},
			calls: cat(allowed(0, 3), []call{{0, false}},
				allowed(time.Hour, 3), []call{{time.Hour, false}, {time.Hour + time.Second, true}}),
		},
		{
			name:  "clock going backwards gives nothing",
			cfg:   LimitConfig{HandshakeRate: 1, HandshakeBurst: 1},
			calls: []call{{time.Second, true}, {0, false}, {time.Second, false}, {2 * time.Second, true}},
		},
		{
			name:  "off",
			cfg:   LimitConfig{HandshakeRate: -1, HandshakeBurst: 1},
			calls: allowed(0, 100),
		},
	}
	src := netip.MustParseAddr("192.0.2.1")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := NewLimiter(tt.cfg)
			refused := 0
			for i, c := range tt.calls {
				if got := l.AllowSource(src, t0.Add(c.at)); got != c.want {
					t.Fatalf("call %d: AllowSource(%v, t0+%v) = %v, want %v", i, src, c.at, got, c.want)
				}
				if !c.want {
					refused++
				}
			}
			if got := l.Stats().RefusedRate.Load(); got != uint64(refused) {
				t.Errorf("RefusedRate = %d, want %d", got, refused)
			}
		})
	}
}

func TestLimitSourceBuckets(t *testing.T) {
	// With a burst of 1, the second call refuses exactly when both
	// addresses share a bucket.
	tests := []struct {
		a, b string
		same bool
	}{
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", true},
		{"2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"fe80::1%eth0", "fe80::2%eth1", true},
		{"192.0.2.1", "::ffff:192.0.2.1", true},
		{"192.0.2.1", "192.0.2.2", false},
		{"192.0.2.1", "::c000:201", false},
		{"0.0.0.0", "::", false},
	}
	for _, tt := range tests {
		t.Run(tt.a+" "+tt.b, func(t *testing.T) {
			l := NewLimiter(LimitConfig{HandshakeRate: 1, HandshakeBurst: 1})
			a, b := netip.MustParseAddr(tt.a), netip.MustParseAddr(tt.b)
			if !l.AllowSource(a, t0) {
				t.Fatalf("AllowSource(%v) first call refused", a)
			}
			if got := l.AllowSource(b, t0); got == tt.same {
				t.Errorf("AllowSource(%v) after %v = %v, want %v", b, a, got, !tt.same)
			}
		})
	}
}

func TestLimitSourceInvalidAllowed(t *testing.T) {
	l := NewLimiter(LimitConfig{HandshakeBurst: 1})
	for i := range 10 {
		if !l.AllowSource(netip.Addr{}, t0) {
			t.Fatalf("AllowSource(invalid) call %d refused, want allowed", i)
		}
	}
	if n := l.Usage().Sources; n != 0 {
		t.Errorf("Usage().Sources = %d, want 0", n)
	}
}

// checkLRU verifies the LRU list links every tracked source exactly once
// and returns the keys from most to least recently used.
func checkLRU(t *testing.T, l *Limiter) []sourceKey {
	t.Helper()
	l.srcMu.Lock()
	defer l.srcMu.Unlock()
	if len(l.sources) != len(l.buckets) {
		t.Fatalf("%d sources indexed, %d buckets", len(l.sources), len(l.buckets))
	}
	var keys []sourceKey
	prev := int32(-1)
	for i := l.head; i >= 0; i = l.buckets[i].next {
		b := &l.buckets[i]
		if b.prev != prev {
			t.Fatalf("bucket %d: prev %d, want %d", i, b.prev, prev)
		}
		if j, ok := l.sources[b.key]; !ok || j != i {
			t.Fatalf("bucket %d: key %x indexed at %d, %v", i, b.key, j, ok)
		}
		keys = append(keys, b.key)
		if len(keys) > len(l.buckets) {
			t.Fatalf("LRU list has a cycle")
		}
		prev = i
	}
	if l.tail != prev || len(keys) != len(l.buckets) {
		t.Fatalf("LRU list: tail %d, want %d; %d linked, %d buckets", l.tail, prev, len(keys), len(l.buckets))
	}
	return keys
}

func TestLimitSourceEviction(t *testing.T) {
	const max, n = 4096, 100_000
	l := NewLimiter(LimitConfig{HandshakeRate: 1, HandshakeBurst: 1}) // default MaxSources
	if got := l.Config().MaxSources; got != max {
		t.Fatalf("default MaxSources = %d, want %d", got, max)
	}
	keep := netip.MustParseAddr("2001:db8::1")
	if !l.AllowSource(keep, t0) {
		t.Fatalf("AllowSource(%v) first call refused", keep)
	}
	for i := range n {
		// Distinct /64s, touching keep now and then so it stays tracked.
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb9, 0, byte(i >> 16), byte(i >> 8), byte(i), 15: 1})
		if !l.AllowSource(a, t0) {
			t.Fatalf("AllowSource(%v) first call refused", a)
		}
		if i%1000 == 0 && l.AllowSource(keep, t0) {
			t.Fatalf("AllowSource(%v) with an empty bucket allowed; it was evicted", keep)
		}
		if i%10_000 == 0 {
			if u := l.Usage(); u.Sources > max {
				t.Fatalf("after %d sources: Usage().Sources = %d, want <= %d", i+1, u.Sources, max)
			}
		}
	}
	keys := checkLRU(t, l)
	if len(keys) != max || cap(l.buckets) > 2*max {
		t.Errorf("after %d sources: %d tracked (cap %d), want %d", n, len(keys), cap(l.buckets), max)
	}
	if got, want := l.Stats().SourcesEvicted.Load(), uint64(n+1-max); got != want {
		t.Errorf("SourcesEvicted = %d, want %d", got, want)
	}
	// The first sources are long gone and start again with a full bucket.
	first := netip.MustParseAddr("2001:db9::1")
	if !l.AllowSource(first, t0) {
		t.Errorf("AllowSource(%v) after eviction refused, want a fresh bucket", first)
	}
	if keys := checkLRU(t, l); keys[0] != keyOf(first) {
		t.Errorf("most recent source = %x, want %x", keys[0], keyOf(first))
	}
}

func TestLimitSourceLRUOrder(t *testing.T) {
	l := NewLimiter(LimitConfig{MaxSources: 3})
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}) }
	str := func(keys []sourceKey) string {
		var s []string
		for _, k := range keys {
			s = append(s, netip.AddrFrom16(k).Unmap().String())
		}
		return strings.Join(s, " ")
	}
	tests := []struct {
		touch int
		want  string // most recent first
	}{
		{1, "192.0.2.1"},
		{2, "192.0.2.2 192.0.2.1"},
		{3, "192.0.2.3 192.0.2.2 192.0.2.1"},
		{1, "192.0.2.1 192.0.2.3 192.0.2.2"},
		{4, "192.0.2.4 192.0.2.1 192.0.2.3"},
		{3, "192.0.2.3 192.0.2.4 192.0.2.1"},
		{3, "192.0.2.3 192.0.2.4 192.0.2.1"},
		{1, "192.0.2.1 192.0.2.3 192.0.2.4"},
		{5, "192.0.2.5 192.0.2.1 192.0.2.3"},
		{6, "192.0.2.6 192.0.2.5 192.0.2.1"},
	}
	for i, tt := range tests {
		l.AllowSource(addr(tt.touch), t0)
		if got := str(checkLRU(t, l)); got != tt.want {
			t.Errorf("step %d: after %v, LRU = %q, want %q", i, addr(tt.touch), got, tt.want)
		}
	}
}

func TestLimitAllowSourceAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	l := NewLimiter(LimitConfig{})
	srcs := []netip.Addr{
		netip.MustParseAddr("192.0.2.1"),
		netip.MustParseAddr("2001:db8::1"),
		netip.MustParseAddr("fe80::1%eth0"),
	}
	now := t0
	for _, a := range srcs {
		l.AllowSource(a, now)
	}
	for _, a := range srcs {
		allocs := testing.AllocsPerRun(1000, func() {
			now = now.Add(time.Millisecond)
			l.AllowSource(a, now)
		})
		if allocs != 0 {
			t.Errorf("AllowSource(%v) of a tracked source: %v allocs, want 0", a, allocs)
		}
	}
}

func TestLimitConcurrent(t *testing.T) {
	l := NewLimiter(LimitConfig{MaxHandshakes: 8, MaxSources: 64, MaxClients: 16, HandshakeBurst: 5})
	const workers, iters = 8, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			now := t0
			for i := range iters {
				now = now.Add(time.Millisecond)
				l.AllowSource(netip.AddrFrom4([4]byte{10, 0, byte(w), byte(i % 100)}), now)
				hs, ok := l.AcquireHandshake()
				id := fmt.Sprintf("client-%d", (w*iters+i)%40)
				rs, err := l.AcquireSession(id)
				if err != nil && !errors.Is(err, ErrTooManyClients) && !errors.Is(err, ErrTooManySessions) {
					t.Errorf("AcquireSession(%q) = %v", id, err)
				}
				if i%50 == 0 {
					_ = l.LogValue().Resolve()
				}
				if ok {
					if n := l.Usage().Handshakes; n > 8 {
						t.Errorf("%d handshakes in progress, limit 8", n)
					}
					hs()
				}
				if u := l.Usage(); u.Clients > 16 || u.Sessions > 32 {
					t.Errorf("Usage() = %+v over limits", u)
				}
				rs()
			}
		})
	}
	wg.Wait()
	if u := l.Usage(); u.Handshakes != 0 || u.Clients != 0 || u.Sessions != 0 || u.Sources > 64 {
		t.Errorf("Usage() after all releases = %+v, want none held and <= 64 sources", u)
	}
	checkLRU(t, l)
}

func TestLimitLogValue(t *testing.T) {
	l := NewLimiter(LimitConfig{MaxHandshakes: 1, HandshakeBurst: 1, MaxClients: 1})
	l.AcquireHandshake()
	l.AcquireHandshake()
	src := netip.MustParseAddr("192.0.2.1")
	l.AllowSource(src, t0)
	l.AllowSource(src, t0)
	l.AcquireSession("a")
	l.AcquireSession("b")
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	log.Info("connection limits", "limits", l)
	want := "level=INFO msg=\"connection limits\" limits.handshakes=1 limits.queued=0 limits.sources=1 limits.clients=1 limits.sessions=1 " +
		"limits.refused_handshakes=1 limits.refused_source_handshakes=0 limits.refused_rate=1 limits.refused_no_resumption=0 " +
		"limits.reserved_handshakes=0 limits.refused_clients=1 limits.refused_sessions=0 limits.sources_evicted=0\n"
	if got := buf.String(); got != want {
		t.Errorf("log line:\n got %q\nwant %q", got, want)
	}
}

func TestLimitSourceAddr(t *testing.T) {
	tests := []struct {
		in   net.Addr
		want netip.Addr
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 443}, netip.MustParseAddr("192.0.2.1")},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 443}, netip.MustParseAddr("2001:db8::1")},
		{&net.UDPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}, netip.MustParseAddr("192.0.2.7")},
		{(*net.TCPAddr)(nil), netip.Addr{}},
		{nil, netip.Addr{}},
		{&net.UnixAddr{Name: "/run/x.sock", Net: "unix"}, netip.Addr{}},
	}
	for _, tt := range tests {
		if got := SourceAddr(tt.in); got != tt.want {
			t.Errorf("SourceAddr(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if got := SourceAddr(p1.RemoteAddr()); got.IsValid() {
		t.Errorf("SourceAddr(pipe) = %v, want invalid", got)
	}
}

// TestLimitAdmit: the per-source share of the handshakes, the queue for
// slots and its wait, the reserved slots and who may use them without
// resuming, and that a refusal for the per-source share spends no token.
func TestLimitAdmit(t *testing.T) {
	a, b, c := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	l := NewLimiter(LimitConfig{MaxHandshakes: 2, MaxHandshakesPerSource: 2, ReservedHandshakes: 1, MaxQueued: 2,
		MaxQueueWait: 50 * time.Millisecond, HandshakeRate: 1, HandshakeBurst: 3})
	admit := func(src netip.Addr) (*Admission, error) { return l.Admit(src, t0) }
	ctx := context.Background()
	a1, err1 := admit(a)
	a2, err2 := admit(a)
	if err1 != nil || err2 != nil || a1.Queued() || a2.Queued() {
		t.Fatalf("first two from a: %v, %v", err1, err2)
	}
	if _, err := admit(a); !errors.Is(err, ErrSourceHandshakes) {
		t.Fatalf("third from a: %v, want %v", err, ErrSourceHandshakes)
	}
	// b is queued (both shared slots taken; b is not known), and gets a
	// slot in turn when a releases one.
	b1, err := admit(b)
	if err != nil || !b1.Queued() {
		t.Fatalf("b with the shared slots taken: %v, queued %v", err, b1 != nil && b1.Queued())
	}
	got := make(chan error, 1)
	go func() { got <- b1.Wait(ctx) }()
	a1.Release()
	a1.Release() // extra calls do nothing
	if err := <-got; err != nil || b1.MustResume {
		t.Fatalf("b after a release: %v (must resume %v)", err, b1.MustResume)
	}
	// a's refusal above took no token: a had 3, used 2.
	a3, err := admit(a)
	if err != nil || !a3.Queued() {
		t.Fatalf("a again: %v", err)
	}
	// c waits in vain and, after MaxQueueWait, takes the reserved slot,
	// which it may keep only by resuming (c is not known).
	c1, _ := admit(c)
	if err := c1.Wait(ctx); err != nil || !c1.MustResume {
		t.Fatalf("c after the wait: %v, must resume %v", err, c1.MustResume)
	}
	if err := a3.Wait(ctx); !errors.Is(err, ErrHandshakes) {
		t.Fatalf("a3 with every slot taken: %v, want %v", err, ErrHandshakes)
	}
	a3.Release()
	// A known source takes a reserved slot at once, with no resumption.
	c1.Release()
	l.MarkKnown(c, t0)
	c2, err := admit(c)
	if err != nil || c2.Queued() || c2.MustResume {
		t.Fatalf("known c: %v, queued %v, must resume %v", err, c2.Queued(), c2.MustResume)
	}
	// The queue holds MaxQueued.
	q1, _ := admit(netip.MustParseAddr("192.0.2.4"))
	q2, _ := admit(netip.MustParseAddr("192.0.2.5"))
	if _, err := admit(netip.MustParseAddr("192.0.2.6")); !errors.Is(err, ErrHandshakes) || !q1.Queued() || !q2.Queued() {
		t.Fatalf("past MaxQueued: %v", err)
	}
	if u := l.Usage(); u.Handshakes != 3 || u.Queued != 2 {
		t.Fatalf("usage %+v, want 3 handshakes and 2 queued", u)
	}
	st := l.Stats()
	if st.RefusedSource.Load() != 1 || st.RefusedHandshakes.Load() != 2 || st.Reserved.Load() != 2 {
		t.Fatalf("stats: source %d, handshakes %d, reserved %d", st.RefusedSource.Load(), st.RefusedHandshakes.Load(), st.Reserved.Load())
	}
}
