// Package cli holds what tunneld and tunnelc share: logging setup, flags,
// control commands and exit codes. It is wiring, not logic. What the
// daemons also need at run time (metrics, systemd notification, socket
// options, the errors behind the exit codes) is in tlsvpn/internal/service,
// which the daemon packages use too; service.go here forwards to it.
package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"

	"tlsvpn/control"
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
