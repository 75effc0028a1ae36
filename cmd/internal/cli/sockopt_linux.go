package cli

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// NotSentLowat bounds the bytes queued in the kernel socket that TCP has
// not yet sent. Above it the socket stops reporting writable, so the
// tunnel's writer blocks and its queue drops instead of hiding seconds of
// data in the socket buffer where the outer congestion control cannot see
// it (bufferbloat).
const NotSentLowat = 256 << 10

// TuneTCP sets the outer socket's options: no Nagle delay, a bounded
// unsent queue, and a user timeout so a dead path errors out even when the
// peer never answers.
func TuneTCP(c net.Conn, userTimeout time.Duration) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	tc.SetNoDelay(true)
	raw, err := tc.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, NotSentLowat)
		if userTimeout > 0 {
			unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(userTimeout/time.Millisecond))
		}
	})
}
