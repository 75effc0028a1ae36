// Package cli holds what tunneld and tunnelc share: logging setup, the
// metrics endpoint, socket options and exit codes. It is wiring, not logic.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"tlsvpn/control"
	"tlsvpn/tunnel"
)

// Exit codes shared by both binaries.
const (
	ExitOK      = 0
	ExitFailure = 1 // runtime failure
	ExitUsage   = 2 // bad flags or arguments
	// ExitUnreachable: a control command could not reach its daemon.
	ExitUnreachable = 3
	// ExitCannotRun: a daemon cannot run as asked (no root or
	// CAP_NET_ADMIN, an interface name another process holds); found
	// before anything was changed or any connection made. The same value
	// as ExitUnreachable: one is said by control commands, the other by
	// daemons, and both mean "nothing was done, fix the setup".
	ExitCannotRun = 3
)

// UsageError marks an error in the command line; main exits with ExitUsage.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a *UsageError.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// CannotRunError marks a start that cannot succeed on this host as asked;
// main exits with ExitCannotRun.
type CannotRunError struct{ Err error }

func (e *CannotRunError) Error() string { return e.Err.Error() }
func (e *CannotRunError) Unwrap() error { return e.Err }

// CannotRunf returns a *CannotRunError.
func CannotRunf(format string, args ...any) error {
	return &CannotRunError{Err: fmt.Errorf(format, args...)}
}

// ExitCode maps run's error to a process exit code.
func ExitCode(err error) int {
	var ue *UsageError
	var unreachable *control.UnreachableError
	var cr *CannotRunError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ue):
		return ExitUsage
	case errors.As(err, &unreachable):
		return ExitUnreachable
	case errors.As(err, &cr):
		return ExitCannotRun
	}
	return ExitFailure
}

// NewLogger returns a slog logger writing to w in the given format ("text"
// or "json") at the given level ("debug", "info", "warn", "error").
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	log, _, err := NewLevelLogger(w, level, format)
	return log, err
}

// NewLevelLogger is NewLogger that also returns the logger's level, which
// can be changed while it runs (a reload of --log-level).
func NewLevelLogger(w io.Writer, level, format string) (*slog.Logger, *slog.LevelVar, error) {
	lv := new(slog.LevelVar)
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, nil, Usagef("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), lv, nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), lv, nil
	}
	return nil, nil, Usagef("--log-format %q: want text or json", format)
}

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
func ServeMetrics(ctx context.Context, addr, prefix string, stats *tunnel.Stats, gauges []Gauge, lim *tunnel.Limiter, log *slog.Logger) error {
	reg := prometheus.NewRegistry()
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

// StartCPUProfile writes a CPU profile to path until the returned stop
// function is called (at exit). An empty path does nothing.
func StartCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
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

// ResolveError reports that resolving host failed. A *net.DNSError for
// host names it itself ("lookup vpn.example.com on 127.0.0.53:53: no such
// host") and is returned as it is; other errors get the host. A nil err
// means the lookup found no address.
func ResolveError(host string, err error) error {
	var de *net.DNSError
	switch {
	case err == nil:
		return fmt.Errorf("resolve %s: no address", host)
	case errors.As(err, &de) && de.Name == host:
		return err
	}
	return fmt.Errorf("resolve %s: %w", host, err)
}
