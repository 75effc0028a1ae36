package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// readControl reads one control frame of the wanted type, honouring ctx's
// deadline. A Close frame from the peer becomes a *PeerClosedError.
func readControl(ctx context.Context, c net.Conn, want byte) ([]byte, error) {
	if d, ok := ctx.Deadline(); ok {
		c.SetReadDeadline(d)
		defer c.SetReadDeadline(time.Time{})
	}
	var hb [HeaderLen]byte
	if _, err := io.ReadFull(c, hb[:]); err != nil {
		return nil, fmt.Errorf("read %s: %w", typeName(want), err)
	}
	h, err := ParseHeader(hb[:])
	if err != nil {
		return nil, &ProtocolError{Err: err}
	}
	if h.Type != want && h.Type != TypeClose {
		return nil, &ProtocolError{Err: fmt.Errorf("got %s frame, want %s", typeName(h.Type), typeName(want))}
	}
	p := make([]byte, h.Len)
	if _, err := io.ReadFull(c, p); err != nil {
		return nil, fmt.Errorf("read %s: %w", typeName(want), err)
	}
	if h.Type == TypeClose {
		code, reason, err := UnmarshalClose(p)
		if err != nil {
			return nil, &ProtocolError{Err: err}
		}
		return nil, &PeerClosedError{Code: code, Reason: reason}
	}
	return p, nil
}

// controlWriter is where writeControlFrame writes: a *tls.Conn during the
// handshake, a Transport after it.
type controlWriter interface {
	Write(p []byte) (int, error)
	SetWriteDeadline(t time.Time) error
}

// writeControlFrame writes one control frame, honouring ctx's deadline.
func writeControlFrame(ctx context.Context, c controlWriter, typ byte, payload []byte) error {
	if d, ok := ctx.Deadline(); ok {
		c.SetWriteDeadline(d)
		defer c.SetWriteDeadline(time.Time{})
	}
	_, err := c.Write(appendControl(nil, typ, payload))
	if err != nil {
		return fmt.Errorf("write %s: %w", typeName(typ), err)
	}
	return nil
}

// checkALPN refuses a connection that did not negotiate our protocol.
func checkALPN(cs tls.ConnectionState) error {
	if cs.NegotiatedProtocol != ALPN {
		return &alpnError{got: cs.NegotiatedProtocol}
	}
	return nil
}

// alpnError is a peer that completed TLS without agreeing on ALPN.
type alpnError struct{ got string }

func (e *alpnError) Error() string {
	if e.got == "" {
		return fmt.Sprintf("the peer negotiated no ALPN, want %q: not a tlsvpn peer", ALPN)
	}
	return fmt.Sprintf("the peer negotiated ALPN %q, want %q: not a tlsvpn peer, or an incompatible version", e.got, ALPN)
}

// ClientHandshake runs the protocol handshake on a TLS connection whose TLS
// handshake is complete: it sends Hello and returns the server's Config.
func ClientHandshake(ctx context.Context, c *tls.Conn, h Hello) (Config, error) {
	cfg, _, err := clientHandshake(ctx, c, h)
	return cfg, err
}

// clientHandshake is ClientHandshake that also returns how many bytes of
// application data it read (the CONFIG frame), for the record hand-over.
func clientHandshake(ctx context.Context, c *tls.Conn, h Hello) (Config, int, error) {
	if err := checkALPN(c.ConnectionState()); err != nil {
		return Config{}, 0, err
	}
	if err := writeControlFrame(ctx, c, TypeHello, MarshalHello(h)); err != nil {
		// A TLS 1.3 server checks the client certificate after the client
		// has finished its handshake: a refusal arrives as an alert that
		// the failed write did not see. Read once to report it.
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, rerr := c.Read(make([]byte, 1)); rerr != nil && !errors.Is(rerr, os.ErrDeadlineExceeded) {
			return Config{}, 0, fmt.Errorf("%w (server: %w)", err, rerr)
		}
		return Config{}, 0, err
	}
	p, err := readControl(ctx, c, TypeConfig)
	if err != nil {
		return Config{}, 0, err
	}
	cfg, err := UnmarshalConfig(p)
	if err != nil {
		return Config{}, 0, &ProtocolError{Err: err}
	}
	return cfg, HeaderLen + len(p), nil
}

// TLSAttrs returns slog attributes describing a TLS connection: version,
// cipher suite, key-exchange group, ALPN and whether it was resumed.
func TLSAttrs(cs tls.ConnectionState) []any {
	return []any{
		"tls_version", tls.VersionName(cs.Version),
		"cipher_suite", tls.CipherSuiteName(cs.CipherSuite),
		"curve", cs.CurveID.String(),
		"alpn", cs.NegotiatedProtocol,
		"resumed", cs.DidResume,
	}
}
