package tunnel

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"tlsvpn/certs/certstest"
)

// recordEnds is one side of a TLS connection over loopback TCP, made the
// way the client and server make theirs (BatchConn, captured secrets).
type recordEnds struct {
	tc  *tls.Conn
	bc  *BatchConn
	raw net.Conn
}

// tlsPair handshakes a client and a server (srvCfg from CaptureSecrets)
// over loopback TCP and has them exchange one message each through
// crypto/tls, as the protocol's Hello and Config do, before any hand-over.
func tlsPair(t testing.TB, srvCfg, cliCfg *tls.Config) (cli, srv recordEnds) {
	t.Helper()
	return tlsPairWrap(t, srvCfg, cliCfg, nil)
}

// tlsPairWrap is tlsPair with each side's TCP connection passed through
// wrap (nil: as is) before TLS runs on it.
func tlsPairWrap(t testing.TB, srvCfg, cliCfg *tls.Config, wrap func(net.Conn) net.Conn) (cli, srv recordEnds) {
	t.Helper()
	cli, srv = handshakePair(t, srvCfg, cliCfg, wrap)
	errc := make(chan error, 1)
	go func() {
		b := make([]byte, 5)
		if _, err := io.ReadFull(srv.tc, b); err != nil || string(b) != "hello" {
			errc <- fmt.Errorf("server read %q, %v", b, err)
			return
		}
		srv.bc.noteAppRead(len(b))
		_, err := srv.tc.Write([]byte("config"))
		errc <- err
	}()
	if _, err := cli.tc.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 6)
	if _, err := io.ReadFull(cli.tc, b); err != nil || string(b) != "config" {
		t.Fatalf("client read %q, %v", b, err)
	}
	cli.bc.noteAppRead(len(b))
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return cli, srv
}

// handshakePair runs only the TLS handshakes of tlsPairWrap.
func handshakePair(t testing.TB, srvCfg, cliCfg *tls.Config, wrap func(net.Conn) net.Conn) (cli, srv recordEnds) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	craw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sraw := <-accepted
	if sraw == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { craw.Close(); sraw.Close() })
	if wrap != nil {
		craw, sraw = wrap(craw), wrap(sraw)
	}
	cli.raw, srv.raw = craw, sraw
	cli.bc, srv.bc = NewBatchConn(craw), NewBatchConn(sraw)
	cli.tc = cli.bc.Client(cliCfg)
	srv.tc = tls.Server(srv.bc, srvCfg)
	errc := make(chan error, 1)
	go func() { errc <- srv.tc.Handshake() }()
	if err := cli.tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return cli, srv
}

// stream is what one side reads and writes after the hand-over.
type stream interface {
	io.ReadWriter
	Close() error
}

// handOver moves one side to a RecordConn, or leaves it on crypto/tls.
func (e recordEnds) handOver(t testing.TB, yes bool) stream {
	t.Helper()
	if !yes {
		return e.tc
	}
	rc, err := e.bc.Records(e.tc.ConnectionState().CipherSuite, false)
	if err != nil {
		t.Fatalf("hand-over: %v", err)
	}
	return rc
}

// exchange sends payloads of many sizes each way at once and checks that
// each side receives exactly what the other sent.
func exchange(t *testing.T, a, b stream) {
	t.Helper()
	sizes := []int{1, 100, maxRecord - 1, maxRecord, maxRecord + 1, 65535, 200000}
	var want bytes.Buffer
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range sizes {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(r.Uint32())
		}
		want.Write(p)
	}
	send := func(w stream) error {
		off := 0
		for _, n := range sizes {
			p := want.Bytes()[off : off+n]
			off += n
			var err error
			if rc, ok := w.(*RecordConn); ok && n%2 == 1 {
				// The zero-copy path, with room for the type byte.
				q := append(make([]byte, 0, n+1), p...)
				_, err = rc.WriteOwned(q)
				if !bytes.Equal(q, p) {
					return errors.New("WriteOwned changed its buffer")
				}
			} else {
				_, err = w.Write(p)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	recv := func(rd stream) ([]byte, error) {
		got := make([]byte, want.Len()+1)
		if rc, ok := rd.(*RecordConn); ok {
			off := 0
			for i, n := range sizes {
				if err := rc.ReadFull(got[off:off+n], i%2 == 0); err != nil {
					return nil, err
				}
				off += n
			}
			return got[:off], nil
		}
		_, err := io.ReadFull(rd, got[:want.Len()])
		return got[:want.Len()], err
	}
	type result struct {
		got []byte
		err error
	}
	ab, ba := make(chan result, 1), make(chan result, 1)
	go func() { g, err := recv(b); ab <- result{g, err} }()
	go func() { g, err := recv(a); ba <- result{g, err} }()
	errs := make(chan error, 2)
	go func() { errs <- send(a) }()
	go func() { errs <- send(b) }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	for _, ch := range []chan result{ab, ba} {
		r := <-ch
		if r.err != nil {
			t.Fatalf("receive: %v", r.err)
		}
		if !bytes.Equal(r.got, want.Bytes()) {
			t.Fatal("received bytes differ from those sent")
		}
	}
}

// TestRecordHandOverInterop: after the hand-over, a RecordConn and the
// peer's crypto/tls (or another RecordConn) carry data both ways and see a
// close as the end of the stream: the bytes on the wire are TLS 1.3. It
// covers a full handshake (the server's session ticket), a resumed one,
// and one with a HelloRetryRequest.
func TestRecordHandOverInterop(t *testing.T) {
	ca := certstest.NewCA(t)
	plain := ca.ServerConfig(t, "server")
	srvBase := CaptureSecrets(plain)
	cliBase := ca.ClientConfig(t, "laptop", "server")
	type variant struct {
		name   string
		resume bool
		hrr    bool
	}
	variants := []variant{{name: "full"}, {name: "resumed", resume: true}, {name: "hrr", hrr: true}}
	modes := []struct {
		name     string
		cli, srv bool
	}{{"both", true, true}, {"client", true, false}, {"server", false, true}}
	for _, v := range variants {
		for _, m := range modes {
			t.Run(v.name+"/"+m.name, func(t *testing.T) {
				srvCfg, cliCfg := srvBase, cliBase.Clone()
				if v.resume {
					cliCfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
					tlsPair(t, srvCfg, cliCfg) // leaves a ticket in the cache
				}
				if v.hrr {
					// The client's key share is X25519; the server asks again
					// for P-256.
					p256 := plain.Clone()
					p256.CurvePreferences = []tls.CurveID{tls.CurveP256}
					srvCfg = CaptureSecrets(p256)
					cliCfg.CurvePreferences = []tls.CurveID{tls.X25519, tls.CurveP256}
				}
				cli, srv := tlsPair(t, srvCfg, cliCfg)
				cs := cli.tc.ConnectionState()
				if cs.DidResume != v.resume || cs.HelloRetryRequest != v.hrr {
					t.Fatalf("handshake: resumed %v, HRR %v; want %v, %v", cs.DidResume, cs.HelloRetryRequest, v.resume, v.hrr)
				}
				a, b := cli.handOver(t, m.cli), srv.handOver(t, m.srv)
				exchange(t, a, b)
				// A close from either side is the end of the other's stream.
				if err := a.Close(); err != nil {
					t.Fatal(err)
				}
				b.(interface{ SetReadDeadline(time.Time) error }).SetReadDeadline(time.Now().Add(5 * time.Second))
				if n, err := b.Read(make([]byte, 10)); n != 0 || err != io.EOF {
					t.Fatalf("after the peer's close: Read = %d, %v; want 0, EOF", n, err)
				}
			})
		}
	}
}

// TestRecordHandOverCloseNotify: crypto/tls's close_notify ends a
// RecordConn's stream with io.EOF.
func TestRecordHandOverCloseNotify(t *testing.T) {
	ca := certstest.NewCA(t)
	cli, srv := tlsPair(t, CaptureSecrets(ca.ServerConfig(t, "server")), ca.ClientConfig(t, "laptop", "server"))
	rc := cli.handOver(t, true)
	if _, err := srv.tc.Write([]byte("last")); err != nil {
		t.Fatal(err)
	}
	srv.tc.Close()
	got, err := io.ReadAll(rc)
	if err != nil || string(got) != "last" {
		t.Fatalf("ReadAll = %q, %v; want \"last\", nil", got, err)
	}
}

// TestRecordHandOverRefusesWithoutSecrets: a connection made without the
// key log (plain tls.Client on a BatchConn) cannot be handed over, and
// stays usable on crypto/tls.
func TestRecordHandOverRefusesWithoutSecrets(t *testing.T) {
	ca := certstest.NewCA(t)
	cli, srv := tlsPair(t, CaptureSecrets(ca.ServerConfig(t, "server")), ca.ClientConfig(t, "laptop", "server"))
	cli.bc.mu.Lock()
	cli.bc.tx.secret = nil
	cli.bc.mu.Unlock()
	if _, err := cli.bc.Records(cli.tc.ConnectionState().CipherSuite, false); err == nil || !strings.Contains(err.Error(), "not captured") {
		t.Fatalf("Records without secrets: %v", err)
	}
	exchange(t, cli.tc, srv.handOver(t, true))
}

// TestRecordHandOverWrongCount: the hand-over refuses when the records it
// kept do not prove the count: any one of them forgotten (the first under
// the application key, one in the middle, the last), or all of them. It
// must never continue with a sequence number crypto/tls already used.
func TestRecordHandOverWrongCount(t *testing.T) {
	ca := certstest.NewCA(t)
	cliCfg := ca.ClientConfig(t, "laptop", "server")
	cliCfg.ClientSessionCache = tls.NewLRUClientSessionCache(1) // so the server sends a ticket
	cli, srv := tlsPair(t, CaptureSecrets(ca.ServerConfig(t, "server")), cliCfg)
	suite := srv.tc.ConnectionState().CipherSuite
	for _, e := range []recordEnds{cli, srv} {
		for _, tr := range []*recordTracker{&e.bc.tx, &e.bc.rx} {
			kept := tr.kept
			if len(kept) < 3 {
				t.Fatalf("only %d records kept", len(kept))
			}
			for i := range kept {
				tr.kept = append(kept[:i:i], kept[i+1:]...)
				if _, err := e.bc.Records(suite, false); err == nil {
					t.Fatalf("Records with record %d of %d missing: no error", i, len(kept))
				}
			}
			tr.kept = nil
			if _, err := e.bc.Records(suite, false); err == nil {
				t.Fatal("Records with no record kept: no error")
			}
			tr.kept = kept
		}
	}
	exchange(t, cli.handOver(t, true), srv.handOver(t, true))
}

// TestRecordConnRejectsBadRecords: forged, oversized or wrongly typed
// records from the network end the stream with a clear error.
func TestRecordConnRejectsBadRecords(t *testing.T) {
	ca := certstest.NewCA(t)
	for _, tc := range []struct {
		name string
		wire []byte
		want string
	}{
		{"forged", append([]byte{23, 3, 3, 0, 40}, make([]byte, 40)...), "bad record MAC"},
		{"oversized", []byte{23, 3, 3, 0x41, 1}, "exceeds 2^14 + 256 (alert: record overflow)"},
		{"short", []byte{23, 3, 3, 0, 5, 1, 2, 3, 4, 5}, "bad record MAC"},
		{"empty", []byte{23, 3, 3, 0, 0}, "bad record MAC"},
		{"plaintext handshake", []byte{22, 3, 3, 0, 5, 1, 0, 0, 1, 0}, "bad record MAC"},
		{"old version", []byte{23, 3, 1, 0, 5}, "version 0x0301, want 0x0303 (alert: protocol version not supported)"},
		{"truncated", []byte{23, 3, 3, 0, 40, 1}, "unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli, srv := tlsPair(t, CaptureSecrets(ca.ServerConfig(t, "server")), ca.ClientConfig(t, "laptop", "server"))
			rc := cli.handOver(t, true)
			srv.raw.Write(tc.wire)
			srv.raw.Close()
			_, err := rc.Read(make([]byte, 100))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Read = %v; want an error containing %q", err, tc.want)
			}
			// The error sticks.
			if _, err2 := rc.Read(make([]byte, 100)); err2 == nil {
				t.Fatal("second Read succeeded")
			}
		})
	}
}

// TestRecordConnPeerAlert: a fatal alert from the peer is reported as such.
func TestRecordConnPeerAlert(t *testing.T) {
	ca := certstest.NewCA(t)
	cli, srv := tlsPair(t, CaptureSecrets(ca.ServerConfig(t, "server")), ca.ClientConfig(t, "laptop", "server"))
	rc := cli.handOver(t, true)
	src := srv.handOver(t, true).(*RecordConn)
	src.wmu.Lock()
	src.sealLocked(recordTypeAlert, []byte{2, 80}, false) // internal_error
	src.sendLocked()
	src.wmu.Unlock()
	_, err := rc.Read(make([]byte, 10))
	var ae tls.AlertError
	if !errors.As(err, &ae) || ae != 80 {
		t.Fatalf("Read = %v; want alert 80", err)
	}
}

// TestRecordConnSuites: records sealed under each TLS 1.3 cipher suite
// open on the other side. (crypto/tls picks its suite by hardware and
// cannot be told to use another, so the interop test above covers the one
// this machine negotiates; the key schedule is the same for all three.)
func TestRecordConnSuites(t *testing.T) {
	for _, suite := range []uint16{tls.TLS_AES_128_GCM_SHA256, tls.TLS_AES_256_GCM_SHA384, tls.TLS_CHACHA20_POLY1305_SHA256} {
		t.Run(tls.CipherSuiteName(suite), func(t *testing.T) {
			secretLen := 32
			if suite == tls.TLS_AES_256_GCM_SHA384 {
				secretLen = 48
			}
			s1, s2 := bytes.Repeat([]byte{1}, secretLen), bytes.Repeat([]byte{2}, secretLen)
			a, b := net.Pipe()
			ra, rb := pipeRecordConn(t, a, suite, s1, s2), pipeRecordConn(t, b, suite, s2, s1)
			exchange(t, ra, rb)
			go ra.Close() // net.Pipe: the close_notify waits for the reader
			if _, err := rb.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("after close: %v, want EOF", err)
			}
			if _, err := newTrafficKeys(suite, s1[:secretLen-1], false); err == nil {
				t.Fatal("a secret of the wrong length was accepted")
			}
		})
	}
}

func pipeRecordConn(t *testing.T, c net.Conn, suite uint16, txSecret, rxSecret []byte) *RecordConn {
	t.Helper()
	tx, err := newTrafficKeys(suite, txSecret, false)
	if err != nil {
		t.Fatal(err)
	}
	rx, err := newTrafficKeys(suite, rxSecret, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return newRecordConn(c, tx, 0, rx, 0, nil)
}

// fuzzKeys are fixed keys for the fuzz targets.
func fuzzKeys(t testing.TB) *trafficKeys {
	k, err := newTrafficKeys(tls.TLS_AES_128_GCM_SHA256, bytes.Repeat([]byte{7}, 32), false)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// readerConn is a net.Conn whose reads come from r.
type readerConn struct {
	net.Conn
	r io.Reader
}

func (c *readerConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// FuzzRecordConnRead feeds RecordConn's reader a stream from the network:
// one record sealed with the right key around a fuzzed inner plaintext
// (content, type byte, padding: all the fuzzer's), then fuzzed raw bytes.
// It must never panic, and must return the content exactly when the inner
// plaintext is well-formed application data.
func FuzzRecordConnRead(f *testing.F) {
	f.Add([]byte("hello\x17"), []byte{})
	f.Add([]byte("x\x17\x00\x00\x00"), []byte{23, 3, 3, 0, 17})
	f.Add([]byte{1, 0, 0x15}, []byte{})
	f.Add([]byte{2, 80, 0x15}, []byte{})
	f.Add([]byte{24, 0, 0, 1, 1, 0x16}, []byte{})
	f.Add([]byte{0, 0, 0}, []byte{23, 3, 3, 0x40, 0x11})
	f.Add([]byte{}, []byte{22, 3, 3, 0, 1, 1})
	f.Fuzz(func(t *testing.T, inner, raw []byte) {
		if len(inner) > maxRecord+1 {
			inner = inner[:maxRecord+1]
		}
		k := fuzzKeys(t)
		var stream []byte
		if len(inner) > 0 {
			l := len(inner) + tagLen
			stream = append(stream, recordTypeAppData, 3, 3, byte(l>>8), byte(l))
			var n [12]byte
			k.nonce(0, &n)
			stream = k.aead.Seal(stream, n[:], inner, stream[:recordHeaderLen])
		}
		stream = append(stream, raw...)
		rc := newRecordConn(&readerConn{r: bytes.NewReader(stream)}, k, 0, k, 0, nil)
		var got []byte
		p := make([]byte, 1000)
		var err error
		for range 1000 {
			var n int
			n, err = rc.Read(p)
			if n < 0 || n > len(p) || (n == 0 && err == nil) {
				t.Fatalf("Read = %d, %v", n, err)
			}
			got = append(got, p[:n]...)
			if err != nil {
				break
			}
		}
		if err == nil {
			t.Fatal("the stream never ended")
		}
		if content, typ, ok := splitInner(inner); len(inner) > 0 && ok && typ == recordTypeAppData {
			if !bytes.HasPrefix(got, content) {
				t.Fatalf("got %q, want the sealed content %q first", got, content)
			}
		} else if len(got) != 0 && len(inner) > 0 {
			t.Fatalf("got %d bytes from a stream whose first record is not application data", len(got))
		}
	})
}

// FuzzRecordTracker feeds the pre-hand-over record tracker a stream from
// the network in fuzzed pieces, clipped the way BatchConn.Read clips. It
// must find the same record boundaries as a plain parse, however the
// stream is cut.
func FuzzRecordTracker(f *testing.F) {
	f.Add([]byte{23, 3, 3, 0, 2, 1, 2, 22, 3, 3, 0, 0, 23, 3, 3, 0, 1, 9}, []byte{1, 3, 2})
	f.Add([]byte{23, 3}, []byte{1})
	f.Add(bytes.Repeat([]byte{0xff}, 40), []byte{7, 0})
	f.Fuzz(func(t *testing.T, stream, cuts []byte) {
		// The boundaries a plain parse finds.
		var want []int
		for off := 0; off+recordHeaderLen <= len(stream); {
			off += recordHeaderLen + int(binary.BigEndian.Uint16(stream[off+3:]))
			if off <= len(stream) {
				want = append(want, off)
			}
		}
		tr := recordTracker{hsSecret: []byte{1}, secret: []byte{1}}
		var got []int
		off, ci := 0, 0
		for off < len(stream) {
			n := len(stream) - off
			if len(cuts) > 0 {
				n = min(n, int(cuts[ci%len(cuts)])+1)
				ci++
			}
			n = min(n, tr.until(stream[off:off+n]))
			if n <= 0 {
				t.Fatalf("until = %d at offset %d", n, off)
			}
			tr.observe(stream[off : off+n])
			off += n
			if tr.hdrN == 0 && tr.left == 0 {
				got = append(got, off)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("boundaries %v, want %v", got, want)
		}
		if len(tr.kept) > maxKeptRecords || tr.size > maxKeptBytes {
			t.Fatalf("kept %d records, %d bytes", len(tr.kept), tr.size)
		}
		// Every encrypted record is counted, and kept unless too many.
		enc := 0
		for off := 0; off+recordHeaderLen <= len(stream); off += recordHeaderLen + int(binary.BigEndian.Uint16(stream[off+3:])) {
			if stream[off] == recordTypeAppData {
				enc++
			}
		}
		if tr.records != uint64(enc) || (!tr.over && len(tr.kept) != len(want)-countOther(stream, want)) {
			t.Fatalf("counted %d encrypted records of %d, kept %d (over %v)", tr.records, enc, len(tr.kept), tr.over)
		}
	})
}

// countOther returns how many of the complete records of stream (ending
// at the offsets in ends) are not encrypted (outer type other than 23).
func countOther(stream []byte, ends []int) int {
	n, off := 0, 0
	for _, end := range ends {
		if stream[off] != recordTypeAppData {
			n++
		}
		off = end
	}
	return n
}

// BenchmarkRecordLayer moves 64 KiB writes (one super-packet each) over
// loopback TCP, sealed and opened by crypto/tls or by the own record
// layer, the same way the session uses each: gathered writes of a buffer
// it owns, reads straight into a packet-sized buffer.
func BenchmarkRecordLayer(b *testing.B) {
	ca := certstest.NewCA(b)
	for _, own := range []bool{false, true} {
		name := "stdlib"
		if own {
			name = "own"
		}
		b.Run(name, func(b *testing.B) {
			cli, srv := tlsPair(b, CaptureSecrets(ca.ServerConfig(b, "server")), ca.ClientConfig(b, "laptop", "server"))
			w, r := cli.handOver(b, own), srv.handOver(b, own)
			const n = 65535
			out := make([]byte, n+1)
			in := make([]byte, n+1)
			done := make(chan error, 1)
			go func() {
				for range b.N {
					var err error
					if rc, ok := r.(*RecordConn); ok {
						err = rc.ReadFull(in[:n], true)
					} else {
						_, err = io.ReadFull(r, in[:n])
					}
					if err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			b.SetBytes(n)
			b.ReportAllocs()
			cpu0 := cpuTime()
			b.ResetTimer()
			for range b.N {
				var err error
				if rc, ok := w.(*RecordConn); ok {
					rc.Hold()
					_, err = rc.WriteOwned(out[:n])
					if ferr := rc.Flush(); err == nil {
						err = ferr
					}
				} else {
					cli.bc.Hold()
					_, err = w.Write(out[:n])
					if ferr := cli.bc.Flush(); err == nil {
						err = ferr
					}
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime is the process's user and system CPU time so far, in ns: the
// throughput of a benchmark over loopback depends on the machine, its
// CPU cost much less.
func cpuTime() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// TestRecordLayerCountsRecords: on the record layer a session's usage is
// the exact number of records it sent, and it stops at the per-key limit
// with a rekey Close instead of sending past it.
func TestRecordLayerCountsRecords(t *testing.T) {
	dev := &discardDevice{}
	for i := range 8 {
		dev.pkts = append(dev.pkts, testPacket(allocServer, allocClient, 100+i*5000))
	}
	sink := &bufConn{}
	s := newAllocSession(t, nil, dev)
	tx, _ := recordConns(t, sink, nil)
	onRecords(s, tx)
	m := NewMux(dev, MuxConfig{})
	m.Add(s, allocClient)
	n, raw, _ := m.read()
	m.dispatch(n, raw)
	for len(s.queue) > 0 {
		if err := s.writeChunks(<-s.queue); err != nil {
			t.Fatal(err)
		}
	}
	// Count the records on the wire.
	wire := 0
	for off := 0; off < len(sink.buf); wire++ {
		off += recordHeaderLen + int(binary.BigEndian.Uint16(sink.buf[off+3:]))
	}
	if got, _ := s.Usage(); got != uint64(wire) || wire == 0 {
		t.Fatalf("Usage records = %d, %d records on the wire", got, wire)
	}
	tx.txSeq = MaxRecordsPerKey
	n, raw, _ = m.read()
	m.dispatch(n, raw)
	err := s.writeChunks(<-s.queue)
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != CloseRekey {
		t.Fatalf("writeChunks past the record limit = %v, want a rekey CloseError", err)
	}
}
