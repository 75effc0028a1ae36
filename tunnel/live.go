package tunnel

import (
	"net/netip"
	"slices"
	"time"
)

// Live holds the server settings that may change while it runs
// (Server.SetLive, for tunneld's reload). NewServer takes their first
// values from ServerConfig; a connection reads them once, when it is
// accepted, so a change applies to connections and sessions that start
// after it. Zero values mean the ServerConfig defaults.
type Live struct {
	Routes           []netip.Prefix // ServerConfig.Routes
	DNS              []netip.Addr   // ServerConfig.DNS
	Keepalive        time.Duration  // ServerConfig.Keepalive
	HandshakeTimeout time.Duration  // ServerConfig.HandshakeTimeout
	HelloTimeout     time.Duration  // ServerConfig.HelloTimeout
	MaxConnections   int            // ServerConfig.MaxConnections
	QueueLen         int            // ServerConfig.QueueLen
}

func (l Live) withDefaults() Live {
	if l.HandshakeTimeout <= 0 {
		l.HandshakeTimeout = 10 * time.Second
	}
	if l.HelloTimeout <= 0 {
		l.HelloTimeout = 2 * time.Second
	}
	l.Routes, l.DNS = slices.Clone(l.Routes), slices.Clone(l.DNS)
	return l
}

// liveOf returns the Live part of cfg.
func liveOf(cfg ServerConfig) Live {
	return Live{Routes: cfg.Routes, DNS: cfg.DNS, Keepalive: cfg.Keepalive, HandshakeTimeout: cfg.HandshakeTimeout,
		HelloTimeout: cfg.HelloTimeout, MaxConnections: cfg.MaxConnections, QueueLen: cfg.QueueLen}.withDefaults()
}

// Live returns the settings in force.
func (s *Server) Live() Live { return *s.live.Load() }

// SetLive changes the settings of a running server. Routes and DNS are
// part of the CONFIG each client received, so the live sessions whose
// CONFIG they change are closed with CloseReconfigure and their clients
// reconnect at once to get the new one: every session when DNS changed,
// those without routes of their own (Policy.Routes) when Routes changed.
// Every other session is untouched; a new Keepalive, HandshakeTimeout,
// HelloTimeout, MaxConnections or QueueLen applies to connections accepted
// from now on. It returns the identities whose sessions it closed, sorted.
func (s *Server) SetLive(l Live) []string {
	l = l.withDefaults()
	s.mu.Lock() // against handle's registration: see there
	old := s.live.Swap(&l)
	dnsChanged := !slices.Equal(old.DNS, l.DNS)
	routesChanged := !slices.Equal(old.Routes, l.Routes)
	var closing []*Session
	var ids []string
	for id, sess := range s.sessions {
		if dnsChanged || (routesChanged && sess.policy.Routes == nil) {
			closing = append(closing, sess)
			ids = append(ids, id)
		}
	}
	s.mu.Unlock()
	for i, sess := range closing {
		s.log.Info("closing session to apply a new configuration", "peer", ids[i], "reason", "pushed routes or DNS changed")
		sess.Close(CloseReconfigure, "the server's routes or DNS changed")
	}
	slices.Sort(ids)
	return ids
}
