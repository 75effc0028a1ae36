package server

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// scriptedKeys is a state.TicketKeys that answers from a script, one
// entry per call (the last repeats).
type scriptedKeys struct {
	mu     sync.Mutex
	script []scripted
}

type scripted struct {
	keys [][32]byte
	err  error
}

func (s *scriptedKeys) Keys() ([][32]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.script[0]
	if len(s.script) > 1 {
		s.script = s.script[1:]
	}
	return e.keys, e.err
}

// keySink records what rotateTicketKeys hands to the tunnel server.
type keySink struct {
	mu  sync.Mutex
	got [][][32]byte
}

func (k *keySink) SetSessionTicketKeys(keys [][32]byte) {
	k.mu.Lock()
	k.got = append(k.got, keys)
	k.mu.Unlock()
}

// TestRotateTicketKeys: new ticket keys reach the server within one
// check interval, unchanged ones are not set again, and an error keeps
// the keys in force (said once, and once that it is over).
func TestRotateTicketKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, b, c := [][32]byte{{1}}, [][32]byte{{2}, {1}}, [][32]byte{{3}, {2}}
		boom := errors.New("store unreachable")
		keys := &scriptedKeys{script: []scripted{{a, nil}, {b, nil}, {nil, boom}, {nil, boom}, {b, nil}, {c, nil}}}
		sink := new(keySink)
		var logBuf bytes.Buffer
		log := slog.New(slog.NewTextHandler(&logBuf, nil))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			rotateTicketKeys(ctx, keys, a, sink, time.Minute, log)
			close(done)
		}()
		time.Sleep(6*time.Minute + time.Second) // six checks in the bubble's time
		cancel()
		<-done
		if len(sink.got) != 2 || sink.got[0][0] != b[0] || sink.got[1][0] != c[0] {
			t.Errorf("keys set: %v; want b, then c", sink.got)
		}
		out := logBuf.String()
		if strings.Count(out, "keeping the keys in force") != 1 || strings.Count(out, "available again") != 1 {
			t.Errorf("log:\n%s\nwant one warning and one recovery", out)
		}
	})
}
