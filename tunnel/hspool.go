package tunnel

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// handshakers runs TLS and protocol handshakes on goroutines that outlive
// one connection. A full handshake (X25519MLKEM768, ECDSA, X.509 chain
// building) needs a stack of tens of KiB; a goroutine started per
// connection begins with a few KiB, grows its stack by copying it several
// times during the handshake, and the garbage collector shrinks it again
// once the goroutine has become an idle session. At hundreds of new
// connections a second that was about a tenth of tunneld's CPU. A worker
// keeps its grown stack from one handshake to the next.
//
// There are as many workers as handshakes in progress (the admission
// limits bound those), started on demand and reused last-in first-out, so
// the busiest stay warm; one left without work for handshakerIdle ends,
// and all end when the context given to newHandshakers does.
type handshakers struct {
	ctx     context.Context
	mu      sync.Mutex
	idle    []*handshaker // waiting for a job; the last one is used first
	wg      sync.WaitGroup
	started atomic.Int64 // workers started so far
}

type handshaker struct {
	jobs chan hsJob // capacity 1: whoever takes the worker off idle sends it one job
}

type hsJob struct {
	f    func()
	done chan any // f's panic, or nil
}

// handshakerIdle is how long a worker waits for the next handshake.
const handshakerIdle = 10 * time.Second

func newHandshakers(ctx context.Context) *handshakers {
	return &handshakers{ctx: ctx}
}

// do runs f on a worker and returns when f has returned. A panic in f is
// re-raised on the caller's goroutine, so the connection's own recovery
// handles it as if f had run there.
func (h *handshakers) do(f func()) {
	j := hsJob{f: f, done: make(chan any, 1)}
	h.mu.Lock()
	if n := len(h.idle); n > 0 {
		w := h.idle[n-1]
		h.idle = h.idle[:n-1]
		h.mu.Unlock()
		w.jobs <- j
	} else {
		h.mu.Unlock()
		w := &handshaker{jobs: make(chan hsJob, 1)}
		w.jobs <- j
		h.wg.Add(1)
		h.started.Add(1)
		go h.work(w)
	}
	if p := <-j.done; p != nil {
		panic(p)
	}
}

func (h *handshakers) work(w *handshaker) {
	defer h.wg.Done()
	t := time.NewTimer(handshakerIdle)
	defer t.Stop()
	for {
		var j hsJob
		select {
		case j = <-w.jobs:
		case <-t.C:
		case <-h.ctx.Done():
		}
		if j.f == nil {
			// Time to end, unless a caller has just taken this worker
			// off the idle list: then its job is on the way.
			h.mu.Lock()
			i := slices.Index(h.idle, w)
			if i >= 0 {
				h.idle = slices.Delete(h.idle, i, i+1)
			}
			h.mu.Unlock()
			if i >= 0 {
				return
			}
			j = <-w.jobs
		}
		p := runRecovering(j.f)
		// Idle again before the caller learns the job is done, so that
		// the caller's next handshake finds this worker.
		h.mu.Lock()
		h.idle = append(h.idle, w)
		h.mu.Unlock()
		j.done <- p
		t.Reset(handshakerIdle)
	}
}

// runRecovering calls f and returns its panic, if any.
func runRecovering(f func()) (p any) {
	defer func() { p = recover() }()
	f()
	return nil
}

// wait returns once every worker has ended (after the context ended).
func (h *handshakers) wait() { h.wg.Wait() }
