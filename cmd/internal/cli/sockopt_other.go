//go:build !linux

package cli

import (
	"net"
	"time"
)

// TuneTCP disables Nagle's algorithm; the other options are Linux-only.
func TuneTCP(c net.Conn, userTimeout time.Duration) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
}
