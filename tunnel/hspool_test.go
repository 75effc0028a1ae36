package tunnel

import (
	"context"
	"sync"
	"testing"
)

// TestHandshakersReuseWorkers: handshakes one after another run on one
// worker (its stack stays grown), concurrent ones on as many workers as
// are busy, a panic reaches the caller, and every worker ends with the
// context.
func TestHandshakersReuseWorkers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	h := newHandshakers(ctx)
	for i := range 100 {
		ran := false
		h.do(func() { ran = true })
		if !ran {
			t.Fatalf("do %d returned before its function ran", i)
		}
	}
	if n := h.started.Load(); n != 1 {
		t.Errorf("100 handshakes one after another started %d workers, want 1", n)
	}

	// Four at once, each waiting for the others: four workers in all (one
	// of them the idle one from before).
	var ready sync.WaitGroup
	ready.Add(4)
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			h.do(func() { ready.Done(); <-release })
		})
	}
	ready.Wait()
	close(release)
	wg.Wait()
	if n := h.started.Load(); n != 4 {
		t.Errorf("after 4 concurrent handshakes: %d workers started, want 4", n)
	}

	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("panic in a handshake reached the caller as %v, want boom", r)
			}
		}()
		h.do(func() { panic("boom") })
	}()
	// The worker survived its job's panic and takes the next one.
	before := h.started.Load()
	h.do(func() {})
	if n := h.started.Load(); n != before {
		t.Errorf("a handshake after a panic started a new worker (%d -> %d)", before, n)
	}

	cancel()
	h.wait() // returns only once every worker has ended
}
