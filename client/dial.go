package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"tlsvpn/internal/service"
)

// serverDialer opens the TCP connection to a server for each attempt.
// With several servers (--server repeated) it tries them in the order
// serverOrder gives (servers.go), each with every address its name
// resolves to, until one answers. It resolves names each time (so a
// moved server is found) unless pinned, and logs what it does before it
// does it: a resolution or dial that takes seconds to fail is not
// silence. Repeats in a retry loop are logged at debug level, the same
// line at most every logEvery at info level.
type serverDialer struct {
	servers []serverSpec // immutable
	log     *slog.Logger
	dialer  net.Dialer
	// lookup resolves a name (net.DefaultResolver.LookupNetIP; tests
	// replace it).
	lookup func(ctx context.Context, network, host string) ([]netip.Addr, error)
	// before, if set, runs before each address is dialed; an error fails
	// that address (the full tunnel moves its bypass route there).
	before func(ctx context.Context, addr netip.AddrPort) error
	// through, if set, reaches each server through a proxy instead of
	// dialing its addresses: it gets the server's HOST:PORT, for the proxy
	// to resolve, and runs before on the proxy's address (proxy.go).
	// proxyName is the proxy for logs. Immutable after New.
	through   func(ctx context.Context, target string, before func(context.Context, netip.AddrPort) error) (net.Conn, error)
	proxyName string

	mu     sync.Mutex
	order  *serverOrder
	pinned [][]netip.AddrPort // per server; if set, dialed instead of resolving its host
	last   netip.AddrPort     // the address of the last successful dial
	lastAt int                // the server of the last successful dial; -1 before
	logged map[string]time.Time
}

// logEvery is how often a repeated line of the dialer is logged at info
// level; in between it goes to debug.
const logEvery = 30 * time.Second

// minDialShare is the least time each address gets when several share
// the handshake timeout (net.Dialer gives each 2s at least, too).
const minDialShare = 2 * time.Second

func newServerDialer(servers []serverSpec, log *slog.Logger) *serverDialer {
	return &serverDialer{servers: servers, log: log, lookup: net.DefaultResolver.LookupNetIP,
		order: newServerOrder(len(servers)), lastAt: -1, logged: map[string]time.Time{}}
}

// ServerPort parses the port of Config.Server (--server): a number, or a
// service name from /etc/services (as net.Dial takes it).
func ServerPort(port string) (uint16, error) {
	p, err := net.LookupPort("tcp", port)
	if err != nil || p == 0 {
		return 0, fmt.Errorf("the port must be a number from 1 to 65535 or a service name such as https")
	}
	return uint16(p), nil
}

// pinAll resolves every server once and makes Dial use those addresses
// from then on: a kill switch lets only the addresses known at start
// through, and DNS may not work outside the tunnel. A server whose name
// does not resolve is left out with a warning; it is an error only when
// none resolves. It returns every address pinned.
func (d *serverDialer) pinAll(ctx context.Context) ([]netip.AddrPort, error) {
	pinned := make([][]netip.AddrPort, len(d.servers))
	var all []netip.AddrPort
	var errs []error
	for i := range d.servers {
		addrs, err := d.resolve(ctx, i)
		if err != nil {
			if len(d.servers) > 1 {
				d.log.Warn("leaving out a server whose name does not resolve", "server", d.servers[i].spec, "err", err)
			}
			errs = append(errs, err)
			pinned[i] = []netip.AddrPort{} // nothing to dial, and no lookup later
			continue
		}
		pinned[i] = addrs
		all = append(all, addrs...)
	}
	if len(all) == 0 {
		return nil, errors.Join(errs...)
	}
	d.mu.Lock()
	d.pinned = pinned
	d.mu.Unlock()
	return all, nil
}

// lastAddr returns the address of the last successful dial.
func (d *serverDialer) lastAddr() netip.AddrPort {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.last
}

// serverName returns the name the certificate of the server last dialed
// must carry (tunnel.ClientConfig.ServerName).
func (d *serverDialer) serverName() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.lastAt < 0 {
		return ""
	}
	return d.servers[d.lastAt].name
}

// current returns the --server of the last successful dial, or the first
// before any.
func (d *serverDialer) current() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.servers[max(d.lastAt, 0)].spec
}

// specs returns the --server values when there are several, nil for one.
func (d *serverDialer) specs() []string {
	if len(d.servers) < 2 {
		return nil
	}
	out := make([]string, len(d.servers))
	for i, s := range d.servers {
		out[i] = s.spec
	}
	return out
}

// steer prepares the next attempt for 'tunnelc reconnect [SERVER]' and
// says what it will do: server (a --server value, as given) goes first;
// "" with several servers moves on from the server in use.
func (d *serverDialer) steer(server string) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if server == "" {
		if len(d.servers) == 1 || d.order.inUse < 0 {
			return "reconnecting", nil
		}
		d.order.moveOn()
		return "reconnecting to another server than " + d.servers[d.order.inUse].spec, nil
	}
	for i, s := range d.servers {
		if s.spec == server {
			d.order.choose(i)
			return "reconnecting to " + server + " first", nil
		}
	}
	known := make([]string, len(d.servers))
	for i, s := range d.servers {
		known[i] = s.spec
	}
	return "", fmt.Errorf("reconnect: %q is not one of this tunnelc's servers (%s)", server, strings.Join(known, ", "))
}

// up records that the last connection became a session (Setup ran).
func (d *serverDialer) up() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.order.up()
}

// resolve returns the addresses of server i with its port, logging the
// lookup of a name first. Its error names the host once
// (service.ResolveError).
func (d *serverDialer) resolve(ctx context.Context, i int) ([]netip.AddrPort, error) {
	s := d.servers[i]
	if ip, err := netip.ParseAddr(s.host); err == nil {
		return []netip.AddrPort{netip.AddrPortFrom(ip.Unmap(), s.port)}, nil
	}
	d.logLimited("resolving the server's name", "host", s.host)
	ips, err := d.lookup(ctx, "ip", s.host)
	if err != nil || len(ips) == 0 {
		return nil, service.ResolveError(s.host, err)
	}
	addrs := make([]netip.AddrPort, len(ips))
	for i, ip := range ips {
		addrs[i] = netip.AddrPortFrom(ip.Unmap(), s.port)
	}
	return addrs, nil
}

// addrs returns what to dial for server i: its pinned addresses, or
// those its name resolves to now.
func (d *serverDialer) addrs(ctx context.Context, i int) ([]netip.AddrPort, error) {
	if d.through != nil {
		return nil, nil // the proxy resolves the name (dialThrough)
	}
	d.mu.Lock()
	var pinned []netip.AddrPort
	ok := d.pinned != nil
	if ok {
		pinned = d.pinned[i]
	}
	d.mu.Unlock()
	if ok {
		return pinned, nil
	}
	return d.resolve(ctx, i)
}

// Dial connects to the first server, in the policy's order, that
// answers on one of its addresses, giving each address an equal share of
// the time left (at least minDialShare). With stay (a rotation while a
// session is up), it dials only the server in use.
func (d *serverDialer) Dial(ctx context.Context, stay bool) (net.Conn, error) {
	d.mu.Lock()
	order := d.order.next(stay)
	d.mu.Unlock()
	var errs dialErrors
	for k, i := range order {
		s := d.servers[i]
		if d.through != nil {
			c, err := d.dialThrough(ctx, i, len(order)-k)
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
		}
		addrs, err := d.addrs(ctx, i)
		if err != nil {
			errs = append(errs, err)
		}
		for j, a := range addrs {
			attrs := []any{"server", s.spec}
			if a.Addr().String() != s.host {
				attrs = append(attrs, "resolved_to", a.String())
			}
			if len(addrs) > 1 {
				attrs = append(attrs, "address", fmt.Sprintf("%d of %d", j+1, len(addrs)))
			}
			if len(order) > 1 {
				attrs = append(attrs, "server_try", fmt.Sprintf("%d of %d", k+1, len(order)))
			}
			d.logLimited("connecting to the server", attrs...)
			// The time left is shared by this server's addresses left and
			// the servers after it.
			left := len(addrs) - j + len(order) - k - 1
			actx, cancel := ctx, context.CancelFunc(func() {})
			if dl, ok := ctx.Deadline(); ok && left > 1 {
				share := max(time.Until(dl)/time.Duration(left), minDialShare)
				actx, cancel = context.WithTimeout(ctx, share)
			}
			c, err := d.dialOne(actx, a)
			cancel()
			if err == nil {
				d.mu.Lock()
				d.last, d.lastAt = a, i
				d.order.connected(i)
				d.mu.Unlock()
				return c, nil
			}
			errs = append(errs, &dialError{addr: a, err: err})
			if ctx.Err() != nil {
				break
			}
			if j < len(addrs)-1 {
				d.logLimited("no connection to this address of the server; trying the next", "addr", a.String(), "err", errs[len(errs)-1])
			}
		}
		if ctx.Err() != nil {
			break
		}
		if k < len(order)-1 && len(errs) > 0 {
			d.logLimited("no connection to this server; trying the next", "server", s.spec, "next", d.servers[order[k+1]].spec, "err", errs[len(errs)-1])
		}
	}
	switch len(errs) {
	case 0:
		return nil, fmt.Errorf("no address to connect to")
	case 1:
		return nil, errs[0]
	}
	return nil, errs
}

// dialOne runs the before hook and dials a.
func (d *serverDialer) dialOne(ctx context.Context, a netip.AddrPort) (net.Conn, error) {
	if d.before != nil {
		if err := d.before(ctx, a); err != nil {
			return nil, err
		}
	}
	return d.dialer.DialContext(ctx, "tcp", a.String())
}

// logLimited logs msg with attrs at info level, or at debug level when
// the same line was logged in the last logEvery.
func (d *serverDialer) logLimited(msg string, attrs ...any) {
	key := msg + fmt.Sprint(attrs...)
	now := time.Now()
	d.mu.Lock()
	quiet := now.Sub(d.logged[key]) < logEvery
	if !quiet {
		if len(d.logged) >= 64 { // lines of addresses the name no longer has
			for k, t := range d.logged {
				if now.Sub(t) >= logEvery {
					delete(d.logged, k)
				}
			}
		}
		d.logged[key] = now
	}
	d.mu.Unlock()
	if quiet {
		d.log.Debug(msg, attrs...)
		return
	}
	d.log.Info(msg, attrs...)
}

// dialError is a failed TCP connection to one address, said once:
// "connect to 192.0.2.1:443: connection refused" rather than net's
// "dial tcp 192.0.2.1:443: connect: connection refused" under a prefix.
type dialError struct {
	addr netip.AddrPort
	err  error
}

func (e *dialError) Error() string {
	var errno syscall.Errno
	var ne net.Error
	why := e.err.Error()
	switch {
	case errors.As(e.err, &errno):
		why = errno.Error()
	case errors.Is(e.err, context.DeadlineExceeded), errors.Is(e.err, os.ErrDeadlineExceeded),
		errors.As(e.err, &ne) && ne.Timeout():
		why = "no answer (timed out)"
	case errors.Is(e.err, context.Canceled):
		why = "canceled"
	}
	return fmt.Sprintf("connect to %s: %s", e.addr, why)
}

func (e *dialError) Unwrap() error { return e.err }

// dialErrors are the failures of each address of a server that has
// several, on one line.
type dialErrors []error

func (e dialErrors) Error() string {
	s := make([]string, len(e))
	for i, err := range e {
		s[i] = err.Error()
	}
	return strings.Join(s, "; ")
}

func (e dialErrors) Unwrap() []error { return e }
