package tunnel

import (
	"sync"
	"time"
)

// The keepalive of every session runs on one goroutine: it checks each
// session once per keepalive interval, in rounds a fraction of the
// shortest interval apart, and only wakes a session's writer when a PING
// is due. A gateway with 10,000 idle sessions therefore has one timer
// firing a few times a second instead of 10,000 goroutines each woken
// every interval; on a virtual machine, where every wake-up costs a
// context switch, that is most of what an idle gateway spends.

// keepalive is the schedule of one session, owned by the wheel.
type keepalive struct {
	seen       uint64    // rxFrames at the last check
	lastChange time.Time // when rxFrames last moved
	next       time.Time // next check
}

type keepaliveWheel struct {
	mu       sync.Mutex
	sessions map[*Session]*keepalive
	tick     time.Duration // current round interval
	kick     chan struct{} // a session with a shorter interval arrived
	running  bool
}

var wheel = &keepaliveWheel{sessions: map[*Session]*keepalive{}, kick: make(chan struct{}, 1)}

// roundFor is the wheel's round interval for a keepalive interval: a
// tenth of it, between 10 ms and 1 s.
func roundFor(keepalive time.Duration) time.Duration {
	return min(max(keepalive/10, 10*time.Millisecond), time.Second)
}

// add starts checking s (Keepalive > 0).
func (w *keepaliveWheel) add(s *Session, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sessions[s] = &keepalive{seen: s.rxFrames.Load(), lastChange: now, next: now.Add(s.cfg.Keepalive)}
	round := roundFor(s.cfg.Keepalive)
	if !w.running {
		w.running, w.tick = true, round
		go w.run()
		return
	}
	if round < w.tick {
		w.tick = round
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

// remove stops checking s.
func (w *keepaliveWheel) remove(s *Session) {
	w.mu.Lock()
	delete(w.sessions, s)
	w.mu.Unlock()
}

// run checks the sessions in rounds until there are none; then it ends
// (and add starts it again), so no goroutine outlives the sessions.
func (w *keepaliveWheel) run() {
	t := time.NewTimer(w.tickNow())
	defer t.Stop()
	var due []*Session
	for {
		select {
		case <-t.C:
		case <-w.kick:
			t.Stop()
		}
		now := time.Now()
		w.mu.Lock()
		if len(w.sessions) == 0 {
			w.running = false
			w.mu.Unlock()
			return
		}
		shortest := time.Duration(1<<63 - 1)
		for s, k := range w.sessions {
			shortest = min(shortest, s.cfg.Keepalive)
			if now.Before(k.next) {
				continue
			}
			k.next = now.Add(s.cfg.Keepalive)
			if cur := s.rxFrames.Load(); cur != k.seen {
				k.seen, k.lastChange = cur, now
				if s.cfg.PingWhenIdle {
					continue // the peer is alive and its traffic keeps the path open
				}
			} else if now.Sub(k.lastChange) >= s.cfg.DeadAfter {
				delete(w.sessions, s)
				s.cancel(ErrKeepaliveTimeout)
				continue
			}
			due = append(due, s)
		}
		w.tick = roundFor(shortest)
		w.mu.Unlock()
		for _, s := range due {
			select {
			case s.pingDue <- struct{}{}: // the writer sends it
			default:
			}
		}
		clear(due)
		due = due[:0]
		t.Reset(w.tickNow())
	}
}

func (w *keepaliveWheel) tickNow() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.tick
}
