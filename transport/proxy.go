package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Proxy is a proxy to reach a server through: an HTTP proxy (CONNECT) or
// a SOCKS5 proxy, with an optional user and password. Its String never
// shows the credentials. A Proxy is immutable after ParseProxy.
type Proxy struct {
	scheme   string // "http" or "socks5"
	host     string // name or address, without brackets
	port     uint16
	user     string
	password string
	hasAuth  bool
}

// The schemes a proxy URL may have. socks5h is accepted as curl's name
// for the same thing: tunnelc always lets the proxy resolve names.
const (
	SchemeHTTP   = "http"
	SchemeSOCKS5 = "socks5"
)

// ParseProxy parses a proxy URL: http://[user:password@]host:port or
// socks5://[user:password@]host:port (socks5h:// is the same; a URL
// without a scheme is http, as curl and Go's HTTP client read one). Its
// errors never repeat the password.
func ParseProxy(raw string) (*Proxy, error) {
	s := raw
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("proxy %q: not a URL such as http://proxy.example.com:3128 or socks5://127.0.0.1:1080", redactRaw(raw))
	}
	p := &Proxy{}
	switch strings.ToLower(u.Scheme) {
	case "http":
		p.scheme = SchemeHTTP
	case "socks5", "socks5h":
		p.scheme = SchemeSOCKS5
	case "https":
		return nil, fmt.Errorf("proxy %s: a proxy spoken to over TLS (https://) is not supported: use http:// (the tunnel inside is TLS anyway) or socks5://", u.Redacted())
	default:
		return nil, fmt.Errorf("proxy %s: scheme %q not supported: want http:// or socks5://", u.Redacted(), u.Scheme)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("proxy %s: want only scheme://[user:password@]host:port, without a path or query", u.Redacted())
	}
	p.host = u.Hostname()
	if p.host == "" {
		return nil, fmt.Errorf("proxy %s: no host", u.Redacted())
	}
	ps := u.Port()
	if ps == "" {
		return nil, fmt.Errorf("proxy %s: no port: want scheme://host:port, e.g. http://proxy.example.com:3128", u.Redacted())
	}
	n, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || n == 0 {
		return nil, fmt.Errorf("proxy %s: the port must be a number from 1 to 65535", u.Redacted())
	}
	p.port = uint16(n)
	if u.User != nil {
		p.user = u.User.Username()
		p.password, _ = u.User.Password()
		p.hasAuth = true
	}
	if p.scheme == SchemeSOCKS5 && p.hasAuth && (len(p.user) > 255 || len(p.password) > 255) {
		return nil, fmt.Errorf("proxy %s: a SOCKS5 user name and password are at most 255 bytes each", p)
	}
	return p, nil
}

// redactRaw hides what may be a password in a proxy URL that does not
// parse: everything before the last '@'.
func redactRaw(raw string) string {
	if i := strings.LastIndex(raw, "@"); i >= 0 {
		if j := strings.Index(raw, "://"); j >= 0 && j < i {
			return raw[:j+3] + "***" + raw[i:]
		}
		return "***" + raw[i:]
	}
	return raw
}

// WithAuth returns a copy of p that authenticates as user with password
// (from a file, say), replacing any the URL held.
func (p *Proxy) WithAuth(user, password string) (*Proxy, error) {
	if p.scheme == SchemeSOCKS5 && (len(user) > 255 || len(password) > 255) {
		return nil, fmt.Errorf("a SOCKS5 user name and password are at most 255 bytes each")
	}
	q := *p
	q.user, q.password, q.hasAuth = user, password, true
	return &q, nil
}

// Scheme returns SchemeHTTP or SchemeSOCKS5.
func (p *Proxy) Scheme() string { return p.scheme }

// Addr returns the proxy's HOST:PORT, to dial.
func (p *Proxy) Addr() string { return net.JoinHostPort(p.host, strconv.Itoa(int(p.port))) }

// Host and Port return the parts of Addr.
func (p *Proxy) Host() string { return p.host }
func (p *Proxy) Port() uint16 { return p.port }

// OnThisHost reports whether the proxy runs on this host (localhost or a
// loopback address): then the connection that carries a tunnel further
// is the proxy's own, which the dialer cannot see or route.
func (p *Proxy) OnThisHost() bool {
	if strings.EqualFold(p.host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(p.host)
	return err == nil && ip.Unmap().IsLoopback()
}

// HasAuth reports whether p authenticates with a user and password.
func (p *Proxy) HasAuth() bool { return p.hasAuth }

// String returns the proxy's URL without the credentials, e.g.
// http://198.18.0.9:3128: what logs and status show.
func (p *Proxy) String() string { return p.scheme + "://" + p.Addr() }

// Redact replaces the proxy's password in s, if s holds it, with "***":
// for messages that quote what a peer or a library said.
func (p *Proxy) Redact(s string) string {
	if p.password == "" || !strings.Contains(s, p.password) {
		return s
	}
	return strings.ReplaceAll(s, p.password, "***")
}

// FromEnvironment returns the proxy the standard environment variables
// give for a connection to target (HOST:PORT): HTTPS_PROXY (or
// https_proxy), else ALL_PROXY (or all_proxy), unless NO_PROXY (or
// no_proxy) exempts target's host, as Go's HTTP client and curl read
// them. name is the variable it came from; raw is "" when none applies.
// getenv is os.Getenv outside tests.
func FromEnvironment(getenv func(string) string, target string) (raw, name string, err error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	for _, n := range []string{"HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"} {
		if v := getenv(n); v != "" {
			raw, name = v, n
			break
		}
	}
	if raw == "" {
		return "", "", nil
	}
	noProxy := getenv("NO_PROXY")
	if noProxy == "" {
		noProxy = getenv("no_proxy")
	}
	if bypassed(noProxy, target) {
		return "", "", nil
	}
	return raw, name, nil
}

// bypassed reports whether NO_PROXY's list exempts target (HOST:PORT)
// from the proxy, with the rules curl and Go's HTTP client share: "*" is
// everything; an address or CIDR matches an address host; a name matches
// itself and its subdomains (a leading dot is ignored); an entry with
// :PORT matches only that port. Loopback targets never use a proxy.
func bypassed(noProxy, target string) bool {
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		host = target
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	ip, ipErr := netip.ParseAddr(host)
	if host == "localhost" || (ipErr == nil && ip.IsLoopback()) {
		return true
	}
	for _, e := range strings.Split(noProxy, ",") {
		e = strings.ToLower(strings.TrimSpace(e))
		switch {
		case e == "":
			continue
		case e == "*":
			return true
		}
		if pfx, err := netip.ParsePrefix(e); err == nil {
			if ipErr == nil && pfx.Contains(ip.Unmap()) {
				return true
			}
			continue
		}
		eHost, ePort := e, ""
		if h, p, err := net.SplitHostPort(e); err == nil {
			eHost, ePort = h, p
		}
		if ePort != "" && ePort != port {
			continue
		}
		eHost = strings.Trim(eHost, "[]")
		if eip, err := netip.ParseAddr(eHost); err == nil {
			if ipErr == nil && eip.Unmap() == ip.Unmap() {
				return true
			}
			continue
		}
		eHost = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(eHost, "*"), "."), ".")
		if eHost != "" && (host == eHost || strings.HasSuffix(host, "."+eHost)) {
			return true
		}
	}
	return false
}

// ProxyError is a proxy's refusal to connect to the target: an HTTP
// status other than 2xx, or a SOCKS5 reply or authentication failure.
type ProxyError struct {
	Proxy  string // the proxy's HOST:PORT
	SOCKS  bool   // a SOCKS5 proxy (else HTTP)
	Target string // what the proxy was asked to connect to
	Code   int    // the HTTP status, or the SOCKS5 reply code (-1: authentication)
	Status string // "407 Proxy Authentication Required", "connection refused (reply 5)"
	// Auth is true when the refusal is about the credentials.
	Auth bool
	// hint says what to do; "" when the status says it.
	hint string
	// permanent is true when retrying soon cannot help: until someone
	// changes the credentials, the proxy's rules or the target.
	permanent bool
}

func (e *ProxyError) Error() string {
	kind := "proxy"
	if e.SOCKS {
		kind = "SOCKS5 proxy"
	}
	return fmt.Sprintf("%s %s refused CONNECT to %s: %s", kind, e.Proxy, e.Target, e.Status)
}

// Hint says what a user can do about the refusal, or "".
func (e *ProxyError) Hint() string { return e.hint }

// Permanent reports whether the refusal stays until someone changes the
// credentials, the proxy's rules or the target (a wrong password, a port
// the proxy does not allow), so that a client retries it slowly.
func (e *ProxyError) Permanent() bool { return e.permanent }

// Dialer connects to targets through a Proxy.
type Dialer struct {
	Proxy *Proxy
	// Forward opens the TCP connection to the proxy (addr is
	// Proxy.Addr()); nil is a net.Dialer. The connection DialContext
	// returns is the one Forward returned.
	Forward func(ctx context.Context, network, addr string) (net.Conn, error)
}

// DialContext connects to the proxy and asks it to connect to addr
// (HOST:PORT; a name is sent as it is, for the proxy to resolve). It
// returns the connection to the proxy, now a stream to addr, or closes it
// and returns why not: a *ProxyError when the proxy refused. network
// must be "tcp" (or "tcp4", "tcp6": the proxy picks the family).
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("proxy %s: network %q: only TCP goes through a proxy", d.Proxy.Addr(), network)
	}
	fwd := d.Forward
	if fwd == nil {
		var nd net.Dialer
		fwd = nd.DialContext
	}
	conn, err := fwd(ctx, "tcp", d.Proxy.Addr())
	if err != nil {
		return nil, err
	}
	if err := d.Proxy.Handshake(ctx, conn, addr); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// Handshake asks the proxy at the other end of conn to connect to target
// (HOST:PORT) and reads its answer, no further: on success the next byte
// read from conn is the target's. It gives up when ctx ends (closing
// nothing: the caller owns conn) and leaves conn without a deadline.
func (p *Proxy) Handshake(ctx context.Context, conn net.Conn, target string) error {
	host, port, err := splitTarget(target)
	if err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	if p.scheme == SchemeSOCKS5 {
		err = p.socks5(conn, host, port)
	} else {
		err = p.connect(conn, host, port)
	}
	if !stop() && ctx.Err() != nil {
		err = fmt.Errorf("%s proxy %s: %w while asking it to connect to %s", p.scheme, p.Addr(), context.Cause(ctx), target)
	}
	conn.SetDeadline(time.Time{})
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return fmt.Errorf("%s proxy %s: no answer (timed out) while asking it to connect to %s", p.scheme, p.Addr(), target)
		}
	}
	return err
}

// splitTarget splits HOST:PORT with a numeric port.
func splitTarget(target string) (string, uint16, error) {
	host, ps, err := net.SplitHostPort(target)
	if err != nil {
		return "", 0, fmt.Errorf("proxy target %q: want HOST:PORT", target)
	}
	n, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || n == 0 || host == "" {
		return "", 0, fmt.Errorf("proxy target %q: want HOST:PORT with a numeric port", target)
	}
	return host, uint16(n), nil
}
