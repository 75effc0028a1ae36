//go:build !linux

package service

import (
	"net"
	"time"
)

// TuneTCP disables Nagle's algorithm; the other options are Linux-only.
func TuneTCP(c net.Conn, userTimeout time.Duration, congestion string) {
	if tc, ok := TCPConn(c); ok {
		tc.SetNoDelay(true)
	}
}

// Congestion resolves --congestion; choosing an algorithm is Linux-only.
func Congestion(name string, explicit bool) (use, note string, err error) {
	if name == SystemCongestion || name == "" || !explicit {
		return "", "", nil
	}
	return "", "", Usagef("--congestion %s: only supported on Linux (use 'system')", name)
}
