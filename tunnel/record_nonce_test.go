package tunnel

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"tlsvpn/certs/certstest"
)

// tapConn keeps a copy of everything written on the connection: one
// direction of the TLS stream, as it went on the wire.
type tapConn struct {
	net.Conn
	mu   sync.Mutex
	sent bytes.Buffer
}

func (c *tapConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.sent.Write(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *tapConn) wire() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.sent.Bytes()...)
}

// nonceUse is one (key, nonce) pair: the key's generation (-1 for the
// handshake key, 0 for the first application key, then one more per
// KeyUpdate) and the sequence number (the nonce is the key's IV XOR it).
type nonceUse struct {
	gen int
	seq uint64
}

// checkNonces accounts for every encrypted record of one direction of a
// TLS 1.3 stream, whoever sealed it (crypto/tls or the own record layer):
// each must open under the key and sequence number that come next, the
// handshake key first, then the application keys, following the
// KeyUpdate messages in the stream. It returns the (key, nonce) pairs in
// order, and fails on a record that opens under no next pair, telling
// which earlier pair it reuses if it does.
func checkNonces(wire []byte, suite uint16, hsSecret, appSecret []byte) ([]nonceUse, error) {
	hk, err := newTrafficKeys(suite, hsSecret, false)
	if err != nil {
		return nil, err
	}
	ak, err := newTrafficKeys(suite, appSecret, false)
	if err != nil {
		return nil, err
	}
	keys := []*trafficKeys{ak}
	var uses []nonceUse
	seen := map[nonceUse]bool{}
	gen, seq, hsSeq := -1, uint64(0), uint64(0)
	var nonce [12]byte
	for off, i := 0, 0; off < len(wire); i++ {
		if len(wire)-off < recordHeaderLen {
			return uses, fmt.Errorf("truncated record header at %d", off)
		}
		rec := wire[off : off+recordHeaderLen+int(binary.BigEndian.Uint16(wire[off+3:]))]
		off += len(rec)
		if rec[0] != recordTypeAppData {
			continue // ClientHello, ServerHello, change_cipher_spec
		}
		var use nonceUse
		if gen < 0 {
			if _, err := hk.open(nil, rec, hsSeq, &nonce); err == nil {
				use = nonceUse{-1, hsSeq}
				hsSeq++
			} else {
				gen = 0
			}
		}
		if gen >= 0 {
			inner, err := keys[gen].open(nil, rec, seq, &nonce)
			if err != nil {
				for g := gen; g >= 0; g-- {
					for s := range seq + 1 {
						if _, e := keys[g].open(nil, rec, s, &nonce); e == nil {
							return uses, fmt.Errorf("record %d reuses (key %d, nonce for sequence %d)", i, g, s)
						}
					}
				}
				return uses, fmt.Errorf("record %d opens under no expected key and nonce (key %d, sequence %d)", i, gen, seq)
			}
			use = nonceUse{gen, seq}
			seq++
			if content, typ, _ := splitInner(inner); typ == recordTypeHandshake && len(content) > 0 && content[0] == typeKeyUpdate {
				next, err := keys[gen].next()
				if err != nil {
					return uses, err
				}
				keys = append(keys, next)
				gen, seq = gen+1, 0
			}
		}
		if seen[use] {
			return uses, fmt.Errorf("record %d uses (key %d, sequence %d) again", i, use.gen, use.seq)
		}
		seen[use] = true
		uses = append(uses, use)
	}
	return uses, nil
}

// TestNoNonceReuse records both directions of sessions that start on
// crypto/tls and go on with the own record layer (on either side or both),
// with KeyUpdates in both directions and a close, and checks that every
// encrypted record on the wire used its own (key, nonce) pair. It also
// shows the check catches a reuse: a hand-over that restarts the sequence
// at 0, as the record layer once could.
func TestNoNonceReuse(t *testing.T) {
	ca := certstest.NewCA(t)
	srvCfg := CaptureSecrets(ca.ServerConfig(t, "server"))
	for _, m := range []struct {
		name     string
		cli, srv bool
	}{{"both", true, true}, {"client", true, false}, {"server", false, true}} {
		t.Run(m.name, func(t *testing.T) {
			cliCfg := ca.ClientConfig(t, "laptop", "server")
			cliCfg.ClientSessionCache = tls.NewLRUClientSessionCache(1) // a ticket crosses the hand-over
			var taps []*tapConn
			cli, srv := tlsPairWrap(t, srvCfg, cliCfg, func(c net.Conn) net.Conn {
				tc := &tapConn{Conn: c}
				taps = append(taps, tc)
				return tc
			})
			suite := cli.tc.ConnectionState().CipherSuite
			// The secrets, for the check (the hand-over wipes its copies).
			secrets := [][2][]byte{
				{bytes.Clone(cli.bc.tx.hsSecret), bytes.Clone(cli.bc.tx.secret)},
				{bytes.Clone(srv.bc.tx.hsSecret), bytes.Clone(srv.bc.tx.secret)},
			}
			stats := new(Stats)
			side := func(e recordEnds, yes bool) stream {
				s := e.handOver(t, yes)
				if rc, ok := s.(*RecordConn); ok {
					rc.setOptions(recordOptions{keyUpdate: true, rekeyAt: 3, stats: stats})
				}
				return s
			}
			a, b := side(cli, m.cli), side(srv, m.srv)
			exchange(t, a, b)
			a.Close()
			b.(interface{ SetReadDeadline(time.Time) error }).SetReadDeadline(time.Now().Add(5 * time.Second))
			io.Copy(io.Discard, b)
			b.Close()
			if stats.KeyUpdatesSent.Load() == 0 {
				t.Fatal("no KeyUpdate was sent")
			}
			for i, dir := range []string{"client to server", "server to client"} {
				uses, err := checkNonces(taps[i].wire(), suite, secrets[i][0], secrets[i][1])
				if err != nil {
					t.Fatalf("%s: %v", dir, err)
				}
				gens := uses[len(uses)-1].gen
				t.Logf("%s: %d encrypted records under %d application keys, no (key, nonce) used twice", dir, len(uses), gens+1)
			}
		})
	}

	t.Run("restart at 0 is caught", func(t *testing.T) {
		cliCfg := ca.ClientConfig(t, "laptop", "server")
		var taps []*tapConn
		_, srv := tlsPairWrap(t, srvCfg, cliCfg, func(c net.Conn) net.Conn {
			tc := &tapConn{Conn: c}
			taps = append(taps, tc)
			return tc
		})
		hs, app := bytes.Clone(srv.bc.tx.hsSecret), bytes.Clone(srv.bc.tx.secret)
		rc, err := srv.bc.Records(srv.tc.ConnectionState().CipherSuite, false)
		if err != nil {
			t.Fatal(err)
		}
		rc.txSeq = 0 // what the old fallback did when the count came up short
		rc.Write([]byte("x"))
		_, err = checkNonces(taps[1].wire(), srv.tc.ConnectionState().CipherSuite, hs, app)
		if err == nil || !strings.Contains(err.Error(), "reuses (key 0, nonce for sequence 0)") {
			t.Fatalf("check = %v, want a reuse of sequence 0 found", err)
		}
	})
}
