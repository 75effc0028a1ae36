package transport

// Reading and parsing a TLS ClientHello just far enough to see which
// application protocols (ALPN, RFC 7301) it offers, for the port sharing
// in share.go (hence the file's name). The reader takes exactly the ClientHello's records off the
// connection and nothing after them, so that whoever gets the connection
// next (the VPN's TLS server or the web server behind the relay) can be
// handed those bytes and then the socket itself.

import (
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/cryptobyte"
)

// TLS constants (RFC 8446 sections 4, 4.2 and 5.1).
const (
	recordTypeHandshake  = 22
	handshakeClientHello = 1
	extensionALPN        = 16
	recordHeaderLen      = 5
	// maxRecordLen is the largest record body crypto/tls accepts before
	// the version is negotiated (2^14 plus its expansion allowance); a
	// ClientHello record is at most 2^14 by RFC 8446 section 5.1.
	maxRecordLen = 16384 + 2048
)

// MaxHelloLen bounds the ClientHello message readClientHello collects
// (crypto/tls refuses larger handshake messages too); the bytes taken
// off the connection are at most this plus the record headers.
const MaxHelloLen = 65536

// Why a connection's first bytes are not a ClientHello; see readClientHello.
var (
	// errNotTLS: the first bytes are not the header of a TLS handshake
	// record (plain HTTP, SSH, a port scanner's probe).
	errNotTLS = errors.New("not a TLS handshake record")
	// errNotHello: TLS records, but not one well-formed ClientHello.
	errNotHello = errors.New("not a TLS ClientHello")
)

// readClientHello reads the TLS records that carry the first handshake
// message from r, record by record and exactly (never a byte past the
// record that completes the message), and returns every byte it read
// (raw, also on error) and the ClientHello message's body (msg, aliasing
// raw's memory no longer than raw is kept unchanged; empty on error).
// It fails with errNotTLS as soon as the bytes cannot start a handshake
// record, with errNotHello when the records do not carry a ClientHello of
// at most MaxHelloLen bytes, and with r's error (a deadline, EOF) when r
// fails first. The checks of the record header follow what crypto/tls
// accepts on a server's first record, so that a connection the VPN's TLS
// server would take is recognised.
func readClientHello(r io.Reader) (raw, msg []byte, err error) {
	var hdr [recordHeaderLen]byte
	var body []byte // the handshake bytes of the records read so far
	for {
		// The header a few bytes at a time if need be, so that a
		// client that is not speaking TLS is recognised by its first
		// bytes instead of after the peek timeout.
		have := 0
		for have < len(hdr) {
			n, rerr := r.Read(hdr[have:])
			raw = append(raw, hdr[have:have+n]...)
			have += n
			if !plausibleHeader(hdr[:have]) {
				if len(body) == 0 {
					return raw, nil, errNotTLS
				}
				return raw, nil, errNotHello
			}
			if rerr != nil && have < len(hdr) {
				if rerr == io.EOF && len(raw) > 0 {
					rerr = io.ErrUnexpectedEOF
				}
				return raw, nil, rerr
			}
		}
		n := int(hdr[3])<<8 | int(hdr[4])
		start := len(raw)
		raw = append(raw, make([]byte, n)...)
		got, rerr := io.ReadFull(r, raw[start:])
		raw = raw[:start+got]
		if rerr != nil {
			if rerr == io.EOF {
				rerr = io.ErrUnexpectedEOF
			}
			return raw, nil, rerr
		}
		body = append(body, raw[start:]...)
		if body[0] != handshakeClientHello {
			return raw, nil, fmt.Errorf("%w: handshake message type %d", errNotHello, body[0])
		}
		if len(body) < 4 {
			continue
		}
		want := int(body[1])<<16 | int(body[2])<<8 | int(body[3])
		if want > MaxHelloLen {
			return raw, nil, fmt.Errorf("%w: %d bytes, more than %d", errNotHello, want, MaxHelloLen)
		}
		if len(body) >= 4+want {
			return raw, body[4 : 4+want], nil
		}
	}
}

// plausibleHeader reports whether h, the first len(h) bytes of a record
// header, can start a handshake record as crypto/tls's server takes one
// before it has chosen a version: type handshake, a version below 0x1000,
// and a length of 1 to maxRecordLen.
func plausibleHeader(h []byte) bool {
	switch {
	case len(h) >= 1 && h[0] != recordTypeHandshake:
		return false
	case len(h) >= 2 && h[1] >= 0x10:
		return false
	case len(h) >= 5:
		n := int(h[3])<<8 | int(h[4])
		return n > 0 && n <= maxRecordLen
	}
	return true
}

// errMalformed: a ClientHello body that does not parse.
var errMalformed = errors.New("malformed ClientHello")

// helloALPN parses a ClientHello message body (RFC 8446 section 4.1.2,
// without its 4-byte handshake header) and returns the protocol names of
// its ALPN extension (RFC 7301 section 3.1), nil when it has none. It
// checks the structure only as far as the extensions: what a TLS server
// would refuse beyond that is for the TLS server to refuse.
func helloALPN(msg []byte) ([]string, error) {
	s := cryptobyte.String(msg)
	var sessionID, suites, compression cryptobyte.String
	if !s.Skip(2+32) || // legacy_version, random
		!s.ReadUint8LengthPrefixed(&sessionID) ||
		!s.ReadUint16LengthPrefixed(&suites) ||
		!s.ReadUint8LengthPrefixed(&compression) {
		return nil, errMalformed
	}
	if s.Empty() {
		return nil, nil // no extensions (an SSLv3-era hello)
	}
	var exts cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&exts) || !s.Empty() {
		return nil, errMalformed
	}
	var protos []string
	seen := false
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return nil, errMalformed
		}
		if typ != extensionALPN {
			continue
		}
		if seen {
			return nil, fmt.Errorf("%w: two ALPN extensions", errMalformed)
		}
		seen = true
		var list cryptobyte.String
		if !data.ReadUint16LengthPrefixed(&list) || !data.Empty() || list.Empty() {
			return nil, fmt.Errorf("%w: ALPN extension", errMalformed)
		}
		for !list.Empty() {
			var name cryptobyte.String
			if !list.ReadUint8LengthPrefixed(&name) || name.Empty() {
				return nil, fmt.Errorf("%w: ALPN protocol name", errMalformed)
			}
			protos = append(protos, string(name))
		}
	}
	return protos, nil
}
