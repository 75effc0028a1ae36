package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"tlsvpn/tun"
)

// Mux reads the TUN device in batches and dispatches each packet to the
// session that owns its destination address: on a server, the client the
// address was assigned to; on a client, the one session (SetDefault).
//
// Small packets bound for the same session are copied back to back into a
// chunk of frames; a big packet (a GSO super-packet) is framed in place in
// its read buffer and handed over whole, the reader taking a fresh buffer.
// Chunks go to the session's bounded queue. When a queue is full the
// reader waits up to QueueWait for room (back-pressure that TCP senders
// feel as a slower path, not as loss), then marks the session congested
// and drops, counting, until its writer catches up: one stalled session
// costs the others at most one wait.
//
// In GSO mode (SetGSO) the reader takes packets from the device without
// splitting them and sends them with their segmentation metadata as
// DATA_GSO frames; otherwise the device splits super-packets and the
// packets go as DATA frames.
type Mux struct {
	// Immutable after NewMux.
	dev       tun.Device
	gdev      tun.GSODevice // nil if dev cannot pass super-packets
	log       *slog.Logger
	stats     *Stats
	queueWait time.Duration

	mu     sync.Mutex              // serializes route-table updates
	routes routeTable              // dst -> session
	def    atomic.Pointer[Session] // if set, receives every packet
	gso    atomic.Bool             // read super-packets whole

	// Reader-goroutine state.
	rd      []*chunk
	bufs    [][]byte
	sizes   []int
	touched []*Session
	timer   *time.Timer
}

// routeTable maps destinations to sessions: tunnel addresses exactly (the
// common case, one map lookup), and networks behind clients (site-to-site
// prefixes) by longest match. Readers (the TUN reader, per packet) take no
// lock. Writers copy what they change under Mux.mu: one shard of the
// address map (the addresses are spread over 4096 shards by their last 12
// bits, so a shard of a server with 10,000 clients holds two or three), or
// the short list of networks. Registering or removing a client therefore costs
// the same whatever the number of clients.
type routeTable struct {
	shards [routeShards]atomic.Pointer[map[netip.Addr]*Session]
	nets   atomic.Pointer[[]netRoute] // longest prefix first
}

const routeShards = 4096

type netRoute struct {
	p netip.Prefix
	s *Session
}

// shardOf returns the shard of a: its last 12 bits, which vary fastest
// across the addresses a pool hands out.
func shardOf(a netip.Addr) int {
	b := a.As16()
	return int(b[14]&0x0f)<<8 | int(b[15])
}

// lookup returns the session for dst, or nil.
func (t *routeTable) lookup(dst netip.Addr) *Session {
	if m := t.shards[shardOf(dst)].Load(); m != nil {
		if s := (*m)[dst]; s != nil {
			return s
		}
	}
	if nets := t.nets.Load(); nets != nil {
		for i := range *nets {
			if (*nets)[i].p.Contains(dst) {
				return (*nets)[i].s
			}
		}
	}
	return nil
}

// setLocked routes a to s (nil: removes a) in a copy of a's shard and
// returns the session that had it. The caller holds Mux.mu.
func (t *routeTable) setLocked(a netip.Addr, s *Session) (old *Session) {
	sh := &t.shards[shardOf(a)]
	cur := sh.Load()
	next := make(map[netip.Addr]*Session, 1)
	if cur != nil {
		old = (*cur)[a]
		next = make(map[netip.Addr]*Session, len(*cur)+1)
		maps.Copy(next, *cur)
	}
	if s == nil {
		delete(next, a)
	} else {
		next[a] = s
	}
	sh.Store(&next)
	return old
}

// netsLocked returns a copy of the network routes to change. The caller
// holds Mux.mu.
func (t *routeTable) netsLocked() []netRoute {
	if n := t.nets.Load(); n != nil {
		return slices.Clone(*n)
	}
	return nil
}

// maxGSOBatch bounds the packets one ReadGSO call takes: super-packets are
// up to 64 KiB each, so a few fill a TLS write.
const maxGSOBatch = 32

// MuxConfig configures a Mux.
type MuxConfig struct {
	// QueueWait is how long the reader waits for room in a full session
	// queue before dropping. Zero means DefaultQueueWait.
	QueueWait time.Duration
	Stats     *Stats
	Logger    *slog.Logger
}

// DefaultQueueWait is the default QueueWait.
const DefaultQueueWait = 20 * time.Millisecond

// NewMux returns a Mux reading from dev.
func NewMux(dev tun.Device, cfg MuxConfig) *Mux {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Stats == nil {
		cfg.Stats = new(Stats)
	}
	if cfg.QueueWait <= 0 {
		cfg.QueueWait = DefaultQueueWait
	}
	n := max(dev.BatchSize(), 1)
	m := &Mux{
		dev:       dev,
		log:       cfg.Logger,
		stats:     cfg.Stats,
		queueWait: cfg.QueueWait,
		rd:        make([]*chunk, max(n, maxGSOBatch)),
		sizes:     make([]int, max(n, maxGSOBatch)),
		timer:     time.NewTimer(time.Hour),
	}
	m.timer.Stop()
	if g, ok := dev.(tun.GSODevice); ok && g.SupportsGSO() {
		m.gdev = g
	}
	m.bufs = make([][]byte, len(m.rd))
	m.touched = make([]*Session, 0, len(m.rd))
	for i := range m.rd {
		m.rd[i] = getChunk()
		m.bufs[i] = m.rd[i].buf
	}
	return m
}

// CanGSO reports whether the device can pass super-packets whole.
func (m *Mux) CanGSO() bool { return m.gdev != nil }

// SetGSO switches between reading super-packets whole (every session that
// may receive packets accepts DATA_GSO) and letting the device split them.
// It takes effect from the reader's next read.
func (m *Mux) SetGSO(on bool) { m.gso.Store(on && m.gdev != nil) }

// SetDefault makes s receive every packet read from the device (a client's
// one session); nil stops that.
func (m *Mux) SetDefault(s *Session) { m.def.Store(s) }

// Add routes packets for addrs to s and returns the sessions that owned any
// of those addresses before (to be closed by the caller).
func (m *Mux) Add(s *Session, addrs ...netip.Addr) []*Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	var replaced []*Session
	for _, a := range addrs {
		if o := m.routes.setLocked(a, s); o != nil && o != s {
			replaced = append(replaced, o)
		}
		if !slices.Contains(s.muxAddrs, a) {
			s.muxAddrs = append(s.muxAddrs, a)
		}
	}
	return replaced
}

// SetNets routes packets for the networks nets (a site gateway's LANs) to
// s, replacing the networks s had before. A network routed to another
// session moves to s. Addresses added with Add take precedence over any
// network, and the most specific network wins.
func (m *Mux) SetNets(s *Session, nets []netip.Prefix) {
	m.mu.Lock()
	defer m.mu.Unlock()
	next := slices.DeleteFunc(m.routes.netsLocked(), func(r netRoute) bool {
		return r.s == s || slices.Contains(nets, r.p)
	})
	for _, p := range nets {
		next = append(next, netRoute{p.Masked(), s})
	}
	slices.SortStableFunc(next, func(a, b netRoute) int { return b.p.Bits() - a.p.Bits() })
	m.routes.nets.Store(&next)
}

// Remove drops every route to s. It is a no-op for addresses and networks
// that were already taken over by another session. It costs the same
// whatever the number of sessions (it visits only s's addresses).
func (m *Mux) Remove(s *Session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, a := range s.muxAddrs {
		if m.routes.lookupHost(a) == s {
			m.routes.setLocked(a, nil)
		}
	}
	s.muxAddrs = nil
	if cur := m.routes.nets.Load(); cur != nil && slices.ContainsFunc(*cur, func(r netRoute) bool { return r.s == s }) {
		next := slices.DeleteFunc(m.routes.netsLocked(), func(r netRoute) bool { return r.s == s })
		m.routes.nets.Store(&next)
	}
	m.def.CompareAndSwap(s, nil)
}

// lookupHost returns the session an address is routed to, or nil.
func (t *routeTable) lookupHost(a netip.Addr) *Session {
	if m := t.shards[shardOf(a)].Load(); m != nil {
		return (*m)[a]
	}
	return nil
}

// Sessions calls fn for every routed session (once per session).
func (m *Mux) Sessions(fn func(*Session)) {
	seen := map[*Session]bool{}
	for i := range m.routes.shards {
		if sh := m.routes.shards[i].Load(); sh != nil {
			for _, s := range *sh {
				if !seen[s] {
					seen[s] = true
					fn(s)
				}
			}
		}
	}
	if nets := m.routes.nets.Load(); nets != nil {
		for _, r := range *nets {
			if !seen[r.s] {
				seen[r.s] = true
				fn(r.s)
			}
		}
	}
}

// Lookup returns the session that packets for addr go to, or nil.
func (m *Mux) Lookup(addr netip.Addr) *Session { return m.routes.lookup(addr) }

// Run reads the device until it is closed or ctx ends. It returns nil when
// the device was closed.
func (m *Mux) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		n, raw, err := m.read()
		if err != nil {
			if errors.Is(err, tun.ErrClosed) || errors.Is(err, os.ErrClosed) {
				return nil
			}
			if n == 0 {
				return fmt.Errorf("read tun: %w", err)
			}
		}
		m.dispatch(n, raw)
	}
	return nil
}

// read reads one batch into m.rd: whole super-packets with their
// virtio-net headers in GSO mode (raw), split packets otherwise.
func (m *Mux) read() (n int, raw bool, err error) {
	for i := range m.bufs {
		m.bufs[i] = m.rd[i].buf
	}
	if m.gso.Load() {
		n, err = m.gdev.ReadGSO(m.bufs[:maxGSOBatch], m.sizes, tun.Headroom)
		return n, true, err
	}
	n, err = m.dev.Read(m.bufs[:min(m.dev.BatchSize(), len(m.bufs))], m.sizes, tun.Headroom)
	return n, false, err
}

// dispatch hands the first n packets read into m.rd to their sessions. raw
// says the packets carry virtio-net headers (GSO mode).
func (m *Mux) dispatch(n int, raw bool) {
	def := m.def.Load()
	routes := &m.routes
	for i := 0; i < n; i++ {
		size := m.sizes[i]
		pkt := m.rd[i].buf[tun.Headroom : tun.Headroom+size]
		s := def
		if s == nil {
			dst, ok := dstAddr(pkt)
			if !ok {
				m.stats.DropMalformed.Add(1)
				continue
			}
			if s = routes.lookup(dst); s == nil {
				m.stats.DropNoSession.Add(1)
				continue
			}
		}
		gso := false
		var g GSO
		if raw {
			var h tun.VirtioHdr
			h.Decode(m.rd[i].buf[tun.Headroom-tun.VirtioNetHdrLen:])
			if h.GSOType != tun.VirtioGSONone || h.Flags != 0 {
				if !s.peerGSO {
					// The session joined after this read switched to
					// GSO mode and cannot take the super-packet.
					m.stats.DropNoGSO.Add(1)
					continue
				}
				gso, g = true, gsoOf(h)
			}
		}
		if size >= bigPacket {
			if s.open != nil {
				m.enqueue(s, s.open)
				s.open = nil
			}
			c := m.rd[i]
			if gso {
				c.frameGSOInPlace(g, size)
			} else {
				c.frameInPlace(size)
			}
			m.rd[i] = getChunk()
			m.enqueue(s, c)
			continue
		}
		if s.open != nil && !s.open.roomGSO(size) {
			m.enqueue(s, s.open)
			s.open = nil
		}
		if s.open == nil {
			s.open = getChunk()
		}
		if !s.touched {
			s.touched = true
			m.touched = append(m.touched, s)
		}
		if gso {
			s.open.appendGSO(g, pkt)
		} else {
			s.open.appendPacket(pkt)
		}
	}
	for _, s := range m.touched {
		if s.open != nil {
			m.enqueue(s, s.open)
			s.open = nil
		}
		s.touched = false
	}
	clear(m.touched)
	m.touched = m.touched[:0]
}

// enqueue hands a chunk to s's writer, waiting up to queueWait for room
// unless s is already congested, and drops it (counted) otherwise.
func (m *Mux) enqueue(s *Session, c *chunk) {
	select {
	case s.queue <- c:
		return
	default:
	}
	if !s.congested.Load() {
		m.timer.Reset(m.queueWait)
		select {
		case s.queue <- c:
			m.timer.Stop()
			return
		case <-m.timer.C:
			s.congested.Store(true)
		case <-s.done:
			m.timer.Stop()
		}
	}
	m.stats.DropQueueFull.Add(uint64(c.pkts))
	putChunk(c)
}
