package client

import (
	"context"
	"log/slog"
	"time"

	"tlsvpn/tunnel"
)

// Sleep and wake. A laptop that sleeps keeps its TCP connection to the
// server in the kernel, but the server dropped the session after three
// silent keepalive intervals, a NAT on the way forgot the mapping, and
// the laptop may wake on another network. The keepalive would notice
// only after its own deadline, measured on a clock (CLOCK_MONOTONIC) that
// stood still during the suspend. So a watcher reads a clock that counts
// the suspend (CLOCK_BOOTTIME on Linux, the wall clock elsewhere) every
// sleepTick: when far more time passed between two readings than the
// tick, the machine slept (or the process was stopped), and the session
// is replaced at once; a client waiting to retry retries now.

// sleepTick is how often the watcher reads the clock.
const sleepTick = time.Second

// minSleep is the least pause taken for a sleep, whatever the
// keepalive: shorter stalls happen on a loaded machine and cost a
// session nothing.
const minSleep = 10 * time.Second

// sleepThreshold is the pause after which the session is replaced: one
// keepalive interval (the server drops a session after three, and a
// shorter pause cannot have cost it anything the keepalive would not
// catch), at least minSleep. keepalive is the session's, 0 if none.
func sleepThreshold(keepalive time.Duration) time.Duration {
	return max(keepalive, minSleep)
}

// sleepWatch measures the pauses between readings of a clock that keeps
// counting while the machine sleeps.
type sleepWatch struct {
	clock func() time.Duration // bootClock; tests inject one
	last  time.Duration
}

// lost returns how much longer than tick the time since the last reading
// was (0 if not longer), and takes a new reading.
func (w *sleepWatch) lost(tick time.Duration) time.Duration {
	now := w.clock()
	gap := now - w.last - tick
	w.last = now
	return max(gap, 0)
}

// run reads the clock at every tick and calls woke with the pause when
// it reaches threshold(), until ctx ends.
func (w *sleepWatch) run(ctx context.Context, ticks <-chan time.Time, tick time.Duration, threshold func() time.Duration, woke func(slept time.Duration)) {
	w.last = w.clock()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticks:
			if slept := w.lost(tick); slept >= threshold() {
				woke(slept)
			}
		}
	}
}

// watchSleep replaces c's session (or ends its wait before the next
// attempt) when the machine wakes from a sleep, until ctx ends.
func watchSleep(ctx context.Context, c *tunnel.Client, log *slog.Logger) {
	t := time.NewTicker(sleepTick)
	defer t.Stop()
	w := &sleepWatch{clock: bootClock}
	w.run(ctx, t.C, sleepTick, func() time.Duration { return sleepThreshold(c.Status().Config.Keepalive) },
		func(slept time.Duration) {
			slept = slept.Round(time.Second)
			log.Info("woke up; reconnecting", "slept", slept)
			c.Kick("woke up after " + slept.String())
		})
}
