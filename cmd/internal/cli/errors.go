package cli

import "tlsvpn/internal/service"

// CannotRunf is service.CannotRunf: ExitCode maps it to ExitCannotRun.
func CannotRunf(format string, args ...any) error { return service.CannotRunf(format, args...) }

// ResolveError is service.ResolveError.
func ResolveError(host string, err error) error { return service.ResolveError(host, err) }
