package server

// The listen port shared with a web server (--share-backend): the TCP
// listener is wrapped in a transport.ShareListener, so that the tunnel
// server accepts only connections that offer the VPN's ALPN; the rest
// are relayed to the web server before any of the VPN's limits sees
// them. Its relay limits reload live; the backend and the PROXY header
// need a restart (they are not in liveSettings).

import (
	"tlsvpn/internal/service"
	"tlsvpn/transport"
	"tlsvpn/tunnel"
)

// shareListener wraps s.ln for cfg.ShareBackend.
func (s *Server) shareListener(cfg Config) error {
	sh, err := transport.NewShareListener(s.ln, transport.ShareConfig{
		ALPN:          tunnel.ALPN,
		Backend:       cfg.ShareBackend,
		ProxyProtocol: cfg.ShareProxyProtocol,
		MaxRelays:     cfg.ShareMaxConns,
		IdleTimeout:   cfg.ShareIdleTimeout,
		Logger:        s.log.With("share_backend", cfg.ShareBackend),
	})
	if err != nil {
		return err
	}
	s.share, s.ln = sh, sh
	s.onClose(func() { sh.Close() })
	maxRelays, idle := sh.Limits()
	s.log.Info("sharing the listen port: connections without the VPN's ALPN are relayed", "backend", cfg.ShareBackend,
		"proxy_protocol", cfg.ShareProxyProtocol, "max_conns", maxRelays, "idle_timeout", idle,
		"max_peeking", transport.DefaultShareMaxPeeking, "max_peeking_per_source", transport.DefaultShareMaxPeekingPerSource,
		"peek_timeout", transport.DefaultSharePeekTimeout)
	return nil
}

// shareGauges are the shared port's metrics (none when not shared).
func (s *Server) shareGauges() []service.Gauge {
	if s.share == nil {
		return nil
	}
	st := s.share.Stats()
	counter := func(name, help string, v interface{ Load() uint64 }) service.Gauge {
		return service.Gauge{Name: name, Help: help, Counter: true, Value: func() float64 { return float64(v.Load()) }}
	}
	gauge := func(name, help string, v interface{ Load() int64 }) service.Gauge {
		return service.Gauge{Name: name, Help: help, Value: func() float64 { return float64(v.Load()) }}
	}
	return []service.Gauge{
		counter("share_tunnel_total", "Connections on the shared port that offered the VPN's ALPN.", &st.Tunnel),
		counter("share_relayed_total", "Connections on the shared port relayed to --share-backend.", &st.Relayed),
		counter("share_relayed_other_tls_total", "Connections for --share-backend whose ClientHello did not offer the VPN's ALPN.", &st.OtherTLS),
		counter("share_relayed_not_tls_total", "Connections for --share-backend that did not start with a well-formed TLS ClientHello.", &st.NotTLS),
		counter("share_relayed_no_hello_total", "Connections for --share-backend without a complete ClientHello in time (silent, slow or evicted).", &st.NoHello),
		counter("share_evicted_total", "Waits for a ClientHello cut short by newer connections (the peeking bounds).", &st.Evicted),
		counter("share_refused_total", "Connections closed because --share-max-conns relays were open.", &st.RefusedRelays),
		counter("share_backend_errors_total", "Relayed connections the backend did not take (connect or first write failed).", &st.BackendErrors),
		counter("share_idle_timeouts_total", "Relays closed after --share-idle-timeout without a byte.", &st.IdleTimeouts),
		counter("share_relay_bytes_in_total", "Bytes relayed from clients to the backend.", &st.BytesIn),
		counter("share_relay_bytes_out_total", "Bytes relayed from the backend to clients.", &st.BytesOut),
		gauge("share_relays", "Relays open now.", &st.Relaying),
		gauge("share_peeking", "Connections on the shared port whose ClientHello is awaited.", &st.Peeking),
	}
}
