package client

import (
	"net"
	"net/netip"
	"sync"
)

// roamWatch remembers the local address of the current connection to the
// server, so the client can replace the session as soon as that address
// goes away (a new Wi-Fi network) instead of waiting for the keepalive
// deadline.
type roamWatch struct {
	mu   sync.Mutex
	addr netip.Addr
}

func (r *roamWatch) set(a net.Addr) {
	if ta, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(ta.IP); ok {
			r.mu.Lock()
			r.addr = ip.Unmap()
			r.mu.Unlock()
		}
	}
}

func (r *roamWatch) current() netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.addr
}
