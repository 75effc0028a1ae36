//go:build !linux

package main

import "syscall"

// dialControl does nothing outside Linux: IP_BIND_ADDRESS_NO_PORT is
// Linux's (see sockopt_linux.go).
func dialControl(_, _ string, _ syscall.RawConn) error { return nil }
