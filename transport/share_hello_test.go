package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"testing"
	"testing/iotest"
	"time"
)

// clientHello returns the first flight crypto/tls's client sends when it
// offers protos (nil: no ALPN extension): exactly the ClientHello's
// records.
func clientHello(t testing.TB, protos ...string) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer b.Close()
	go func() {
		c := tls.Client(a, &tls.Config{ServerName: "vpn.example", NextProtos: protos, InsecureSkipVerify: true})
		c.Handshake() // fails when b closes
		a.Close()
	}()
	raw, _, err := readClientHello(b)
	if err != nil {
		t.Fatalf("reading crypto/tls's ClientHello: %v", err)
	}
	return raw
}

// resplit carries the handshake bytes of the records in hello in new
// records of at most size bytes each.
func resplit(t testing.TB, hello []byte, size int) []byte {
	t.Helper()
	var body []byte
	for rest := hello; len(rest) > 0; {
		n := int(rest[3])<<8 | int(rest[4])
		body = append(body, rest[5:5+n]...)
		rest = rest[5+n:]
	}
	var out []byte
	for len(body) > 0 {
		n := min(size, len(body))
		out = append(out, recordTypeHandshake, 3, 1, byte(n>>8), byte(n))
		out = append(out, body[:n]...)
		body = body[n:]
	}
	return out
}

func TestReadClientHello(t *testing.T) {
	for _, protos := range [][]string{{"tlsvpn/1"}, {"h2", "http/1.1"}, nil} {
		hello := clientHello(t, protos...)
		for _, split := range []int{16384, 700, 1} {
			for _, oneByte := range []bool{false, true} {
				in := resplit(t, hello, split)
				// Whatever follows the ClientHello stays unread.
				var r io.Reader = bytes.NewReader(append(slices.Clone(in), "NEXT"...))
				if oneByte {
					r = iotest.OneByteReader(r)
				}
				raw, msg, err := readClientHello(r)
				if err != nil {
					t.Fatalf("readClientHello(%v, records of %d, one byte reads %v) = %v", protos, split, oneByte, err)
				}
				if !bytes.Equal(raw, in) {
					t.Errorf("readClientHello(%v, records of %d) read %d bytes, want exactly the %d of the ClientHello", protos, split, len(raw), len(in))
				}
				if rest, _ := io.ReadAll(r); string(rest) != "NEXT" {
					t.Errorf("after the ClientHello the reader holds %q, want NEXT", rest)
				}
				got, err := helloALPN(msg)
				if err != nil || !slices.Equal(got, protos) {
					t.Errorf("helloALPN(hello offering %v, records of %d) = %v, %v", protos, split, got, err)
				}
			}
		}
	}
}

func TestReadClientHelloRefuses(t *testing.T) {
	hello := clientHello(t, "tlsvpn/1")
	notHello := slices.Clone(hello)
	notHello[5] = 2                            // a ServerHello
	huge := []byte{22, 3, 1, 0, 4, 1, 1, 0, 1} // says 65537 bytes follow
	for _, tc := range []struct {
		name    string
		in      []byte
		want    error
		rawLen  int // bytes taken off the connection (one byte reads)
		wantEOF bool
	}{
		{"plain HTTP", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), errNotTLS, 1, false},
		{"SSH banner", []byte("SSH-2.0-OpenSSH_9.6\r\n"), errNotTLS, 1, false},
		{"alert record", []byte{21, 3, 1, 0, 2, 2, 40}, errNotTLS, 1, false},
		{"SSLv2-style hello", []byte{0x80, 0x2e, 1, 3, 1}, errNotTLS, 1, false},
		{"version byte too high", []byte{22, 0x10, 1, 0, 5}, errNotTLS, 2, false},
		{"empty record", []byte{22, 3, 1, 0, 0, 22}, errNotTLS, 5, false},
		{"record too long", []byte{22, 3, 1, 0x48, 1}, errNotTLS, 5, false},
		{"not a ClientHello", notHello, errNotHello, len(notHello), false},
		{"ClientHello too large", huge, errNotHello, len(huge), false},
		{"second record not handshake", append(resplit(t, hello, 100)[:105:105], 23, 3, 3, 0, 1, 0), errNotHello, 106, false},
		{"cut short", hello[:len(hello)-1], io.ErrUnexpectedEOF, len(hello) - 1, true},
		{"cut in the header", hello[:3], io.ErrUnexpectedEOF, 3, true},
		{"nothing", nil, io.EOF, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, _, err := readClientHello(iotest.OneByteReader(bytes.NewReader(tc.in)))
			if !errors.Is(err, tc.want) {
				t.Fatalf("readClientHello(%x) = %v, want %v", tc.in, err, tc.want)
			}
			if len(raw) != tc.rawLen || !bytes.Equal(raw, tc.in[:len(raw)]) {
				t.Errorf("readClientHello(%x) read %x, want the first %d bytes", tc.in, raw, tc.rawLen)
			}
		})
	}
}

func TestHelloALPNMalformed(t *testing.T) {
	// A minimal ClientHello body: version, random, empty session ID,
	// one suite, null compression, then extensions.
	head := append([]byte{3, 3}, make([]byte, 32)...)
	head = append(head, 0, 0, 2, 0x13, 1, 1, 0)
	ext := func(exts ...byte) []byte {
		b := slices.Clone(head)
		b = append(b, byte(len(exts)>>8), byte(len(exts)))
		return append(b, exts...)
	}
	for _, tc := range []struct {
		name string
		msg  []byte
		want []string
		ok   bool
	}{
		{"no extensions", head, nil, true},
		{"other extension", ext(0, 0, 0, 0), nil, true},
		{"alpn", ext(0, 16, 0, 5, 0, 3, 2, 'h', '2'), []string{"h2"}, true},
		{"two alpn", ext(0, 16, 0, 5, 0, 3, 2, 'h', '2', 0, 16, 0, 5, 0, 3, 2, 'h', '2'), nil, false},
		{"empty alpn list", ext(0, 16, 0, 2, 0, 0), nil, false},
		{"empty name", ext(0, 16, 0, 3, 0, 1, 0), nil, false},
		{"name overruns", ext(0, 16, 0, 4, 0, 2, 5, 'h'), nil, false},
		{"extension overruns", ext(0, 16, 0, 9, 0, 3), nil, false},
		{"trailing bytes", append(ext(0, 0, 0, 0), 1), nil, false},
		{"truncated random", head[:20], nil, false},
	} {
		got, err := helloALPN(tc.msg)
		if (err == nil) != tc.ok || !slices.Equal(got, tc.want) {
			t.Errorf("%s: helloALPN = %q, %v; want %q, ok %v", tc.name, got, err, tc.want, tc.ok)
		}
	}
}

// FuzzClientHello feeds arbitrary first bytes of a connection to the
// ClientHello reader and ALPN parser: they never panic, never take more
// than they were given or more than MaxHelloLen plus record headers, and
// whenever crypto/tls's own server gets as far as the ClientHello's
// contents (GetConfigForClient), they read the same ALPN list from it.
// That last check is what routing depends on: every connection the VPN's
// TLS server would accept with our ALPN must be recognised as the VPN's.
func FuzzClientHello(f *testing.F) {
	for _, protos := range [][]string{{"tlsvpn/1"}, {"h2", "http/1.1"}, nil} {
		hello := clientHello(f, protos...)
		f.Add(hello)
		f.Add(resplit(f, hello, 50))
	}
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{22, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		raw, msg, err := readClientHello(bytes.NewReader(in))
		if !bytes.HasPrefix(in, raw) {
			t.Fatalf("read %x, not a prefix of the input %x", raw, in)
		}
		if len(raw) > MaxHelloLen+4+(MaxHelloLen/1+1)*recordHeaderLen {
			t.Fatalf("read %d bytes", len(raw))
		}
		var protos []string
		if err == nil {
			protos, err = helloALPN(msg)
		}
		seen, tlsProtos := stdlibALPN(in)
		if !seen {
			return
		}
		if err != nil {
			t.Fatalf("crypto/tls reads a ClientHello offering %q from %x, we fail: %v", tlsProtos, in, err)
		}
		if !slices.Equal(protos, tlsProtos) {
			t.Fatalf("ALPN of %x: we read %q, crypto/tls %q", in, protos, tlsProtos)
		}
	})
}

// stdlibALPN runs crypto/tls's server over in and reports whether it got
// as far as GetConfigForClient, and the ALPN list it saw there.
func stdlibALPN(in []byte) (seen bool, protos []string) {
	errStop := errors.New("stop")
	cfg := &tls.Config{GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
		seen, protos = true, hi.SupportedProtos
		return nil, errStop
	}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	tls.Server(&replayConn{r: bytes.NewReader(in)}, cfg).HandshakeContext(ctx)
	return seen, protos
}

// replayConn reads from r and discards writes.
type replayConn struct {
	net.Conn // nil: methods not overridden panic
	r        io.Reader
}

func (c *replayConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *replayConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *replayConn) Close() error                     { return nil }
func (c *replayConn) SetDeadline(time.Time) error      { return nil }
func (c *replayConn) SetReadDeadline(time.Time) error  { return nil }
func (c *replayConn) SetWriteDeadline(time.Time) error { return nil }
func (c *replayConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *replayConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
