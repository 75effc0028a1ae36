package service

// The errors whose type decides the exit status of the commands
// (cli.ExitCode), and helpers that say each thing once.

import (
	"errors"
	"fmt"
	"net"
)

// UsageError marks an error in the command line or the settings; the
// commands exit with status 2 (cli.ExitUsage).
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a *UsageError.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// CannotRunError marks a start that cannot succeed on this host as asked;
// the commands exit with status 3 (cli.ExitCannotRun).
type CannotRunError struct{ Err error }

func (e *CannotRunError) Error() string { return e.Err.Error() }
func (e *CannotRunError) Unwrap() error { return e.Err }

// CannotRunf returns a *CannotRunError.
func CannotRunf(format string, args ...any) error {
	return &CannotRunError{Err: fmt.Errorf(format, args...)}
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
