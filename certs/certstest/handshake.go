package certstest

import (
	"crypto/tls"
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

// HandshakeResult is the outcome of [Handshake] on both ends.
type HandshakeResult struct {
	Server, Client       tls.ConnectionState // valid when the matching error is nil
	ServerErr, ClientErr error
}

// handshakeTimeout bounds each side in bubble time, so a stuck exchange fails at once
// instead of hanging the test.
const handshakeTimeout = time.Minute

// Handshake runs a TLS handshake between server and client over an in-memory buffered pipe
// and reports both ends. A client whose certificate the server rejects only learns so when it
// next reads (TLS 1.3 clients finish their flight before the server verifies it), so after
// the handshake the server writes one byte and the client reads it; ClientErr covers that
// read. That read also takes in any session ticket, so with tickets enabled on the server and
// a ClientSessionCache on the client, the next Handshake resumes.
//
// It runs inside its own testing/synctest bubble (so it must not be called from inside one):
// if the exchange gets stuck, the deadlines fire instantly in bubble time. The pipe is
// buffered (unlike net.Pipe) because both ends may write at once, which a resumed TLS 1.3
// handshake always does. Configs without Time get the real current time, because the
// bubble's clock starts in 2000 and certificates would not yet be valid; for the same reason a
// [certs.Revocation] used here needs an injected clock (see [CA.Revocation]).
func Handshake(t *testing.T, server, client *tls.Config) HandshakeResult {
	t.Helper()
	now := time.Now()
	server, client = withTime(server, now), withTime(client, now)
	var res HandshakeResult
	synctest.Test(t, func(t *testing.T) {
		sconn, cconn := pipe()
		deadline := time.Now().Add(handshakeTimeout)
		sconn.SetDeadline(deadline)
		cconn.SetDeadline(deadline)
		srv, cli := tls.Server(sconn, server), tls.Client(cconn, client)

		done := make(chan struct{})
		go func() {
			defer close(done)
			// Close the pipe, not the tls.Conn: a close_notify would be one more write
			// racing the client's own close.
			defer sconn.Close()
			if res.ServerErr = srv.Handshake(); res.ServerErr != nil {
				return
			}
			res.Server = srv.ConnectionState()
			_, res.ServerErr = srv.Write([]byte{1})
		}()

		if res.ClientErr = cli.Handshake(); res.ClientErr == nil {
			res.Client = cli.ConnectionState()
			if _, err := cli.Read(make([]byte, 1)); err != nil {
				res.ClientErr = fmt.Errorf("read after handshake: %w", err)
			}
		}
		cconn.Close()
		<-done
	})
	return res
}

// withTime returns cfg, cloned with Time set to now if it had none.
func withTime(cfg *tls.Config, now time.Time) *tls.Config {
	if cfg.Time != nil {
		return cfg
	}
	cfg = cfg.Clone()
	cfg.Time = func() time.Time { return now }
	return cfg
}
