package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
)

// SOCKS5 (RFC 1928) with the user/password method (RFC 1929), CONNECT
// only. Written here rather than taken from golang.org/x/net/proxy: that
// dialer returns its own wrapper around the TCP connection, which hides
// the *net.TCPConn from the socket options tunnelc sets (TuneTCP) and
// from the record layer's direct writes (tunnel.RecordConn.TrySend), and
// the call that runs the handshake on a connection the caller dialed is
// a method of a type in x/net's internal package. The handshake is small.

const (
	socksVersion        = 5
	socksAuthNone       = 0x00
	socksAuthPassword   = 0x02
	socksNoAcceptable   = 0xff // "no acceptable methods"
	socksCmdConnect     = 1
	socksAtypIPv4       = 1
	socksAtypDomain     = 3
	socksAtypIPv6       = 4
	socksPasswordVer    = 1
	socksReplySucceeded = 0
)

// socksReplies names the reply codes of RFC 1928 section 6.
var socksReplies = [...]string{
	0: "succeeded",
	1: "general SOCKS server failure",
	2: "connection not allowed by ruleset",
	3: "network unreachable",
	4: "host unreachable",
	5: "connection refused",
	6: "TTL expired",
	7: "command not supported",
	8: "address type not supported",
}

// SOCKSReply names a SOCKS5 reply code: "connection refused (reply 5)".
func SOCKSReply(code byte) string {
	if int(code) < len(socksReplies) {
		return fmt.Sprintf("%s (reply %d)", socksReplies[code], code)
	}
	return fmt.Sprintf("unknown reply %d", code)
}

// socks5 runs the SOCKS5 handshake on conn: method negotiation, the
// user/password sub-negotiation when the proxy picks it, and CONNECT to
// host:port, sending a name as a name (the proxy resolves it). It reads
// exactly the proxy's answers and nothing more.
func (p *Proxy) socks5(conn net.Conn, host string, port uint16) error {
	target := net.JoinHostPort(host, strconv.Itoa(int(port)))
	fail := func(format string, args ...any) error {
		return fmt.Errorf("SOCKS5 proxy %s: "+format, append([]any{p.Addr()}, args...)...)
	}
	methods := []byte{socksVersion, 1, socksAuthNone}
	if p.hasAuth {
		methods = []byte{socksVersion, 2, socksAuthNone, socksAuthPassword}
	}
	if _, err := conn.Write(methods); err != nil {
		return fail("sending the greeting: %w", err)
	}
	var b [2]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		return fail("reading its choice of method: %w", readErr(err))
	}
	if b[0] != socksVersion {
		return fail("not a SOCKS5 proxy: it answered version %d (an HTTP proxy? then use http://)", b[0])
	}
	switch b[1] {
	case socksAuthNone:
	case socksAuthPassword:
		if !p.hasAuth {
			return fail("it chose user/password authentication, which was not offered")
		}
		if err := p.socksPassword(conn, target); err != nil {
			return err
		}
	case socksNoAcceptable:
		e := &ProxyError{Proxy: p.Addr(), SOCKS: true, Target: target, Code: -1, Auth: true, permanent: true,
			Status: "no acceptable authentication method"}
		if p.hasAuth {
			e.hint = "the proxy accepts neither no authentication nor a user and password (GSSAPI?)"
		} else {
			e.hint = "the proxy wants a user and password: put USER:PASSWORD in a file and pass --proxy-auth-file FILE"
		}
		return e
	default:
		return fail("it chose authentication method %d, which was not offered", b[1])
	}

	req := []byte{socksVersion, socksCmdConnect, 0}
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		if ip.Is4() {
			req = append(req, socksAtypIPv4)
		} else {
			req = append(req, socksAtypIPv6)
		}
		req = append(req, ip.AsSlice()...)
	} else {
		if len(host) > 255 {
			return fail("the name %q is longer than the 255 bytes SOCKS5 can carry", host)
		}
		req = append(req, socksAtypDomain, byte(len(host)))
		req = append(req, host...)
	}
	req = binary.BigEndian.AppendUint16(req, port)
	if _, err := conn.Write(req); err != nil {
		return fail("sending CONNECT %s: %w", target, err)
	}
	rep, err := readSOCKSReply(conn)
	if err != nil {
		return fail("reading its answer to CONNECT %s: %w", target, readErr(err))
	}
	if rep != socksReplySucceeded {
		e := &ProxyError{Proxy: p.Addr(), SOCKS: true, Target: target, Code: int(rep), Status: SOCKSReply(rep)}
		switch rep {
		case 2:
			e.permanent = true
			e.hint = "the proxy's rules do not allow a connection to this host or port"
		case 7, 8:
			e.permanent = true
		case 3, 4, 5, 6:
			e.hint = "the proxy could not reach the server (down, or a name the proxy cannot resolve)"
		}
		return e
	}
	return nil
}

// socksPassword runs RFC 1929's sub-negotiation.
func (p *Proxy) socksPassword(conn net.Conn, target string) error {
	msg := []byte{socksPasswordVer, byte(len(p.user))}
	msg = append(msg, p.user...)
	msg = append(msg, byte(len(p.password)))
	msg = append(msg, p.password...)
	if _, err := conn.Write(msg); err != nil {
		return fmt.Errorf("SOCKS5 proxy %s: sending the user and password: %w", p.Addr(), err)
	}
	var b [2]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		return fmt.Errorf("SOCKS5 proxy %s: reading its answer to the user and password: %w", p.Addr(), readErr(err))
	}
	if b[1] != 0 {
		return &ProxyError{Proxy: p.Addr(), SOCKS: true, Target: target, Code: -1, Auth: true, permanent: true,
			Status: fmt.Sprintf("user and password refused (status %d)", b[1]),
			hint:   "the proxy did not accept the user and password (from --proxy-auth-file or the --proxy URL)"}
	}
	return nil
}

// readSOCKSReply reads a SOCKS5 reply to CONNECT (RFC 1928 section 6):
// its code, and the bound address it skips, reading exactly its length.
func readSOCKSReply(r io.Reader) (byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, err
	}
	if h[0] != socksVersion {
		return 0, fmt.Errorf("answer of version %d, not 5", h[0])
	}
	var n int
	switch h[3] {
	case socksAtypIPv4:
		n = 4
	case socksAtypIPv6:
		n = 16
	case socksAtypDomain:
		var l [1]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return 0, err
		}
		n = int(l[0])
	default:
		if h[1] != socksReplySucceeded {
			// Some servers send a short reply on failure; the code is
			// what matters.
			return h[1], nil
		}
		return 0, fmt.Errorf("bound address of unknown type %d", h[3])
	}
	var skip [256 + 2]byte
	if _, err := io.ReadFull(r, skip[:n+2]); err != nil {
		return 0, err
	}
	return h[1], nil
}

// readErr says "closed the connection" for an EOF in a handshake.
func readErr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("the proxy closed the connection")
	}
	return err
}
