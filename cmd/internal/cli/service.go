package cli

// Forwards to tlsvpn/internal/service, where what the daemons need at run
// time moved so that the daemon packages (tlsvpn/server, tlsvpn/client)
// can use it too. The commands' flag parsing keeps calling these names.

import "tlsvpn/internal/service"

// DefaultCongestion is service.DefaultCongestion.
const DefaultCongestion = service.DefaultCongestion

// SystemCongestion is service.SystemCongestion.
const SystemCongestion = service.SystemCongestion

// CongestionUsage is service.CongestionUsage.
const CongestionUsage = service.CongestionUsage

// UsageError is service.UsageError: ExitCode maps it to ExitUsage.
type UsageError = service.UsageError

// CannotRunError is service.CannotRunError: ExitCode maps it to
// ExitCannotRun.
type CannotRunError = service.CannotRunError

// Usagef is service.Usagef.
func Usagef(format string, args ...any) error { return service.Usagef(format, args...) }

// Congestion is service.Congestion.
func Congestion(name string, explicit bool) (use, note string, err error) {
	return service.Congestion(name, explicit)
}
