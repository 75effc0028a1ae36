package state

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"
)

func testEtcd(t *testing.T) *Etcd {
	e := &Etcd{ctx: t.Context(), timeout: 50 * time.Millisecond, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	e.up.Store(true)
	return e
}

// TestDoOutlivesALostForward: the leader dies; the request in flight to
// it fails at once, the next one (forwarded by a follower to the dead
// leader) waits out its timeout, and the third reaches the new leader.
// The store stays up and the request succeeds.
func TestDoOutlivesALostForward(t *testing.T) {
	e := testEtcd(t)
	tries := 0
	err := e.do(func(ctx context.Context) error {
		tries++
		switch tries {
		case 1:
			return errors.New("rpc error: code = Unavailable desc = error reading from server: EOF")
		case 2:
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	})
	if err != nil || tries != 3 {
		t.Fatalf("do = %v after %d tries, want success on the third", err, tries)
	}
	if !e.Up() {
		t.Error("the store is marked down after a request that succeeded")
	}
}

// TestDoGivesUpAfterTwoTimeouts: a store that never answers costs two
// request timeouts, not three, and is marked down.
func TestDoGivesUpAfterTwoTimeouts(t *testing.T) {
	e := testEtcd(t)
	tries := 0
	err := e.do(func(ctx context.Context) error {
		tries++
		<-ctx.Done()
		return ctx.Err()
	})
	if !errors.Is(err, context.DeadlineExceeded) || tries != 2 {
		t.Fatalf("do = %v after %d tries, want a deadline after 2", err, tries)
	}
	if e.Up() {
		t.Error("the store is still marked up after it did not answer")
	}
}

// TestDoStopsWhenClosed: once the Etcd is closed, a failed request is
// not retried.
func TestDoStopsWhenClosed(t *testing.T) {
	e := testEtcd(t)
	ctx, cancel := context.WithCancel(t.Context())
	e.ctx = ctx
	tries := 0
	err := e.do(func(context.Context) error {
		tries++
		cancel()
		return context.Canceled
	})
	if err == nil || tries != 1 {
		t.Fatalf("do = %v after %d tries, want one failed try", err, tries)
	}
}
