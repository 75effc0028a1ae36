package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"tlsvpn/certs/certstest"
)

// FuzzRecordLayerMatchesStdlib is a differential fuzz target: it builds a
// stream of records from the fuzzer's operations (data of any size and
// padding, empty records, alerts, tickets whole and split, key updates,
// handshake records with arbitrary content, inner and outer types, raw
// bytes, flipped bits, a cut-off end) under the keys of a real session,
// and feeds the same bytes to crypto/tls and to RecordConn, both in the
// state a client is in at the hand-over. Both must return the same
// application data, end the same way (EOF or error), and send the same
// alert.
//
// Three differences are deliberate and kept out of the comparison:
//   - a change_cipher_spec record after the handshake, outer or inner:
//     crypto/tls drops it, RFC 8446 section 5 asks for unexpected_message,
//     which RecordConn sends (the fuzzer never produces one);
//   - an empty inner plaintext (a record of only a tag): crypto/tls takes
//     it for an empty application data record, RFC 8446 section 5.4 asks
//     for unexpected_message (no content type), which RecordConn sends
//     (the fuzzer never produces one);
//   - a post-handshake message other than NewSessionTicket and KeyUpdate:
//     crypto/tls first parses it by type (decode_error, or waiting for up to
//     256 KiB of a Certificate) where RecordConn refuses it by type once it
//     is complete; both refuse it and deliver the same data before it.
func FuzzRecordLayerMatchesStdlib(f *testing.F) {
	f.Add([]byte{0, 1, 200, 0})
	f.Add([]byte{0, 0, 5, 2, 5, 1, 0, 0, 10, 4, 0})
	f.Add([]byte{4, 3, 0, 0, 7, 5, 1, 0, 0, 9, 11})
	f.Add([]byte{1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0, 0, 2, 0})
	f.Add([]byte{3, 5, 24, 0, 0, 1, 0, 0, 0, 3, 0})
	f.Add([]byte{6, 9, 23, 3, 3, 0, 4, 1, 2, 3, 4})
	f.Add([]byte{0, 2, 0, 0, 7, 0, 40, 0, 1, 3})
	f.Add([]byte{8, 90, 0, 8, 21, 2, 1, 0, 10, 21})
	f.Add([]byte{0, 64, 1, 255, 9, 4})
	f.Add([]byte{2, 1, 90, 0, 0, 2, 0, 2, 1, 0})
	ca := certstest.NewCA(f)
	srvCfg := CaptureSecrets(ca.ServerConfig(f, "server"))
	cliCfg := ca.ClientConfig(f, "laptop", "server")
	cliCfg.ClientSessionCache = nil // tickets are parsed and dropped, as after the hand-over
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 400 {
			ops = ops[:400]
		}
		cli, srv := tlsPair(t, srvCfg, cliCfg)
		suite := cli.tc.ConnectionState().CipherSuite
		// The server's sending side, taken over: the stream's sender.
		src, err := srv.bc.Records(suite, false)
		if err != nil {
			t.Fatal(err)
		}
		s := &peerSender{t: t, k: src.tx, seq: src.txSeq}
		stream := buildStream(s, ops)

		// RecordConn, in the client's state at the hand-over.
		ptx, err := cli.bc.tx.prove(suite, false)
		if err != nil {
			t.Fatal(err)
		}
		prx, err := cli.bc.rx.prove(suite, false)
		if err != nil {
			t.Fatal(err)
		}
		pending := bytes.Clone(cli.bc.in.bytes())
		own := newRecordConn(&streamConn{r: bytes.NewReader(stream)}, ptx.keys, ptx.seq, prx.keys, prx.seq, pending)
		own.client = true
		own.setOptions(recordOptions{})
		ownData, ownErr := readAll(own)
		ownAlert := -1
		if a := own.alert.Load(); a > 0 {
			ownAlert = int(a - 1)
		}

		// crypto/tls, reading the same bytes from under its BatchConn.
		out := &streamConn{r: bytes.NewReader(stream)}
		cli.bc.Conn = out
		stdData, stdErr := readAll(cli.tc)
		txKeys, err := newTrafficKeys(suite, cli.bc.tx.secret, false)
		if err != nil {
			t.Fatal(err)
		}
		stdAlert := sentAlert(t, out.w.Bytes(), txKeys, ptx.seq)

		if !bytes.Equal(ownData, stdData) {
			t.Fatalf("data: RecordConn %d bytes, crypto/tls %d bytes (RecordConn: %v; crypto/tls: %v)", len(ownData), len(stdData), ownErr, stdErr)
		}
		if ownErr != nil && strings.Contains(ownErr.Error(), "post-handshake message of type") && stdErr != nil {
			return // the second deliberate difference
		}
		if (ownErr == io.EOF) != (stdErr == io.EOF) || ownAlert != stdAlert {
			t.Fatalf("end: RecordConn %v (alert %d), crypto/tls %v (alert %d)", ownErr, ownAlert, stdErr, stdAlert)
		}
	})
}

// readAll reads until an error, at most 10000 times.
func readAll(r io.Reader) ([]byte, error) {
	var got []byte
	buf := make([]byte, 20000)
	for range 10000 {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return got, err
		}
	}
	return got, errors.New("no end")
}

// sentAlert returns the description of the last alert crypto/tls sent in
// wire (records under k from sequence seq on, following its KeyUpdates),
// or -1.
func sentAlert(t *testing.T, wire []byte, k *trafficKeys, seq uint64) int {
	alert := -1
	var nonce [12]byte
	for off := 0; off+recordHeaderLen <= len(wire); {
		rec := wire[off : off+recordHeaderLen+int(binary.BigEndian.Uint16(wire[off+3:]))]
		off += len(rec)
		inner, err := k.open(nil, rec, seq, &nonce)
		if err != nil {
			t.Fatalf("crypto/tls sent a record that does not open: %v", err)
		}
		seq++
		content, typ, _ := splitInner(inner)
		switch {
		case typ == recordTypeAlert && len(content) == 2:
			alert = int(content[1])
		case typ == recordTypeHandshake && len(content) > 0 && content[0] == typeKeyUpdate:
			if k, err = k.next(); err != nil {
				t.Fatal(err)
			}
			seq = 0
		}
	}
	return alert
}

// buildStream turns the fuzzer's operations into records from s.
func buildStream(s *peerSender, ops []byte) []byte {
	var stream, last []byte
	next := func() int {
		if len(ops) == 0 {
			return 0
		}
		b := ops[0]
		ops = ops[1:]
		return int(b)
	}
	take := func(n int) []byte {
		n = min(n, len(ops))
		b := ops[:n]
		ops = ops[n:]
		return b
	}
	noCCS := func(typ int) byte {
		if typ == 20 {
			return 21
		}
		return byte(typ)
	}
	for count := 0; len(ops) > 0 && count < 64; count++ {
		var rec []byte
		switch next() % 12 {
		case 0: // application data, 0 to 2^14+63 bytes, with padding
			n := min(next()<<6|next(), maxRecord+63)
			pad := next() * 8
			if n+pad > maxRecord+64 {
				pad = 0
			}
			rec = s.rec(recordTypeAppData, bytes.Repeat([]byte{byte(n)}, n), pad)
		case 1: // empty application data
			rec = s.rec(recordTypeAppData, nil, next())
		case 2: // alert
			rec = s.rec(recordTypeAlert, []byte{byte(next()), byte(next())}, 0)
		case 3: // a handshake record of arbitrary content
			rec = s.rec(recordTypeHandshake, take(next()%40), 0)
		case 4: // a NewSessionTicket, maybe split in two records
			cut := next() % (len(nst) + 1)
			if cut == 0 || cut == len(nst) {
				rec = s.rec(recordTypeHandshake, nst, 0)
			} else {
				stream = append(stream, s.rec(recordTypeHandshake, nst[:cut], 0)...)
				rec = s.rec(recordTypeHandshake, nst[cut:], 0)
			}
		case 5: // KeyUpdate; the sender follows it
			rec = s.keyUpdate(next()&1 == 1)
		case 6: // raw bytes: a header of any type but 20, then a body
			h := take(5)
			raw := append([]byte(nil), h...)
			if len(raw) > 0 {
				raw[0] = noCCS(int(raw[0]))
			}
			rec = append(raw, take(next()%64)...)
		case 7: // flip one bit of the last record
			if len(last) > 0 {
				i := (next()<<8 | next()) % (len(last) * 8)
				last[i/8] ^= 1 << (i % 8)
			}
			continue
		case 8: // any inner type but change_cipher_spec or none
			typ := noCCS(next())
			if typ == 0 {
				typ = 0xff
			}
			rec = s.rec(typ, take(next()%8), 0)
		case 9: // no content type at all
			rec = s.rec(0, nil, 1+next())
		case 10: // a sealed record with another outer type
			r := sealRecord(s.k, s.seq, noCCS(next()), recordTypeAppData, []byte("x"), 0)
			s.seq++
			rec = r
		case 11: // the stream ends in the middle of the next record
			r := s.rec(recordTypeAppData, []byte("cut"), 0)
			rec = r[:next()%len(r)]
			stream = append(stream, rec...)
			return stream
		}
		stream = append(stream, rec...)
		last = stream[len(stream)-len(rec):]
	}
	return stream
}

// TestStdlibRecordDifferences pins the three deliberate differences from
// crypto/tls that the differential fuzz target leaves out (listed on
// FuzzRecordLayerMatchesStdlib): change_cipher_spec after the handshake
// (outer and inner), an empty inner plaintext, and a post-handshake
// message other than NewSessionTicket and KeyUpdate. Each gets
// unexpected_message.
func TestStdlibRecordDifferences(t *testing.T) {
	for _, tc := range []struct {
		name string
		rec  func(s *peerSender) []byte
		want string
	}{
		{"protected change_cipher_spec", func(s *peerSender) []byte { return s.rec(20, []byte{1}, 0) }, "content type 20"},
		{"outer change_cipher_spec", func(s *peerSender) []byte { return []byte{20, 3, 3, 0, 1, 1} }, "change_cipher_spec"},
		{"empty inner plaintext", func(s *peerSender) []byte { return s.rec(0, nil, 0) }, "no content type"},
		{"certificate after the handshake", func(s *peerSender) []byte { return s.rec(22, []byte{11, 0, 0, 0}, 0) }, "message of type 11"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			secret := randomSecret(t)
			s := &peerSender{t: t, k: mustKeys(t, secret)}
			rc := newRecordConn(&streamConn{r: bytes.NewReader(tc.rec(s))}, mustKeys(t, randomSecret(t)), 0, mustKeys(t, secret), 0, nil)
			rc.client = true
			_, err := io.ReadAll(rc)
			if err == nil || !strings.Contains(err.Error(), tc.want) || rc.alert.Load() != 1+alertUnexpectedMessage {
				t.Fatalf("read: %v (alert %d), want unexpected_message and %q", err, int(rc.alert.Load())-1, tc.want)
			}
		})
	}
}
