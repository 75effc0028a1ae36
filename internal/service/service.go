// Package service holds what the daemons do while they run, shared by
// the daemon packages (tlsvpn/client) and the commands: the Prometheus
// metrics endpoint, systemd readiness notification, TCP socket options and
// congestion control, the record-layer choice, the errors that decide the
// exit status, and log and error helpers. It sits outside cmd/ so that
// library packages can use it; cmd/internal/cli forwards to it.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"tlsvpn/tunnel"
)

// Gauge is an extra gauge for the metrics endpoint.
type Gauge struct {
	Name, Help string
	Value      func() float64
	// Counter exports the value as a counter (it only grows).
	Counter bool
}

// ServeMetrics serves Prometheus metrics for stats (and the extra gauges)
// at http://addr/metrics until ctx ends. The counters are read from the
// tunnel's atomics at scrape time, so the data path pays nothing.
//
// With ready set, http://addr/ready answers 200 "ready" while ready()
// is true and 503 "draining" otherwise, for a load balancer's health
// check. The extra collectors (histograms, say) are served as they are.
func ServeMetrics(ctx context.Context, addr, prefix string, stats *tunnel.Stats, gauges []Gauge, lim *tunnel.Limiter, ready func() bool, log *slog.Logger, extra ...prometheus.Collector) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(extra...)
	if lim != nil {
		reg.MustRegister(refusedCollector{
			desc: prometheus.NewDesc(prefix+"_refused_connections_total", "Connections refused by a limit, by limit.", []string{"limit"}, nil),
			lim:  lim,
		})
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	counter := func(name, help string, v interface{ Load() uint64 }) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: prefix + "_" + name, Help: help},
			func() float64 { return float64(v.Load()) }))
	}
	counter("tx_packets_total", "Packets sent to peers.", &stats.TxPackets)
	counter("tx_bytes_total", "IP bytes sent to peers.", &stats.TxBytes)
	counter("rx_packets_total", "Packets received from peers and written to the TUN device.", &stats.RxPackets)
	counter("rx_bytes_total", "IP bytes received from peers.", &stats.RxBytes)
	drops := prometheus.NewDesc(prefix+"_dropped_packets_total", "Packets dropped, by reason.", []string{"reason"}, nil)
	reg.MustRegister(dropCollector{desc: drops, stats: stats})
	counter("sessions_opened_total", "Sessions established.", &stats.SessionsOpened)
	counter("sessions_closed_total", "Sessions ended.", &stats.SessionsClosed)
	counter("sessions_replaced_total", "Sessions replaced by a newer connection of the same identity.", &stats.SessionsReplaced)
	counter("handshake_failures_total", "Connections that failed the TLS or protocol handshake.", &stats.HandshakeFailures)
	counter("protocol_errors_total", "Sessions closed because the peer broke the protocol.", &stats.ProtocolErrors)
	counter("keepalive_timeouts_total", "Sessions closed because the peer went silent.", &stats.KeepaliveTimeouts)
	counter("control_frames_total", "Control frames received.", &stats.ControlFrames)
	counter("panics_total", "Recovered panics; each closed only its own session or connection.", &stats.Panics)
	counter("advertise_refused_total", "Networks a client advertised that its policy does not allow.", &stats.AdvertiseRefused)
	counter("record_handovers_total", "Sessions whose data phase runs on tlsvpn's own TLS 1.3 record layer instead of crypto/tls.", &stats.RecordHandOvers)
	counter("refused_draining_total", "Connections closed at once because the gateway is draining (tunneld drain).", &stats.RefusedDraining)
	counter("accept_errors_total", "Failed accepts (out of descriptors, say); the server backs off and goes on.", &stats.AcceptErrors)
	counter("record_handover_refusals_total", "Sessions that stayed on crypto/tls because the hand-over to the own record layer could not be proven safe.", &stats.RecordHandOverRefusals)
	counter("key_updates_sent_total", "TLS KeyUpdate messages sent (the own record layer's in-band key changes and answers).", &stats.KeyUpdatesSent)
	counter("key_updates_received_total", "TLS KeyUpdate messages received from peers.", &stats.KeyUpdatesReceived)
	for _, g := range gauges {
		if g.Counter {
			reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: prefix + "_" + g.Name, Help: g.Help}, g.Value))
			continue
		}
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: prefix + "_" + g.Name, Help: g.Help}, g.Value))
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return ListenError("--metrics", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if ready != nil {
		mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
			if !ready() {
				http.Error(w, "draining", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ready")
		})
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	context.AfterFunc(ctx, func() { srv.Close() })
	log.Info("metrics listening", "addr", ln.Addr().String())
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	return nil
}

type refusedCollector struct {
	desc *prometheus.Desc
	lim  *tunnel.Limiter
}

func (r refusedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- r.desc }

func (r refusedCollector) Collect(ch chan<- prometheus.Metric) {
	st := r.lim.Stats()
	for _, v := range []struct {
		limit string
		n     uint64
	}{
		{"handshake_rate", st.RefusedRate.Load()},
		{"handshakes_in_progress", st.RefusedHandshakes.Load()},
		{"source_handshakes_in_progress", st.RefusedSource.Load()},
		{"reserved_needs_resumption", st.RefusedResumption.Load()},
		{"connections", st.RefusedConns.Load()},
		{"clients", st.RefusedClients.Load()},
		{"sessions_per_client", st.RefusedSessions.Load()},
	} {
		ch <- prometheus.MustNewConstMetric(r.desc, prometheus.CounterValue, float64(v.n), v.limit)
	}
}

type dropCollector struct {
	desc  *prometheus.Desc
	stats *tunnel.Stats
}

func (d dropCollector) Describe(ch chan<- *prometheus.Desc) { ch <- d.desc }

func (d dropCollector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range []struct {
		reason string
		v      uint64
	}{
		{"spoofed_source", d.stats.DropSpoofed.Load()},
		{"malformed", d.stats.DropMalformed.Load()},
		{"no_session", d.stats.DropNoSession.Load()},
		{"queue_full", d.stats.DropQueueFull.Load()},
		{"tun_write", d.stats.DropTUNWrite.Load()},
		{"no_gso", d.stats.DropNoGSO.Load()},
	} {
		ch <- prometheus.MustNewConstMetric(d.desc, prometheus.CounterValue, float64(r.v), r.reason)
	}
}

// RecordLayer logs, once at start, what will carry the data phase's TLS
// records, and returns whether tlsvpn's own AES-GCM is to be used: only
// when it was asked for (--own-aes-gcm) and can run here.
func RecordLayer(log *slog.Logger, stdlib, ownAESGCM bool) bool {
	switch {
	case stdlib:
		log.Info("data phase: TLS records by crypto/tls (--stdlib-tls-records)")
		return false
	case tunnel.OwnRecordLayer() != nil:
		log.Info("data phase: TLS records by crypto/tls", "reason", tunnel.OwnRecordLayer())
		return false
	case !ownAESGCM:
		log.Info("data phase: TLS records by tlsvpn's record layer with Go's AES-GCM")
		return false
	}
	if err := tunnel.OwnAESGCMCheck(); err != nil {
		log.Warn("--own-aes-gcm: tlsvpn's own AES-GCM cannot run here; using Go's", "reason", err)
		return false
	}
	log.Info("data phase: TLS records by tlsvpn's record layer with tlsvpn's own AES-GCM (--own-aes-gcm)")
	return true
}

// StatsAttrs summarizes stats for a log line.
func StatsAttrs(s *tunnel.Stats) []any {
	return []any{
		"tx_packets", s.TxPackets.Load(), "tx_bytes", s.TxBytes.Load(),
		"rx_packets", s.RxPackets.Load(), "rx_bytes", s.RxBytes.Load(),
		"drop_spoofed", s.DropSpoofed.Load(), "drop_malformed", s.DropMalformed.Load(),
		"drop_no_session", s.DropNoSession.Load(), "drop_queue_full", s.DropQueueFull.Load(),
		"drop_tun_write", s.DropTUNWrite.Load(), "panics", s.Panics.Load(),
	}
}

// ListenError reports that listening on addr, the value of flag, failed:
// "--listen 0.0.0.0:443: bind: address already in use". The *net.OpError
// of net.Listen names the operation and the address itself, so only its
// cause is kept and each thing is said once; errors.Is still sees it.
func ListenError(flag, addr string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		err = oe.Err
	}
	return fmt.Errorf("%s %s: %w", flag, addr, err)
}
