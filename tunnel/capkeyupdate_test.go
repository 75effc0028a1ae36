package tunnel

import (
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// TestCapKeyUpdateOnlyFromOwnLayer: a side announces CapKeyUpdate (in its
// HELLO or CONFIG) only when it will try the own record layer. A side on
// crypto/tls counts every record of the connection (BatchConn), so a peer
// that updated the keys in-band would meet CLOSE 8 at 2^24 records instead
// of the client's reconnect rotation at 2^23: the client's session must
// rekey in-band only when both sides are on the own layer.
func TestCapKeyUpdateOnlyFromOwnLayer(t *testing.T) {
	if err := OwnRecordLayer(); err != nil {
		t.Skipf("the own record layer is off in this process (%v); TestFIPSModeKeepsRecordsOnStdlib covers FIPS mode", err)
	}
	for _, tc := range []struct {
		srvStdlib, cliStdlib bool
	}{{false, false}, {true, false}, {false, true}, {true, true}} {
		t.Run(fmt.Sprintf("server_stdlib=%v/client_stdlib=%v", tc.srvStdlib, tc.cliStdlib), func(t *testing.T) {
			p := startLivePair(t,
				func(c *ServerConfig) { c.StdlibRecords = tc.srvStdlib },
				func(c *ClientConfig) { c.StdlibRecords = tc.cliStdlib })
			if got, want := p.config.Caps&CapKeyUpdate != 0, !tc.srvStdlib; got != want {
				t.Errorf("CONFIG announces CapKeyUpdate: %v, want %v (caps %#x)", got, want, p.config.Caps)
			}
			if got, want := p.srvSess.cfg.PeerKeyUpdate, !tc.cliStdlib; got != want {
				t.Errorf("HELLO announces CapKeyUpdate: %v, want %v", got, want)
			}
			both := !tc.srvStdlib && !tc.cliStdlib
			if got := p.cliSess.RekeysInBand(); got != both {
				t.Errorf("client session RekeysInBand() = %v, want %v (false: it rotates by reconnecting)", got, both)
			}
			if got := p.srvSess.RekeysInBand(); got != both {
				t.Errorf("server session RekeysInBand() = %v, want %v", got, both)
			}
		})
	}
}

// TestStdlibServerClientRotates: a client on the own record layer with a
// server on crypto/tls keeps the keys under the limit by rotating (a new
// connection, the old session retired), not with in-band KeyUpdates the
// server's BatchConn cannot see. A budget of 64 records shows it; the real
// one is 2^23, and the server's CLOSE 8 backstop 2^24.
func TestStdlibServerClientRotates(t *testing.T) {
	if err := OwnRecordLayer(); err != nil {
		t.Skipf("the own record layer is off in this process (%v)", err)
	}
	const budget = 64
	p := startLivePair(t,
		func(c *ServerConfig) { c.StdlibRecords = true },
		func(c *ClientConfig) { c.RotateRecords = budget; c.MaxAttempts = 0 })
	if p.cstats.RecordHandOvers.Load() != 1 || p.sstats.RecordHandOvers.Load() != 0 {
		t.Fatalf("record hand-overs: client %d, server %d; want 1, 0", p.cstats.RecordHandOvers.Load(), p.sstats.RecordHandOvers.Load())
	}
	for i := 1; i <= 2*budget; i++ {
		p.roundTrip(t, i)
	}
	// The client looks at its budget every second.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, rotations := p.cl.Counts(); rotations > 0 {
			break
		}
		if time.Now().After(deadline) {
			records, _ := p.cliSess.Usage()
			t.Fatalf("no rotation 10s after %d round trips (client session at %d records, budget %d, in-band %v)",
				2*budget, records, budget, p.cliSess.RekeysInBand())
		}
	}
	if n := p.cstats.KeyUpdatesSent.Load() + p.cstats.KeyUpdatesReceived.Load(); n != 0 {
		t.Errorf("the client sent or received %d KeyUpdates; want none with a server on crypto/tls", n)
	}
	if reconnects, _ := p.cl.Counts(); reconnects != 0 {
		t.Errorf("the client reconnected %d times; want a rotation only", reconnects)
	}
	p.roundTrip(t, 0) // the new session carries traffic
}

// rxCountingTransport is a connTransport that reports a record count.
type rxCountingTransport struct {
	connTransport
	rx *atomic.Uint64
}

func (c rxCountingTransport) RxRecords() uint64 { return c.rx.Load() }

// TestReceiveSideRecordLimit: a session that only receives is told to
// reconnect once the peer's records under its keys pass MaxRecordsPerKey,
// as the writer is for its own. On crypto/tls, which counts every record
// of the connection, a peer that rotates in-band (it was told it may
// before this side's hand-over was refused) gets there. The batch that
// crosses the limit still reaches the TUN; then the reader ends the
// session with CloseRekey, which Run sends as CLOSE 8, rather than
// running into the record layer's hard limit, which would cut the
// connection with no word to the peer.
func TestReceiveSideRecordLimit(t *testing.T) {
	var _ rxRecordCounter = (*tlsTransport)(nil)
	var stream []byte
	for i := range 3 {
		stream = AppendFrame(stream, TypeData, i == 2, testPacket(allocClient, allocServer, 100))
	}
	dev := &discardDevice{}
	rx := new(atomic.Uint64)
	s := NewSession(SessionConfig{
		Transport: rxCountingTransport{connTransport{&loopConn{data: stream}}, rx},
		Dev:       dev,
		Allowed:   []netip.Prefix{netip.PrefixFrom(allocClient, 32)},
		QueueLen:  256,
	})
	batch := func() error {
		for i := range 3 {
			if err := s.readFrame(); err != nil {
				if i < 2 {
					t.Fatalf("frame %d of a batch: %v", i, err)
				}
				return err
			}
		}
		return nil
	}
	rx.Store(MaxRecordsPerKey)
	if err := batch(); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	rx.Store(MaxRecordsPerKey + 1)
	var ce *CloseError
	if err := batch(); !errors.As(err, &ce) || ce.Code != CloseRekey {
		t.Fatalf("past the limit: %v, want a CloseRekey", err)
	}
	if got := s.stats.RxPackets.Load(); got != 6 {
		t.Errorf("%d packets reached the TUN, want all 6: the batch that crossed the limit too", got)
	}
}
