package client

// Reaching the server through a proxy (--proxy, or HTTPS_PROXY and
// ALL_PROXY): the TCP connection goes to the proxy, which is asked to
// connect to the server by the name given in --server, so that the proxy
// resolves it (an office laptop often cannot resolve outside names). Everything that
// follows the connection's address follows the proxy's: the full tunnel's
// bypass route, the kill switch's hole, the roaming watch (the local
// address of the socket to the proxy), and TuneTCP's socket options,
// which act on the hop to the proxy only.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"tlsvpn/internal/service"
	"tlsvpn/transport"
)

// proxyDialer opens the TCP connection to the proxy and runs the proxy's
// handshake on it.
type proxyDialer struct {
	proxy  *transport.Proxy // immutable
	log    *slog.Logger
	dialer net.Dialer
	// lookup resolves the proxy's name (net.DefaultResolver.LookupNetIP;
	// tests replace it).
	lookup func(ctx context.Context, network, host string) ([]netip.Addr, error)

	mu     sync.Mutex
	pinned []netip.AddrPort // if set, dialed instead of resolving the proxy's name
}

// newProxyDialer parses the proxy URL raw (from, the flag or variable it
// came from, names it in errors) and adds the credentials of authFile.
func newProxyDialer(raw, from, authFile string, log *slog.Logger) (*proxyDialer, error) {
	p, err := transport.ParseProxy(raw)
	if err != nil {
		return nil, service.Usagef("%s: %v", from, err)
	}
	if authFile != "" {
		if p.HasAuth() {
			return nil, service.Usagef("the proxy's user and password are given twice: in %s and in --proxy-auth-file %s; keep the file", from, authFile)
		}
		user, password, err := ReadProxyAuth(authFile)
		if err != nil {
			return nil, service.Usagef("--proxy-auth-file: %v", err)
		}
		if p, err = p.WithAuth(user, password); err != nil {
			return nil, service.Usagef("--proxy-auth-file %s: %v", authFile, err)
		}
		warnSecretFile(log, authFile)
	}
	return &proxyDialer{proxy: p, log: log, lookup: net.DefaultResolver.LookupNetIP}, nil
}

// ReadProxyAuth reads the proxy's USER:PASSWORD from the first line of
// path (the password may hold ':'). Its errors never quote the file.
func ReadProxyAuth(path string) (user, password string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	line, err := bufio.NewReader(io.LimitReader(f, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", "", fmt.Errorf("%s: %w", path, err)
	}
	line = strings.TrimRight(line, "\r\n")
	user, password, ok := strings.Cut(line, ":")
	if !ok || user == "" {
		return "", "", fmt.Errorf("%s: want USER:PASSWORD on the first line", path)
	}
	return user, password, nil
}

// warnSecretFile warns when a file holding a password can be read by
// others than its owner, as service.WarnKeyFile does for private keys.
func warnSecretFile(log *slog.Logger, path string) {
	fi, err := os.Stat(path)
	if err != nil {
		return
	}
	if mode := fi.Mode().Perm(); mode&0o077 != 0 {
		log.Warn(fmt.Sprintf("proxy password file %s has mode %04o, so its group or others can read it: run chmod 600 %s", path, mode, path))
	}
}

// resolve returns the proxy's addresses with its port.
func (p *proxyDialer) resolve(ctx context.Context) ([]netip.AddrPort, error) {
	if ip, err := netip.ParseAddr(p.proxy.Host()); err == nil {
		return []netip.AddrPort{netip.AddrPortFrom(ip.Unmap(), p.proxy.Port())}, nil
	}
	ips, err := p.lookup(ctx, "ip", p.proxy.Host())
	if err != nil || len(ips) == 0 {
		return nil, fmt.Errorf("proxy %s: %w", p.proxy, service.ResolveError(p.proxy.Host(), err))
	}
	addrs := make([]netip.AddrPort, len(ips))
	for i, ip := range ips {
		addrs[i] = netip.AddrPortFrom(ip.Unmap(), p.proxy.Port())
	}
	return addrs, nil
}

// pin makes dial use addrs[0] instead of resolving the proxy's name
// again: with a kill switch, only the address resolved at start may be
// dialed.
func (p *proxyDialer) pin(addrs []netip.AddrPort) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pinned = addrs
}

// dial connects to the proxy and asks it to connect to target. It
// returns the TCP connection to the proxy, now a stream to target. The
// proxy's name is resolved by net.Dialer, which tries each of its
// addresses in turn, unless pin fixed the address; before (if set) runs
// on each address just before it is dialed.
func (p *proxyDialer) dial(ctx context.Context, target string, before func(context.Context, netip.AddrPort) error) (net.Conn, error) {
	p.mu.Lock()
	addr := p.proxy.Addr()
	if len(p.pinned) > 0 {
		addr = p.pinned[0].String()
	}
	p.mu.Unlock()
	dialer := p.dialer
	if before != nil {
		dialer.ControlContext = func(ctx context.Context, _, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return err
			}
			return before(ctx, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
		}
	}
	c, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		if ap, perr := netip.ParseAddrPort(addr); perr == nil {
			err = &dialError{addr: ap, err: err}
		}
		return nil, fmt.Errorf("proxy %s: %w", p.proxy, err)
	}
	if err := p.proxy.Handshake(ctx, c, target); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// dialThrough is serverDialer.Dial's attempt at server i through a proxy,
// with its share of the time left to the servers left: the proxy gets the
// server's name and port as given, and resolves the name itself. The
// address remembered as the last one dialed is the proxy's: it is where
// the TCP connection goes, for the bypass route and the kill switch.
func (d *serverDialer) dialThrough(ctx context.Context, i, left int) (net.Conn, error) {
	s := d.servers[i]
	target := net.JoinHostPort(s.host, strconv.Itoa(int(s.port)))
	d.logLimited("connecting to the server through the proxy", "server", s.spec, "proxy", d.proxyName)
	actx, cancel := ctx, context.CancelFunc(func() {})
	if dl, ok := ctx.Deadline(); ok && left > 1 {
		actx, cancel = context.WithTimeout(ctx, max(time.Until(dl)/time.Duration(left), minDialShare))
	}
	defer cancel()
	c, err := d.through(actx, target, d.before)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		d.last = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	d.lastAt = i
	d.order.connected(i)
	d.mu.Unlock()
	return c, nil
}

// logStart says once which proxy the connection goes through, and what
// the socket options can and cannot see through it.
func (p *proxyDialer) logStart(from string) {
	p.log.Info("reaching the server through a proxy; keepalives and the TCP user timeout watch the hop to the proxy, the tunnel's keepalive the whole way",
		"proxy", p.proxy.String(), "from", from, "proxy_auth", p.proxy.AuthScheme())
}
