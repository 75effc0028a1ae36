package transport

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
)

// maxResponseHead bounds the status line and headers of a proxy's answer
// to CONNECT; real ones are a few hundred bytes.
const maxResponseHead = 16 << 10

// maxRefusalBody bounds the body of a 407 answer that is skipped to go on
// with NTLM on the same connection.
const maxRefusalBody = 1 << 20

// connect asks an HTTP proxy to open a tunnel to host:port with CONNECT
// (RFC 9110 section 9.3.6), authenticating with Basic (RFC 7617) when p
// has credentials, or with NTLM for a DOMAIN\user (ntlm.go), and reads
// the answer's head. A 2xx answer to CONNECT has no body: the stream to
// the target starts right after the head.
func (p *Proxy) connect(conn net.Conn, host string, port uint16) error {
	target := net.JoinHostPort(host, strconv.Itoa(int(port)))
	if p.ntlm() {
		return p.connectNTLM(conn, target)
	}
	auth := ""
	if p.hasAuth {
		auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(p.user+":"+p.password))
	}
	resp, err := p.roundTrip(conn, target, auth)
	if err != nil {
		return err
	}
	if resp.code/100 == 2 {
		return nil
	}
	return p.httpRefusal(target, resp)
}

// roundTrip sends CONNECT target with the Proxy-Authorization auth (none
// if "") and reads the answer's head.
func (p *Proxy) roundTrip(conn net.Conn, target, auth string) (responseHead, error) {
	var req strings.Builder
	fmt.Fprintf(&req, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", target, target)
	if auth != "" {
		fmt.Fprintf(&req, "Proxy-Authorization: %s\r\n", auth)
	}
	req.WriteString("\r\n")
	if _, err := io.WriteString(conn, req.String()); err != nil {
		return responseHead{}, fmt.Errorf("proxy %s: sending CONNECT %s: %w", p.Addr(), target, err)
	}
	head, err := readResponseHead(conn)
	if err != nil {
		return responseHead{}, fmt.Errorf("proxy %s: reading its answer to CONNECT %s: %w", p.Addr(), target, err)
	}
	resp, err := parseResponseHead(head)
	if err != nil {
		return responseHead{}, fmt.Errorf("proxy %s: its answer to CONNECT %s: %w", p.Addr(), target, err)
	}
	return resp, nil
}

// httpRefusal explains a non-2xx answer to CONNECT.
func (p *Proxy) httpRefusal(target string, resp responseHead) *ProxyError {
	e := &ProxyError{Proxy: p.Addr(), Target: target, Code: resp.code,
		Status: strings.TrimSpace(strconv.Itoa(resp.code) + " " + p.Redact(resp.reason))}
	switch c := resp.code; {
	case c == 407:
		e.Auth, e.permanent = true, true
		offers := func(scheme string) bool {
			return slices.ContainsFunc(resp.authSchemes, func(s string) bool { return strings.EqualFold(s, scheme) })
		}
		offersBasic := len(resp.authSchemes) == 0 || offers("Basic")
		switch {
		case p.ntlm() && offers("NTLM"):
			e.hint = "the proxy did not accept the NTLM user and password (DOMAIN\\USER:PASSWORD in --proxy-auth-file)"
		case p.ntlm():
			e.hint = fmt.Sprintf("the proxy asks for %s, not NTLM", strings.Join(resp.authSchemes, ", "))
		case !offersBasic && offers("NTLM"):
			e.hint = "the proxy asks for NTLM: write the user as DOMAIN\\USER in --proxy-auth-file"
		case !offersBasic:
			e.hint = fmt.Sprintf("the proxy asks for %s; tunnelc authenticates with Basic, or NTLM for a DOMAIN\\USER", strings.Join(resp.authSchemes, ", "))
		case p.hasAuth:
			e.hint = "the proxy did not accept the user and password (from --proxy-auth-file or the --proxy URL)"
		default:
			e.hint = "the proxy wants a user and password: put USER:PASSWORD in a file and pass --proxy-auth-file FILE"
		}
	case c == 403 || c == 405:
		e.permanent = true
		e.hint = "the proxy's rules do not allow CONNECT to this host or port (many allow only port 443)"
	case c == 408 || c == 429:
		// Transient: the proxy is busy or we were slow.
	case c >= 400 && c < 500:
		e.permanent = true
	case c == 502 || c == 503 || c == 504:
		e.hint = "the proxy could not reach the server (down, or a name the proxy cannot resolve)"
	}
	return e
}

// readResponseHead reads an HTTP response's status line and headers, up
// to and including the empty line, and not one byte further: the bytes
// after it belong to the tunnel. Each read asks for as many bytes as
// cannot overshoot the end of the head (4, less what of "\r\n\r\n" the
// bytes so far already end with), so it rarely reads one byte at a time.
func readResponseHead(r io.Reader) ([]byte, error) {
	const end = "\r\n\r\n"
	buf := make([]byte, 0, 512)
	for {
		need := len(end)
		for k := len(end) - 1; k > 0; k-- {
			if bytes.HasSuffix(buf, []byte(end[:k])) {
				need = len(end) - k
				break
			}
		}
		if len(buf)+need > maxResponseHead {
			return nil, fmt.Errorf("answer head longer than %d bytes", maxResponseHead)
		}
		buf = slices.Grow(buf, need)
		n, err := r.Read(buf[len(buf) : len(buf)+need])
		buf = buf[:len(buf)+n]
		if err != nil {
			if errors.Is(err, io.EOF) {
				if len(buf) == 0 {
					return nil, errors.New("the proxy closed the connection without an answer")
				}
				return nil, fmt.Errorf("the proxy closed the connection after %q", clip(buf))
			}
			return nil, err
		}
		if bytes.HasSuffix(buf, []byte(end)) {
			return buf, nil
		}
		if k := min(len(buf), 5); string(buf[:k]) != "HTTP/"[:k] {
			return nil, fmt.Errorf("not an HTTP answer: it starts %q (a SOCKS proxy? then use socks5://)", clip(buf))
		}
	}
}

// clip returns the start of b for an error message.
func clip(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// responseHead is what tunnelc uses of a proxy's answer.
type responseHead struct {
	proto       string // HTTP/1.1
	code        int    // 100 to 999
	reason      string // as the proxy wrote it; may be empty
	authSchemes []string
	// What NTLM needs to go on on the same connection: the challenge of
	// "Proxy-Authenticate: NTLM <base64>", the body's length (-1: not
	// given) and whether the proxy closes the connection after it.
	ntlmChallenge []byte
	contentLength int64
	closes        bool
}

// parseResponseHead parses an HTTP/1.x status line and headers (RFC 9112
// sections 4 and 5), ended by an empty line; it keeps the authentication
// schemes of Proxy-Authenticate. It is pure: the fuzz target feeds it
// whatever a proxy might send.
func parseResponseHead(head []byte) (responseHead, error) {
	var r responseHead
	text := strings.ReplaceAll(string(head), "\r\n", "\n")
	lines := strings.Split(text, "\n")
	status := lines[0]
	proto, rest, ok := strings.Cut(status, " ")
	if !ok || (proto != "HTTP/1.1" && proto != "HTTP/1.0") {
		return r, fmt.Errorf("not an HTTP/1.x status line: %q", clip([]byte(status)))
	}
	codeStr, reason, _ := strings.Cut(rest, " ")
	code, err := strconv.Atoi(codeStr)
	if err != nil || len(codeStr) != 3 || code < 100 {
		return r, fmt.Errorf("bad status code in %q", clip([]byte(status)))
	}
	r.proto, r.code, r.reason = proto, code, strings.Map(printable, reason)
	r.contentLength, r.closes = -1, proto == "HTTP/1.0"
	for _, line := range lines[1:] {
		if line == "" {
			break
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return r, fmt.Errorf("bad header line %q", clip([]byte(line)))
		}
		value = strings.TrimSpace(value)
		switch {
		case strings.EqualFold(name, "Proxy-Authenticate"):
			// Each challenge starts with its scheme; several may share
			// a line, but tunnelc only names the first of each line.
			scheme, token, _ := strings.Cut(value, " ")
			scheme = strings.Map(printable, strings.TrimSuffix(scheme, ","))
			if scheme != "" && len(r.authSchemes) < 8 {
				r.authSchemes = append(r.authSchemes, scheme)
			}
			if strings.EqualFold(scheme, "NTLM") && token != "" {
				b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(token))
				if err != nil {
					return r, fmt.Errorf("bad NTLM challenge: %v", err)
				}
				r.ntlmChallenge = b
			}
		case strings.EqualFold(name, "Content-Length"):
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil || n < 0 {
				return r, fmt.Errorf("bad Content-Length %q", clip([]byte(value)))
			}
			r.contentLength = n
		case strings.EqualFold(name, "Connection"), strings.EqualFold(name, "Proxy-Connection"):
			switch strings.ToLower(value) {
			case "close":
				r.closes = true
			case "keep-alive":
				r.closes = false
			}
		case strings.EqualFold(name, "Transfer-Encoding"):
			r.contentLength = -1 // chunked: not skipped; NTLM gives up
		}
	}
	return r, nil
}

// printable drops control characters from what a proxy wrote, so that a
// log line stays one line.
func printable(r rune) rune {
	if r < 0x20 || r == 0x7f {
		return -1
	}
	return r
}
