package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"tlsvpn/certs/certstest"
	"tlsvpn/tun"
)

// sealRecord returns one TLS 1.3 record sealed under k with sequence number
// seq: inner plaintext content || typ || pad zero bytes (typ 0 leaves the
// type out, for an all-zero inner plaintext), outer type outer.
func sealRecord(k *trafficKeys, seq uint64, outer, typ byte, content []byte, pad int) []byte {
	inner := append([]byte(nil), content...)
	if typ != 0 {
		inner = append(inner, typ)
	}
	inner = append(inner, make([]byte, pad)...)
	l := len(inner) + tagLen
	rec := []byte{outer, 3, 3, byte(l >> 8), byte(l)}
	var n [12]byte
	k.nonce(seq, &n)
	return k.aead.Seal(rec, n[:], inner, rec)
}

// peerSender seals records the way a peer would: numbered, under its
// current key, following its own KeyUpdates.
type peerSender struct {
	t   testing.TB
	k   *trafficKeys
	seq uint64
}

func (s *peerSender) rec(typ byte, content []byte, pad int) []byte {
	r := sealRecord(s.k, s.seq, recordTypeAppData, typ, content, pad)
	s.seq++
	return r
}

// keyUpdate seals a KeyUpdate and moves to the next key.
func (s *peerSender) keyUpdate(requested bool) []byte {
	v := byte(0)
	if requested {
		v = 1
	}
	r := s.rec(recordTypeHandshake, []byte{typeKeyUpdate, 0, 0, 1, v}, 0)
	next, err := s.k.next()
	if err != nil {
		s.t.Fatal(err)
	}
	s.k, s.seq = next, 0
	return r
}

// streamConn reads from r and keeps what is written.
type streamConn struct {
	net.Conn
	r  io.Reader
	mu sync.Mutex
	w  bytes.Buffer
}

func (c *streamConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c *streamConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.w.Write(p)
}
func (c *streamConn) SetWriteDeadline(time.Time) error { return nil }
func (c *streamConn) Close() error                     { return nil }

func randomSecret(t testing.TB) []byte {
	s := make([]byte, 32)
	rand.Read(s)
	return s
}

func mustKeys(t testing.TB, secret []byte) *trafficKeys {
	t.Helper()
	k, err := newTrafficKeys(tls.TLS_AES_128_GCM_SHA256, secret, false)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// nst is a well-formed NewSessionTicket message.
var nst = append([]byte{typeNewSessionTicket, 0, 0, 17}, []byte{
	0, 0, 0, 60, // lifetime
	1, 2, 3, 4, // age add
	1, 9, // nonce
	0, 3, 'a', 'b', 'c', // ticket
	0, 0, // extensions
}...)

// TestRecordConnRules: what the record layer accepts from the peer and
// what it refuses, with the alert it then sends (RFC 8446 sections 5 and
// 6; the same choices as crypto/tls, see FuzzRecordLayerMatchesStdlib).
func TestRecordConnRules(t *testing.T) {
	big := bytes.Repeat([]byte{'x'}, maxRecord)
	type want struct {
		data  string
		err   string // "" = io.EOF
		alert int    // alert sent at Close; -1: close_notify
	}
	for _, tc := range []struct {
		name   string
		client bool
		stream func(s *peerSender) [][]byte
		want   want
	}{
		{"data then close_notify", false, func(s *peerSender) [][]byte {
			return [][]byte{s.rec(23, []byte("ab"), 0), s.rec(23, []byte("c"), 5), s.rec(21, []byte{1, 0}, 0)}
		}, want{"abc", "", -1}},
		{"largest inner plaintext", false, func(s *peerSender) [][]byte {
			return [][]byte{s.rec(23, big, 0), s.rec(23, []byte("y"), maxRecord-1), s.rec(21, []byte{1, 0}, 0)}
		}, want{string(big) + "y", "", -1}},
		{"inner plaintext over 2^14+1", false, func(s *peerSender) [][]byte {
			return [][]byte{s.rec(23, []byte("y"), maxRecord)}
		}, want{"", "exceeds 2^14 + 1", alertRecordOverflow}},
		{"content over 2^14", false, func(s *peerSender) [][]byte {
			return [][]byte{s.rec(23, append(big, 'z'), 0)}
		}, want{"", "exceeds 2^14 + 1", alertRecordOverflow}},
		{"16 empty records", false, func(s *peerSender) [][]byte {
			var r [][]byte
			for range 16 {
				r = append(r, s.rec(23, nil, 3))
			}
			return append(r, s.rec(23, []byte("ok"), 0), s.rec(21, []byte{1, 0}, 0))
		}, want{"ok", "", -1}},
		{"17 empty records", false, func(s *peerSender) [][]byte {
			var r [][]byte
			for range 17 {
				r = append(r, s.rec(23, nil, 0))
			}
			return r
		}, want{"", "without application data", alertUnexpectedMessage}},
		{"user_canceled is dropped", false, func(s *peerSender) [][]byte {
			return [][]byte{s.rec(21, []byte{1, alertUserCanceled}, 0), s.rec(23, []byte("go on"), 0), s.rec(21, []byte{1, 0}, 0)}
		}, want{"go on", "", -1}},
		{"fatal alert", false, func(s *peerSender) [][]byte {
			return [][]byte{s.rec(23, []byte("a"), 0), s.rec(21, []byte{2, 40}, 0)}
		}, want{"a", "handshake failure", -1}},
		{"malformed alert", false, func(s *peerSender) [][]byte {
			return [][]byte{s.rec(21, []byte{2, 40, 0}, 0)}
		}, want{"", "malformed alert", alertUnexpectedMessage}},
		{"no content type", false, func(s *peerSender) [][]byte {
			return [][]byte{s.rec(0, nil, 20)}
		}, want{"", "no content type", alertUnexpectedMessage}},
		{"unknown content type", false, func(s *peerSender) [][]byte {
			return [][]byte{s.rec(99, []byte("x"), 0)}
		}, want{"", "content type 99", alertUnexpectedMessage}},
		{"change_cipher_spec after the handshake", false, func(s *peerSender) [][]byte {
			return [][]byte{s.rec(20, []byte{1}, 0)}
		}, want{"", "content type 20", alertUnexpectedMessage}},
		{"outer type handshake", false, func(s *peerSender) [][]byte {
			r := sealRecord(s.k, s.seq, recordTypeHandshake, 23, []byte("x"), 0)
			s.seq++
			return [][]byte{r}
		}, want{"", "outer type 22", alertUnexpectedMessage}},
		{"ticket to a client is dropped", true, func(s *peerSender) [][]byte {
			return [][]byte{s.rec(22, nst, 0), s.rec(23, []byte("d"), 0), s.rec(21, []byte{1, 0}, 0)}
		}, want{"d", "", -1}},
		{"ticket split over two records", true, func(s *peerSender) [][]byte {
			return [][]byte{s.rec(22, nst[:6], 0), s.rec(22, nst[6:], 0), s.rec(23, []byte("d"), 0), s.rec(21, []byte{1, 0}, 0)}
		}, want{"d", "", -1}},
		{"two tickets in one record", true, func(s *peerSender) [][]byte {
			return [][]byte{s.rec(22, append(append([]byte(nil), nst...), nst...), 0), s.rec(23, []byte("d"), 0), s.rec(21, []byte{1, 0}, 0)}
		}, want{"d", "", -1}},
		{"ticket to a server", false, func(s *peerSender) [][]byte {
			return [][]byte{s.rec(22, nst, 0)}
		}, want{"", "client sent a NewSessionTicket", alertUnexpectedMessage}},
		{"malformed ticket", true, func(s *peerSender) [][]byte {
			bad := append([]byte(nil), nst...)
			bad[3]--
			return [][]byte{s.rec(22, bad[:len(bad)-1], 0)}
		}, want{"", "malformed NewSessionTicket", alertDecodeError}},
		{"data inside a handshake message", true, func(s *peerSender) [][]byte {
			return [][]byte{s.rec(22, nst[:6], 0), s.rec(23, []byte("d"), 0)}
		}, want{"", "middle of a handshake message", alertUnexpectedMessage}},
		{"empty handshake record", false, func(s *peerSender) [][]byte {
			return [][]byte{s.rec(22, nil, 0)}
		}, want{"", "empty handshake record", alertUnexpectedMessage}},
		{"certificate request after the handshake", true, func(s *peerSender) [][]byte {
			return [][]byte{s.rec(22, []byte{13, 0, 0, 1, 0}, 0)}
		}, want{"", "message of type 13", alertUnexpectedMessage}},
		{"oversized handshake message", true, func(s *peerSender) [][]byte {
			return [][]byte{s.rec(22, []byte{typeNewSessionTicket, 1, 0, 1}, 0)}
		}, want{"", "exceeds 65536", alertInternalError}},
		{"key updates", false, func(s *peerSender) [][]byte {
			return [][]byte{s.rec(23, []byte("1"), 0), s.keyUpdate(false), s.rec(23, []byte("2"), 0), s.keyUpdate(true), s.rec(23, []byte("3"), 0), s.rec(21, []byte{1, 0}, 0)}
		}, want{"123", "", -1}},
		{"key update not at the end of its record", false, func(s *peerSender) [][]byte {
			return [][]byte{s.rec(22, append([]byte{typeKeyUpdate, 0, 0, 1, 0}, nst...), 0)}
		}, want{"", "data after a KeyUpdate", alertUnexpectedMessage}},
		{"malformed key update", false, func(s *peerSender) [][]byte {
			return [][]byte{s.rec(22, []byte{typeKeyUpdate, 0, 0, 1, 2}, 0)}
		}, want{"", "malformed KeyUpdate", alertDecodeError}},
		{"17 key updates", false, func(s *peerSender) [][]byte {
			var r [][]byte
			for range 17 {
				r = append(r, s.keyUpdate(false))
			}
			return r
		}, want{"", "without application data", alertUnexpectedMessage}},
		{"record under the old key after a key update", false, func(s *peerSender) [][]byte {
			old := *s.k
			r := [][]byte{s.keyUpdate(false)}
			return append(r, sealRecord(&old, 1, recordTypeAppData, 23, []byte("x"), 0))
		}, want{"", "bad record MAC", alertBadRecordMAC}},
		{"replayed record", false, func(s *peerSender) [][]byte {
			r := s.rec(23, []byte("x"), 0)
			return [][]byte{r, r}
		}, want{"x", "bad record MAC", alertBadRecordMAC}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			secret := randomSecret(t)
			s := &peerSender{t: t, k: mustKeys(t, secret)}
			var stream []byte
			for _, r := range tc.stream(s) {
				stream = append(stream, r...)
			}
			conn := &streamConn{r: bytes.NewReader(stream)}
			own := mustKeys(t, randomSecret(t))
			rc := newRecordConn(conn, own, 0, mustKeys(t, secret), 0, nil)
			rc.client = tc.client
			rc.setOptions(recordOptions{})
			got, err := io.ReadAll(rc)
			if string(got) != tc.want.data {
				t.Errorf("read %q, want %q", trim(got), trim([]byte(tc.want.data)))
			}
			switch {
			case tc.want.err == "" && err != nil:
				t.Errorf("read error %v, want EOF", err)
			case tc.want.err != "" && (err == nil || !strings.Contains(err.Error(), tc.want.err)):
				t.Errorf("read error %v, want one containing %q", err, tc.want.err)
			}
			if _, err2 := rc.Read(make([]byte, 1)); err2 == nil || (err != nil && err2.Error() != err.Error()) {
				t.Errorf("second read: %v, want the first error again", err2)
			}
			// Close sends the alert, sealed under this side's key.
			rc.Close()
			sent := conn.w.Bytes()
			var n [12]byte
			inner, oerr := own.open(nil, sent, 0, &n)
			wantAlert := []byte{1, alertCloseNotify, recordTypeAlert}
			if tc.want.alert >= 0 {
				wantAlert = []byte{2, byte(tc.want.alert), recordTypeAlert}
			}
			if oerr != nil || !bytes.Equal(inner, wantAlert) {
				t.Errorf("sent at close %x (%v), want the alert record %x", inner, oerr, wantAlert)
			}
		})
	}
}

func trim(b []byte) []byte {
	if len(b) > 40 {
		return append(b[:40:40], "..."...)
	}
	return b
}

// keyUpdateFromPeer returns a RecordConn with options o whose peer sends
// a KeyUpdate (update_requested or not) and then a record "x" under its
// next key; peerRx is the secret the peer opens this side's records with.
func keyUpdateFromPeer(t *testing.T, requested bool, o recordOptions) (rc *RecordConn, conn *streamConn, peerRx []byte) {
	peerTx, peerRx := randomSecret(t), randomSecret(t)
	s := &peerSender{t: t, k: mustKeys(t, peerTx)}
	stream := append(s.keyUpdate(requested), s.rec(23, []byte("x"), 0)...)
	conn = &streamConn{r: bytes.NewReader(stream)}
	rc = newRecordConn(conn, mustKeys(t, peerRx), 0, mustKeys(t, peerTx), 0, nil)
	rc.setOptions(o)
	return rc, conn, peerRx
}

// TestRecordConnAnswersKeyUpdate: a peer's update_requested is answered
// with a KeyUpdate before the next data, and the data follows under the
// new key; update_not_requested is not answered.
func TestRecordConnAnswersKeyUpdate(t *testing.T) {
	for _, requested := range []bool{false, true} {
		stats := new(Stats)
		woken := 0
		rc, conn, peerRx := keyUpdateFromPeer(t, requested, recordOptions{stats: stats, wake: func() { woken++ }})
		if _, err := rc.Read(make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		if _, err := rc.Write([]byte("reply")); err != nil {
			t.Fatal(err)
		}
		// What the peer receives: [KeyUpdate(not requested)] then data
		// under the next key, or the data under the first key.
		r := &peerSender{t: t, k: mustKeys(t, peerRx)}
		want := r.rec(23, []byte("reply"), 0)
		if requested {
			r = &peerSender{t: t, k: mustKeys(t, peerRx)}
			want = append(r.keyUpdate(false), r.rec(23, []byte("reply"), 0)...)
		}
		if !bytes.Equal(conn.w.Bytes(), want) {
			t.Fatalf("requested=%v: sent %x, want %x", requested, conn.w.Bytes(), want)
		}
		wantSent := uint64(0)
		if requested {
			wantSent = 1
		}
		if stats.KeyUpdatesReceived.Load() != 1 || stats.KeyUpdatesSent.Load() != wantSent || woken != int(wantSent) {
			t.Fatalf("requested=%v: received %d, sent %d, woken %d", requested, stats.KeyUpdatesReceived.Load(), stats.KeyUpdatesSent.Load(), woken)
		}
	}
}

// TestRecordConnFlushSendsPendingKeyUpdate: the answer to an
// update_requested that arrives after a batch's last record goes out with
// that batch's Flush, after its records and before anything under the
// next key; a Flush with nothing gathered (the writer woken for it) sends
// the answer alone.
func TestRecordConnFlushSendsPendingKeyUpdate(t *testing.T) {
	for _, batch := range []bool{true, false} {
		woken := 0
		rc, conn, peerRx := keyUpdateFromPeer(t, true, recordOptions{wake: func() { woken++ }})
		rc.Hold()
		if batch {
			if _, err := rc.Write([]byte("a")); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := rc.Read(make([]byte, 1)); err != nil || woken != 1 {
			t.Fatalf("reading the peer's update_requested: %v, writer woken %d times", err, woken)
		}
		if err := rc.Flush(); err != nil {
			t.Fatal(err)
		}
		r := &peerSender{t: t, k: mustKeys(t, peerRx)}
		var want []byte
		if batch {
			want = r.rec(23, []byte("a"), 0)
		}
		want = append(want, r.keyUpdate(false)...)
		if !bytes.Equal(conn.w.Bytes(), want) {
			t.Fatalf("batch=%v: Flush sent %x, want %x", batch, conn.w.Bytes(), want)
		}
		if _, err := rc.Write([]byte("b")); err != nil {
			t.Fatal(err)
		}
		want = append(want, r.rec(23, []byte("b"), 0)...)
		if !bytes.Equal(conn.w.Bytes(), want) {
			t.Fatalf("batch=%v: sent %x, want %x", batch, conn.w.Bytes(), want)
		}
	}
}

// TestRecordConnKeyUpdateWithStdlib: with a crypto/tls peer, the own
// record layer updates its sending key every rekeyAt records and asks the
// peer to update its own once it has received rekeyAt records; crypto/tls
// follows both, and every byte arrives both ways.
func TestRecordConnKeyUpdateWithStdlib(t *testing.T) {
	ca := certstest.NewCA(t)
	for _, mine := range []string{"client", "server"} {
		t.Run(mine, func(t *testing.T) {
			cli, srv := tlsPair(t, CaptureSecrets(ca.ServerConfig(t, "server")), ca.ClientConfig(t, "laptop", "server"))
			own, peer := cli, srv
			if mine == "server" {
				own, peer = srv, cli
			}
			rc := own.handOver(t, true).(*RecordConn)
			stats := new(Stats)
			rc.setOptions(recordOptions{keyUpdate: true, rekeyAt: 5, stats: stats, wake: func() {}})
			const n = 40
			msg := func(i int) []byte { return []byte{byte(i), 'm', 's', 'g'} }
			errc := make(chan error, 2)
			go func() { // the peer echoes each message
				b := make([]byte, 4)
				for i := range n {
					if _, err := io.ReadFull(peer.tc, b); err != nil || !bytes.Equal(b, msg(i)) {
						errc <- errors.Join(errors.New("peer read"), err)
						return
					}
					if _, err := peer.tc.Write(b); err != nil {
						errc <- err
						return
					}
				}
				errc <- nil
			}()
			b := make([]byte, 4)
			for i := range n {
				if _, err := rc.Write(msg(i)); err != nil {
					t.Fatal(err)
				}
				if err := rc.ReadFull(b, false); err != nil || !bytes.Equal(b, msg(i)) {
					t.Fatalf("echo %d: %x, %v", i, b, err)
				}
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			sent, recv := stats.KeyUpdatesSent.Load(), stats.KeyUpdatesReceived.Load()
			// About one own update per 5 records sent, and the peer's
			// answers to our requests.
			if sent < n/5 || recv < n/10 {
				t.Fatalf("key updates sent %d, received %d", sent, recv)
			}
			if rc.TxSeq() > 5 || rc.RxSeq() > 6 {
				t.Fatalf("records under the current keys: sent %d, received %d; want at most about 5", rc.TxSeq(), rc.RxSeq())
			}
		})
	}
}

// TestRecordLimit: the own record layer never seals or opens a record
// past the per-key limit; with KeyUpdate allowed it updates instead.
func TestRecordLimit(t *testing.T) {
	sink := &streamConn{}
	tx, rx := recordConns(t, sink, &streamConn{r: bytes.NewReader(nil)})
	tx.txSeq = recordLimit
	if _, err := tx.Write([]byte("x")); !errors.Is(err, errKeyExhausted) {
		t.Fatalf("Write at the limit: %v, want %v", err, errKeyExhausted)
	}
	if err := tx.Close(); err != nil || sink.w.Len() != 0 {
		t.Fatalf("Close at the limit sent %d bytes (%v); want nothing", sink.w.Len(), err)
	}

	tx2, _ := recordConns(t, &bufConn{}, nil)
	tx2.setOptions(recordOptions{keyUpdate: true})
	tx2.txSeq = DefaultRekeyRecords
	if _, err := tx2.Write([]byte("x")); err != nil || tx2.txSeq != 1 {
		t.Fatalf("Write at the rekey point: %v, sequence %d; want a key update and sequence 1", err, tx2.txSeq)
	}

	s := &peerSender{t: t, k: rx.rx, seq: recordLimit}
	rx.Conn = &streamConn{r: bytes.NewReader(s.rec(23, []byte("x"), 0))}
	rx.rxSeq = recordLimit
	if _, err := rx.Read(make([]byte, 1)); err == nil || !strings.Contains(err.Error(), "without a KeyUpdate") {
		t.Fatalf("Read past the limit: %v", err)
	}
}

// TestRecordHandOverBufferedBytes: bytes the peer sent in the same record
// as the last handshake frame are decrypted by crypto/tls but not yet
// read; the hand-over must refuse, and the bytes stay readable.
func TestRecordHandOverBufferedBytes(t *testing.T) {
	ca := certstest.NewCA(t)
	cli, srv := handshakePair(t, CaptureSecrets(ca.ServerConfig(t, "server")), ca.ClientConfig(t, "laptop", "server"), nil)
	if _, err := cli.tc.Write([]byte("helloPING")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 5)
	if _, err := io.ReadFull(srv.tc, b); err != nil {
		t.Fatal(err)
	}
	srv.bc.noteAppRead(5)
	suite := srv.tc.ConnectionState().CipherSuite
	if _, err := srv.bc.Records(suite, false); err == nil || !strings.Contains(err.Error(), "still in its buffer") {
		t.Fatalf("Records with 4 bytes buffered: %v", err)
	}
	srv.bc.Forget()
	b = make([]byte, 4)
	if _, err := io.ReadFull(srv.tc, b); err != nil || string(b) != "PING" {
		t.Fatalf("after the refusal: %q, %v", b, err)
	}
	if _, err := srv.bc.Records(suite, false); err == nil {
		t.Fatal("Records after Forget succeeded")
	}
}

// TestProveRefuses: the proof of where a direction stands refuses every
// record stream it cannot account for.
func TestProveRefuses(t *testing.T) {
	hsSecret, appSecret := randomSecret(t), randomSecret(t)
	type rec struct {
		app     bool
		typ     byte
		content []byte
	}
	hs := func(c string) rec { return rec{false, 22, []byte(c)} }
	app := func(typ byte, c []byte) rec { return rec{true, typ, c} }
	for _, tc := range []struct {
		name     string
		recs     []rec
		seq      uint64
		appBytes int64
		err      string
	}{
		{"handshake only", []rec{hs("ee"), hs("fin")}, 0, 0, ""},
		{"tickets and data", []rec{hs("ee"), hs("fin"), app(22, nst), app(23, []byte("hello")), app(22, append(nst[:3:3], nst[3:]...))}, 3, 5, ""},
		{"ticket over two records", []rec{hs("fin"), app(22, nst[:5]), app(22, nst[5:])}, 2, 0, ""},
		{"key update", []rec{hs("fin"), app(22, []byte{typeKeyUpdate, 0, 0, 1, 0})}, 0, 0, "type 24"},
		{"incomplete ticket", []rec{hs("fin"), app(22, nst[:5])}, 0, 0, "incomplete"},
		{"alert", []rec{hs("fin"), app(21, []byte{1, 0})}, 0, 0, "content type 21"},
		{"no content type", []rec{hs("fin"), app(0, nil)}, 0, 0, "no content type"},
		{"data inside a ticket", []rec{hs("fin"), app(22, nst[:5]), app(23, []byte("x"))}, 0, 0, "interrupts"},
		{"application data under the handshake key", []rec{{false, 23, []byte("x")}}, 0, 0, "not a handshake record"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hk, ak := mustKeys(t, hsSecret), mustKeys(t, appSecret)
			tr := recordTracker{hsSecret: hsSecret, secret: appSecret}
			var hsSeq, seq uint64
			for _, r := range tc.recs {
				if r.app {
					tr.kept = append(tr.kept, sealRecord(ak, seq, 23, r.typ, r.content, 0))
					seq++
				} else {
					tr.kept = append(tr.kept, sealRecord(hk, hsSeq, 23, r.typ, r.content, 0))
					hsSeq++
				}
			}
			tr.records = uint64(len(tr.kept))
			p, err := tr.prove(tls.TLS_AES_128_GCM_SHA256, false)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("prove = %v, want an error containing %q", err, tc.err)
				}
				return
			}
			if err != nil || p.seq != tc.seq || p.appBytes != tc.appBytes {
				t.Fatalf("prove = seq %d, %d bytes, %v; want seq %d, %d bytes", p.seq, p.appBytes, err, tc.seq, tc.appBytes)
			}
			// The same records with one more header seen than kept (one
			// forgotten at the end), or a record from another key, do not
			// prove anything.
			tr.records++
			if _, err := tr.prove(tls.TLS_AES_128_GCM_SHA256, false); err == nil {
				t.Fatal("prove with a record seen but not kept succeeded")
			}
			tr.records--
			other := mustKeys(t, randomSecret(t))
			tr.kept = append(tr.kept, sealRecord(other, seq, 23, 23, []byte("x"), 0))
			tr.records++
			if _, err := tr.prove(tls.TLS_AES_128_GCM_SHA256, false); err == nil || !strings.Contains(err.Error(), "opens neither") {
				t.Fatalf("prove with a foreign record: %v", err)
			}
		})
	}
	// An encrypted record before the handshake key was logged.
	var tr recordTracker
	tr.observe([]byte{23, 3, 3, 0, 1, 0})
	tr.setSecret(hsSecret, false)
	tr.setSecret(appSecret, true)
	if _, err := tr.prove(tls.TLS_AES_128_GCM_SHA256, false); err == nil || !strings.Contains(err.Error(), "before its key") {
		t.Fatalf("prove after an unkept record: %v", err)
	}
}

// fixedPool assigns every identity the same address.
type fixedPool netip.Addr

func (p fixedPool) Assign(string) (netip.Addr, error) { return netip.Addr(p), nil }

// TestNoSecretsWithoutOwnLayer: with --stdlib-tls-records no traffic
// secret is ever captured, on the server (no key log in its TLS config)
// or on the client (none reaches its BatchConn).
func TestNoSecretsWithoutOwnLayer(t *testing.T) {
	ca := certstest.NewCA(t)
	for _, stdlib := range []bool{false, true} {
		srv, err := NewServer(ServerConfig{
			TLS: ca.ServerConfig(t, "server"), Identity: func(tls.ConnectionState) (string, error) { return "laptop", nil },
			Dev: &discardDevice{}, Pool: fixedPool(allocClient), Subnet: netip.MustParsePrefix("100.64.0.0/24"), ServerAddr: allocServer,
			MTU: 1500, StdlibRecords: stdlib,
		})
		if err != nil {
			t.Fatal(err)
		}
		if capture := srv.capturing; capture == stdlib {
			t.Fatalf("stdlib records %v: the server captures secrets: %v", stdlib, capture)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx, ln) }()
		cl, err := NewClient(ClientConfig{
			Dial: func(ctx context.Context) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "tcp", ln.Addr().String())
			},
			TLS:           ca.ClientConfig(t, "laptop", "server"),
			Setup:         func(context.Context, Config) (tun.Device, error) { return &discardDevice{}, nil },
			StdlibRecords: stdlib,
		})
		if err != nil {
			t.Fatal(err)
		}
		tr, _, err := cl.Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		bc := tr.(*tlsTransport).bc
		if got := bc.tx.secret != nil || bc.tx.hsSecret != nil || bc.rx.secret != nil; got == stdlib {
			t.Fatalf("stdlib records %v: the client holds secrets: %v", stdlib, got)
		}
		tr.Close()
		cancel()
		<-done
	}
}

// TestKeyUpdateAtTheBudget: when the peer's KeyUpdate is the record that
// brings the count under its key to rekeyAt, no request of ours follows
// it: the answer to update_requested is one update_not_requested, and an
// update_not_requested needs no answer at all.
func TestKeyUpdateAtTheBudget(t *testing.T) {
	for _, requested := range []bool{false, true} {
		peerTx, peerRx := randomSecret(t), randomSecret(t)
		s := &peerSender{t: t, k: mustKeys(t, peerTx)}
		stream := append(s.rec(23, []byte("a"), 0), s.keyUpdate(requested)...)
		stream = append(stream, s.rec(23, []byte("b"), 0)...)
		conn := &streamConn{r: bytes.NewReader(stream)}
		rc := newRecordConn(conn, mustKeys(t, peerRx), 0, mustKeys(t, peerTx), 0, nil)
		rc.setOptions(recordOptions{keyUpdate: true, rekeyAt: 2})
		b := make([]byte, 2)
		if err := rc.ReadFull(b, false); err != nil || string(b) != "ab" {
			t.Fatalf("read %q, %v", b, err)
		}
		if _, err := rc.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		r := &peerSender{t: t, k: mustKeys(t, peerRx)}
		want := r.rec(23, []byte("x"), 0)
		if requested {
			r = &peerSender{t: t, k: mustKeys(t, peerRx)}
			want = append(r.keyUpdate(false), r.rec(23, []byte("x"), 0)...)
		}
		if !bytes.Equal(conn.w.Bytes(), want) {
			t.Fatalf("requested=%v: sent %d bytes, want %d (one update_not_requested answer at most)", requested, conn.w.Len(), len(want))
		}
	}
}

// TestBatchConnCountsRecords: on crypto/tls the wrapper counts the
// records each way (Usage's view there), and refuses to carry a record
// past the per-key limit.
func TestBatchConnCountsRecords(t *testing.T) {
	ca := certstest.NewCA(t)
	cli, srv := tlsPair(t, CaptureSecrets(ca.ServerConfig(t, "server")), ca.ClientConfig(t, "laptop", "server"))
	ctx0, crx0 := cli.bc.Counts()
	stx0, _ := srv.bc.Counts()
	const n = 10
	go func() {
		for range n {
			srv.tc.Write([]byte("0123456789"))
		}
	}()
	if _, err := io.ReadFull(cli.tc, make([]byte, 10*n)); err != nil {
		t.Fatal(err)
	}
	ctx, crx := cli.bc.Counts()
	stx, _ := srv.bc.Counts()
	if stx-stx0 != n || crx-crx0 != n || ctx != ctx0 {
		t.Fatalf("records counted: server sent %d, client received %d and sent %d; want %d, %d, 0", stx-stx0, crx-crx0, ctx-ctx0, n, n)
	}
	srv.bc.mu.Lock()
	srv.bc.tx.records = recordLimit
	srv.bc.mu.Unlock()
	if _, err := srv.tc.Write([]byte("x")); !errors.Is(err, errRecordLimit) {
		t.Fatalf("write past the limit on crypto/tls: %v, want %v", err, errRecordLimit)
	}
}

// TestTrySendKeepsOrder: TrySend never blocks; when the socket is full it
// leaves the rest of the record for the writer's next send, and every
// record still arrives whole and in order.
func TestTrySendKeepsOrder(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); accepted <- c }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	peer := <-accepted
	defer peer.Close()
	c.(*net.TCPConn).SetWriteBuffer(4096)
	peer.(*net.TCPConn).SetReadBuffer(4096)
	secret := randomSecret(t)
	rc := newRecordConn(c, mustKeys(t, secret), 0, mustKeys(t, randomSecret(t)), 0, nil)
	frame := func(i int) []byte { return AppendFrame(nil, TypePong, true, []byte{byte(i), 1, 2, 3, 4, 5, 6, 7}) }
	sent, queued := 0, false
	for ; sent < 100000 && !queued; sent++ {
		ok, flush, err := rc.TrySend(frame(sent))
		if err != nil || !ok {
			t.Fatalf("TrySend %d: %v, %v", sent, ok, err)
		}
		queued = flush
	}
	if !queued {
		t.Fatal("the socket never filled")
	}
	if ok, _, _ := rc.TrySend(frame(sent)); ok {
		t.Fatal("TrySend went on with a record left over")
	}
	// The reader drains while the writer sends what was left.
	got := make(chan error, 1)
	go func() {
		rx := newRecordConn(peer, mustKeys(t, randomSecret(t)), 0, mustKeys(t, secret), 0, nil)
		b := make([]byte, HeaderLen+PingLen)
		for i := range sent {
			if err := rx.ReadFull(b, false); err != nil {
				got <- err
				return
			}
			if !bytes.Equal(b, frame(i)) {
				got <- fmt.Errorf("record %d is %x, want %x", i, b, frame(i))
				return
			}
		}
		got <- nil
	}()
	if err := rc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}
