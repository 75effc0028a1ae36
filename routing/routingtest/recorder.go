// Package routingtest provides Recorder, an in-memory routing.Manager for
// tests of code that configures routing (the tunnelc and tunneld wiring).
package routingtest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"tlsvpn/routing"
)

// Recorder is a fake routing.Manager that keeps the last desired Config
// and renders it as sorted text, one line per object:
//
//	addr 100.64.0.2/24 dev tunnelc0
//	mtu 1400 dev tunnelc0
//	route 10.0.0.0/8 dev tunnelc0
//
// Routes are rendered masked and duplicates collapse, as a real Manager
// would install them. The zero value is ready to use; a Recorder is safe
// for concurrent use.
type Recorder struct {
	mu     sync.Mutex
	cfg    routing.Config // guarded by mu; last successful Set, zero after Close
	sets   int            // guarded by mu; Set calls, failed ones included
	closed bool           // guarded by mu
	err    error          // guarded by mu; returned by the next Set
}

var _ routing.Manager = (*Recorder)(nil)

// Set records cfg as the current state and returns nil. It returns
// routing.ErrClosed after Close, an error wrapping routing.ErrInvalidConfig
// if cfg.Validate fails, and the error given to FailNextSet if any; in all
// these cases the recorded state is unchanged. Every call is counted.
func (r *Recorder) Set(ctx context.Context, cfg routing.Config) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sets++
	if r.closed {
		return routing.ErrClosed
	}
	if err := r.err; err != nil {
		r.err = nil
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg.Addresses = slices.Clone(cfg.Addresses)
	cfg.Routes = slices.Clone(cfg.Routes)
	r.cfg = cfg
	return nil
}

// Close clears the recorded state and marks the Recorder closed. It is
// idempotent and returns nil.
func (r *Recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	r.cfg = routing.Config{}
	return nil
}

// FailNextSet makes the next Set return err without recording its Config.
func (r *Recorder) FailNextSet(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
}

// Config returns a copy of the last successfully Set Config (the zero
// Config before the first Set and after Close).
func (r *Recorder) Config() routing.Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	cfg := r.cfg
	cfg.Addresses = slices.Clone(cfg.Addresses)
	cfg.Routes = slices.Clone(cfg.Routes)
	return cfg
}

// Sets returns the number of Set calls so far, failed ones included.
func (r *Recorder) Sets() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sets
}

// Closed reports whether Close was called.
func (r *Recorder) Closed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// Lines returns the recorded state as sorted, deduplicated lines (see
// Recorder); nil when nothing is configured.
func (r *Recorder) Lines() []string {
	r.mu.Lock()
	cfg := r.cfg.Normalized()
	r.mu.Unlock()
	if cfg.Interface == "" {
		return nil
	}
	var lines []string
	dev := cfg.Interface
	if cfg.MTU != 0 {
		lines = append(lines, fmt.Sprintf("mtu %d dev %s", cfg.MTU, dev))
	}
	for _, p := range cfg.Addresses {
		lines = append(lines, fmt.Sprintf("addr %v dev %s", p, dev))
	}
	for _, p := range cfg.Routes {
		lines = append(lines, fmt.Sprintf("route %v dev %s", p, dev))
	}
	slices.Sort(lines)
	return lines
}

// String returns Lines joined by newlines, with a trailing newline unless
// empty, ready to compare with a want string in table tests.
func (r *Recorder) String() string {
	lines := r.Lines()
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\n") + "\n"
}
