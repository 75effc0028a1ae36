package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"

	"tlsvpn/tun"
)

// Mux reads the TUN device in batches and dispatches each packet to the
// session that owns its destination address: on a server, the client the
// address was assigned to; on a client, the one session (SetDefault).
//
// Small packets bound for the same session are copied back to back into a
// chunk of frames; a big packet (a GSO super-packet) is framed in place in
// its read buffer and handed over whole, the reader taking a fresh buffer.
// Chunks go to the session's bounded queue; a full queue drops and counts,
// so one slow session never stalls the reader or the other sessions.
type Mux struct {
	// Immutable after NewMux.
	dev   tun.Device
	log   *slog.Logger
	stats *Stats

	mu     sync.Mutex                 // serializes route-table updates
	routes atomic.Pointer[routeTable] // dst address -> session; copy on write
	def    atomic.Pointer[Session]    // if set, receives every packet

	// Reader-goroutine state.
	rd      []*chunk
	bufs    [][]byte
	sizes   []int
	touched []*Session
}

type routeTable map[netip.Addr]*Session

// NewMux returns a Mux reading from dev. stats may be nil.
func NewMux(dev tun.Device, stats *Stats, log *slog.Logger) *Mux {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if stats == nil {
		stats = new(Stats)
	}
	n := dev.BatchSize()
	if n < 1 {
		n = 1
	}
	m := &Mux{
		dev:     dev,
		log:     log,
		stats:   stats,
		rd:      make([]*chunk, n),
		bufs:    make([][]byte, n),
		sizes:   make([]int, n),
		touched: make([]*Session, 0, n),
	}
	for i := range m.rd {
		m.rd[i] = getChunk()
		m.bufs[i] = m.rd[i].buf
	}
	m.routes.Store(&routeTable{})
	return m
}

// SetDefault makes s receive every packet read from the device (a client's
// one session); nil stops that.
func (m *Mux) SetDefault(s *Session) { m.def.Store(s) }

// Add routes packets for addrs to s and returns the sessions that owned any
// of those addresses before (to be closed by the caller).
func (m *Mux) Add(s *Session, addrs ...netip.Addr) []*Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.routes.Load()
	next := make(routeTable, len(old)+len(addrs))
	for a, o := range old {
		next[a] = o
	}
	var replaced []*Session
	for _, a := range addrs {
		if o := next[a]; o != nil && o != s {
			replaced = append(replaced, o)
		}
		next[a] = s
	}
	m.routes.Store(&next)
	return replaced
}

// Remove drops every route to s. It is a no-op for addresses that were
// already taken over by another session.
func (m *Mux) Remove(s *Session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.routes.Load()
	next := make(routeTable, len(old))
	for a, o := range old {
		if o != s {
			next[a] = o
		}
	}
	m.routes.Store(&next)
	m.def.CompareAndSwap(s, nil)
}

// Lookup returns the session that owns addr, or nil.
func (m *Mux) Lookup(addr netip.Addr) *Session { return (*m.routes.Load())[addr] }

// Run reads the device until it is closed or ctx ends. It returns nil when
// the device was closed.
func (m *Mux) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		for i := range m.bufs {
			m.bufs[i] = m.rd[i].buf
		}
		n, err := m.dev.Read(m.bufs, m.sizes, tun.Headroom)
		if err != nil {
			if errors.Is(err, tun.ErrClosed) || errors.Is(err, os.ErrClosed) {
				return nil
			}
			if n == 0 {
				return fmt.Errorf("read tun: %w", err)
			}
		}
		m.dispatch(n)
	}
	return nil
}

// dispatch hands the first n packets read into m.rd to their sessions.
func (m *Mux) dispatch(n int) {
	def := m.def.Load()
	routes := *m.routes.Load()
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
			if s = routes[dst]; s == nil {
				m.stats.DropNoSession.Add(1)
				continue
			}
		}
		if size >= bigPacket {
			if s.open != nil {
				s.enqueue(s.open)
				s.open = nil
			}
			c := m.rd[i]
			c.frameInPlace(size)
			m.rd[i] = getChunk()
			s.enqueue(c)
			continue
		}
		if s.open != nil && !s.open.room(size) {
			s.enqueue(s.open)
			s.open = nil
		}
		if s.open == nil {
			s.open = getChunk()
		}
		if !s.touched {
			s.touched = true
			m.touched = append(m.touched, s)
		}
		s.open.appendPacket(pkt)
	}
	for _, s := range m.touched {
		if s.open != nil {
			s.enqueue(s.open)
			s.open = nil
		}
		s.touched = false
	}
	clear(m.touched)
	m.touched = m.touched[:0]
}
