package cli

// Forwards to tlsvpn/internal/service, where what the daemons need at run
// time moved so that the daemon packages (tlsvpn/client) can use it too.
// The commands keep calling these names.

import (
	"context"
	"log/slog"
	"net"
	"time"

	"tlsvpn/internal/service"
	"tlsvpn/tunnel"
)

// DefaultCongestion is service.DefaultCongestion.
const DefaultCongestion = service.DefaultCongestion

// SystemCongestion is service.SystemCongestion.
const SystemCongestion = service.SystemCongestion

// CongestionUsage is service.CongestionUsage.
const CongestionUsage = service.CongestionUsage

// Gauge is service.Gauge.
type Gauge = service.Gauge

// UsageError is service.UsageError: ExitCode maps it to ExitUsage.
type UsageError = service.UsageError

// CannotRunError is service.CannotRunError: ExitCode maps it to
// ExitCannotRun.
type CannotRunError = service.CannotRunError

// Usagef is service.Usagef.
func Usagef(format string, args ...any) error { return service.Usagef(format, args...) }

// CongestionName is service.CongestionName.
func CongestionName(use string) string { return service.CongestionName(use) }

// Congestion is service.Congestion.
func Congestion(name string, explicit bool) (use, note string, err error) {
	return service.Congestion(name, explicit)
}

// TuneTCP is service.TuneTCP.
func TuneTCP(c net.Conn, userTimeout time.Duration, congestion string) {
	service.TuneTCP(c, userTimeout, congestion)
}

// ServeMetrics is service.ServeMetrics.
func ServeMetrics(ctx context.Context, addr, prefix string, stats *tunnel.Stats, gauges []Gauge, lim *tunnel.Limiter, log *slog.Logger) error {
	return service.ServeMetrics(ctx, addr, prefix, stats, gauges, lim, log)
}

// RecordLayer is service.RecordLayer.
func RecordLayer(log *slog.Logger, stdlib, ownAESGCM bool) bool {
	return service.RecordLayer(log, stdlib, ownAESGCM)
}

// StatsAttrs is service.StatsAttrs.
func StatsAttrs(s *tunnel.Stats) []any { return service.StatsAttrs(s) }

// ListenError is service.ListenError.
func ListenError(flag, addr string, err error) error { return service.ListenError(flag, addr, err) }

// WarnKeyFile is service.WarnKeyFile.
func WarnKeyFile(log *slog.Logger, path string) { service.WarnKeyFile(log, path) }

// NotifyReady is service.NotifyReady.
func NotifyReady(log *slog.Logger, status string) { service.NotifyReady(log, status) }

// NotifyStatus is service.NotifyStatus.
func NotifyStatus(log *slog.Logger, status string) { service.NotifyStatus(log, status) }

// NotifyReloading is service.NotifyReloading.
func NotifyReloading(log *slog.Logger) (done func()) { return service.NotifyReloading(log) }

// NotifyStopping is service.NotifyStopping.
func NotifyStopping(ctx context.Context, log *slog.Logger) { service.NotifyStopping(ctx, log) }
