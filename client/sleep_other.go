//go:build !linux

package client

import "time"

// bootClock returns the wall clock, which counts suspend; stepping the
// clock forward by more than the threshold reads as a sleep (one
// needless reconnect).
func bootClock() time.Duration { return time.Duration(time.Now().Round(0).UnixNano()) }
