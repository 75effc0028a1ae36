package main

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// dialControl sets IP_BIND_ADDRESS_NO_PORT on sockets bound to a chosen
// source address: the kernel then picks the local port at connect time,
// per destination, instead of at bind time for every destination at once,
// so one source address can carry as many connections to the server as a
// kernel-chosen one (the "one office NAT" mode).
// Where the option is refused the bind keeps its port, which only
// matters with tens of thousands of connections from one address.
func dialControl(_, _ string, c syscall.RawConn) error {
	return c.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	})
}
