package client

import (
	"time"

	"golang.org/x/sys/unix"
)

// bootClock returns CLOCK_BOOTTIME: time since boot, including suspend
// (CLOCK_MONOTONIC, which Go's timers use, stops during suspend).
func bootClock() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Duration(time.Now().Round(0).UnixNano())
	}
	return time.Duration(ts.Nano())
}
