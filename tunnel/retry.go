package tunnel

import (
	"strings"
	"time"
)

// retryLogEvery is how often a transient connection failure that repeats
// is logged as a warning while the client retries; the attempts between
// are logged at debug level.
const retryLogEvery = 30 * time.Second

// retryLog is what Run logged about consecutive failed connection
// attempts; the zero value is a fresh start (after a connection).
type retryLog struct {
	slow      time.Duration // the last wait's base after a permanent problem; 0 if none yet
	permanent string        // the last permanent problem logged
	shape     string        // the last transient error logged, digits removed
	warnedAt  time.Time     // when it was logged
}

// connectFailed returns the wait after a failed connection attempt and
// logs the failure. A permanent problem (Diagnose) waits at least
// MaxBackoff, doubling up to SlowBackoff, and is logged at error level
// with its reason and hint once until it changes (at debug level after).
// A transient one takes the normal backoff and is logged as a warning
// when it differs from the last one logged or retryLogEvery has passed.
func (c *Client) connectFailed(rl *retryLog, err error, attempt int, backoff *time.Duration) time.Duration {
	d := Diagnose(err)
	var wait time.Duration
	if d.Problem.Permanent() {
		rl.slow = min(max(2*rl.slow, c.cfg.MaxBackoff), c.cfg.SlowBackoff)
		wait = Jitter(rl.slow)
	} else {
		wait = Jitter(*backoff)
		*backoff = min(2**backoff, c.cfg.MaxBackoff)
	}
	attrs := []any{"attempt", attempt, "retry_in", wait.Round(time.Millisecond)}
	if d.Problem.Permanent() {
		if key := d.Problem.String() + ": " + d.Reason; key != rl.permanent {
			// The reason says what err does, in the user's terms.
			rl.permanent = key
			c.log.Error("connect failed", append([]any{"problem", d.Problem.String(), "reason", d.Reason, "hint", d.Hint}, attrs...)...)
			return wait
		}
		c.log.Debug("connect failed", append([]any{"problem", d.Problem.String(), "err", err}, attrs...)...)
		return wait
	}
	attrs = append([]any{"err", err}, attrs...)
	now := time.Now()
	if shape := errShape(err); shape != rl.shape || now.Sub(rl.warnedAt) >= retryLogEvery {
		rl.shape, rl.warnedAt = shape, now
		if d.Hint != "" {
			attrs = append(attrs, "hint", d.Hint)
		}
		c.log.Warn("connect failed", attrs...)
		return wait
	}
	c.log.Debug("connect failed", attrs...)
	return wait
}

// errShape is err's text without digits, so that the same failure with
// another source port or count compares equal.
func errShape(err error) string {
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return -1
		}
		return r
	}, err.Error())
}
