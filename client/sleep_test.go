package client

import (
	"context"
	"testing"
	"time"
)

// TestSleepThreshold: a pause of one keepalive interval counts as a
// sleep, never less than minSleep.
func TestSleepThreshold(t *testing.T) {
	for _, tt := range []struct{ keepalive, want time.Duration }{
		{0, minSleep}, {2 * time.Second, minSleep}, {15 * time.Second, 15 * time.Second}, {time.Minute, time.Minute},
	} {
		if got := sleepThreshold(tt.keepalive); got != tt.want {
			t.Errorf("sleepThreshold(%v) = %v, want %v", tt.keepalive, got, tt.want)
		}
	}
}

// TestSleepWatch drives the watcher with a fake clock and fake ticks:
// regular ticks and a stall shorter than the threshold are not a sleep;
// a jump of a minute (a suspend, or SIGSTOP) is reported once, with the
// time lost.
func TestSleepWatch(t *testing.T) {
	// Each reading is handed over when the watcher asks for it, so the
	// test decides what every tick sees.
	readings := make(chan time.Duration)
	w := &sleepWatch{clock: func() time.Duration { return <-readings }}
	ticks := make(chan time.Time)
	woke := make(chan time.Duration, 4)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		w.run(ctx, ticks, time.Second, func() time.Duration { return 15 * time.Second }, func(d time.Duration) { woke <- d })
		close(done)
	}()
	var now time.Duration
	readings <- now
	tick := func(elapsed time.Duration) {
		now += elapsed
		ticks <- time.Time{}
		readings <- now
	}
	for range 5 {
		tick(time.Second)
	}
	tick(9 * time.Second) // a loaded machine: 8s late
	tick(time.Second)
	tick(61 * time.Second) // asleep for a minute
	tick(time.Second)      // the report of the one before is in once this is taken
	cancel()
	<-done
	close(woke)
	var got []time.Duration
	for d := range woke {
		got = append(got, d)
	}
	if len(got) != 1 || got[0] != time.Minute {
		t.Errorf("woke reports %v, want one of 1m0s", got)
	}
}

// TestSleepWatchBackwards: a clock that goes back (it should not, but a
// wall clock elsewhere can be set back) is no sleep.
func TestSleepWatchBackwards(t *testing.T) {
	now := time.Hour
	w := &sleepWatch{clock: func() time.Duration { return now }, last: now}
	now -= 10 * time.Minute
	if got := w.lost(time.Second); got != 0 {
		t.Errorf("lost() after the clock went back = %v, want 0", got)
	}
}

// TestBootClock: the real clock moves forward.
func TestBootClock(t *testing.T) {
	a := bootClock()
	b := bootClock()
	if a <= 0 || b < a {
		t.Errorf("bootClock() = %v then %v, want positive and not going back", a, b)
	}
}
