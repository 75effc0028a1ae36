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

// serverDialer opens the TCP connection to the server for each attempt.
// It resolves the name each time (so a moved server is found), tries the
// addresses in the resolver's order, and logs what it does before it
// does it: a resolution or dial that takes seconds to fail is not
// silence. Repeats in a retry loop are logged at debug level, the same
// line at most every logEvery at info level.
type serverDialer struct {
	server string // HOST:PORT as given, for logs; immutable
	host   string // immutable
	port   uint16 // immutable
	log    *slog.Logger
	dialer net.Dialer
	// lookup resolves a name (net.DefaultResolver.LookupNetIP; tests
	// replace it).
	lookup func(ctx context.Context, network, host string) ([]netip.Addr, error)
	// through, if set, replaces the dial: it reaches HOST:PORT through a
	// proxy that resolves the name (proxy.go); proxyName is the proxy
	// for logs. Immutable after New.
	through   func(ctx context.Context, target string) (net.Conn, error)
	proxyName string

	mu     sync.Mutex
	pinned []netip.AddrPort // if set, dialed instead of resolving host
	last   netip.AddrPort   // the address of the last successful dial
	logged map[string]time.Time
}

// logEvery is how often a repeated line of the dialer is logged at info
// level; in between it goes to debug.
const logEvery = 30 * time.Second

// minDialShare is the least time each address gets when several share
// the handshake timeout (net.Dialer gives each 2s at least, too).
const minDialShare = 2 * time.Second

func newServerDialer(server, host, port string, log *slog.Logger) (*serverDialer, error) {
	p, err := ServerPort(port)
	if err != nil {
		return nil, err
	}
	return &serverDialer{server: server, host: host, port: p, log: log,
		lookup: net.DefaultResolver.LookupNetIP, logged: map[string]time.Time{}}, nil
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

// pin makes Dial use addrs instead of resolving the name again: with a
// kill switch, only the addresses resolved at start may be dialed.
func (d *serverDialer) pin(addrs []netip.AddrPort) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pinned = addrs
}

// lastAddr returns the address of the last successful dial.
func (d *serverDialer) lastAddr() netip.AddrPort {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.last
}

// resolve returns the server's addresses with the port, logging the
// lookup of a name first. Its error names the host once (service.ResolveError).
func (d *serverDialer) resolve(ctx context.Context) ([]netip.AddrPort, error) {
	if ip, err := netip.ParseAddr(d.host); err == nil {
		return []netip.AddrPort{netip.AddrPortFrom(ip.Unmap(), d.port)}, nil
	}
	d.logLimited("resolving the server's name", "host", d.host)
	ips, err := d.lookup(ctx, "ip", d.host)
	if err != nil || len(ips) == 0 {
		return nil, service.ResolveError(d.host, err)
	}
	addrs := make([]netip.AddrPort, len(ips))
	for i, ip := range ips {
		addrs[i] = netip.AddrPortFrom(ip.Unmap(), d.port)
	}
	return addrs, nil
}

// Dial connects to the first of the server's addresses that answers,
// giving each an equal share of the time left (at least minDialShare).
func (d *serverDialer) Dial(ctx context.Context) (net.Conn, error) {
	if d.through != nil {
		return d.dialThrough(ctx)
	}
	d.mu.Lock()
	addrs := d.pinned
	d.mu.Unlock()
	if addrs == nil {
		var err error
		if addrs, err = d.resolve(ctx); err != nil {
			return nil, err
		}
	}
	var errs dialErrors
	for i, a := range addrs {
		attrs := []any{"server", d.server}
		if a.Addr().String() != d.host {
			attrs = append(attrs, "resolved_to", a.String())
		}
		if len(addrs) > 1 {
			attrs = append(attrs, "address", fmt.Sprintf("%d of %d", i+1, len(addrs)))
		}
		d.logLimited("connecting to the server", attrs...)
		actx, cancel := ctx, context.CancelFunc(func() {})
		if dl, ok := ctx.Deadline(); ok && i < len(addrs)-1 {
			share := max(time.Until(dl)/time.Duration(len(addrs)-i), minDialShare)
			actx, cancel = context.WithTimeout(ctx, share)
		}
		c, err := d.dialer.DialContext(actx, "tcp", a.String())
		cancel()
		if err == nil {
			d.mu.Lock()
			d.last = a
			d.mu.Unlock()
			return c, nil
		}
		errs = append(errs, &dialError{addr: a, err: err})
		if ctx.Err() != nil {
			break
		}
		if i < len(addrs)-1 {
			d.logLimited("no connection to this address of the server; trying the next", "addr", a.String(), "err", errs[len(errs)-1])
		}
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	return nil, errs
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
