package service

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// NotSentLowat bounds the bytes queued in the kernel socket that TCP has
// not yet sent. Above it the socket stops reporting writable, so the
// tunnel's writer blocks and its queue drops instead of hiding seconds of
// data in the socket buffer where the outer congestion control cannot see
// it (bufferbloat).
const NotSentLowat = 256 << 10

// TuneTCP sets the outer socket's options: a bounded unsent queue, a
// user timeout so a dead path errors out even when the peer never
// answers, and the congestion control (none if empty; see Congestion,
// which checked that the kernel accepts it). No Nagle delay is Go's
// default for every TCP connection, so it is not set again: tunneld
// tunes every connection it accepts, and each system call counts there.
// c is a *net.TCPConn or wraps one (see TCPConn); otherwise nothing is
// set.
func TuneTCP(c net.Conn, userTimeout time.Duration, congestion string) {
	tc, ok := TCPConn(c)
	if !ok {
		return
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, NotSentLowat)
		if userTimeout > 0 {
			unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(userTimeout/time.Millisecond))
		}
		if congestion != "" {
			unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, congestion)
		}
	})
}

// Congestion resolves the --congestion flag into what TuneTCP sets. It
// tries name on a scratch TCP socket. "system" keeps the kernel's default
// (use ""). When the kernel refuses name, an explicit choice is an error;
// the built-in default falls back to the kernel's default, and note says
// so for the log.
func Congestion(name string, explicit bool) (use, note string, err error) {
	if name == SystemCongestion || name == "" {
		return "", "", nil
	}
	terr := tryCongestion(name)
	if terr == nil {
		return name, "", nil
	}
	sys := readProcLine("/proc/sys/net/ipv4/tcp_congestion_control")
	avail := readProcLine("/proc/sys/net/ipv4/tcp_available_congestion_control")
	if explicit {
		return "", "", Usagef("--congestion %s: %v (available: %s; or 'system' for the default, %s)", name, terr, avail, sys)
	}
	return "", fmt.Sprintf("congestion control %s is not available (%v); the outer connection uses the system default %s, which may lose throughput on lossy paths", name, terr, sys), nil
}

// tryCongestion sets TCP_CONGESTION to name on an unconnected TCP socket.
// As root this also loads the algorithm's module if it is not loaded yet.
func tryCongestion(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	}
	if err != nil {
		return fmt.Errorf("cannot open a TCP socket to check it: %w", err)
	}
	defer unix.Close(fd)
	err = unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, name)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ENOENT):
		return errors.New("not available in this kernel")
	case errors.Is(err, unix.EPERM):
		return errors.New("not allowed for this process (net.ipv4.tcp_allowed_congestion_control)")
	}
	return err
}

func readProcLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}
