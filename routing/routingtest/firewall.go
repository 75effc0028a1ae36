package routingtest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"tlsvpn/routing"
)

// FirewallRecorder is a fake routing.Firewall that keeps the last desired
// FirewallConfig and renders it as sorted text, one line per rule:
//
//	clamp-mss dev tunneld0
//	isolate-clients dev tunneld0
//	kill-switch allow tcp 198.18.0.1:443
//	kill-switch dev tunnelc0
//	kill-switch portal-hole dev wlan0 udp 53, tcp 53 80 443
//	kill-switch probe-mark 0x74767030 not-via tunnelc0 udp 53, tcp 53 80 443
//	masquerade 100.64.0.0/24 not-via tunneld0
//	reach-clients 100.64.0.5/32
//
// The config is normalized first, as a real Firewall would install it.
// The zero value is ready to use; it is safe for concurrent use.
type FirewallRecorder struct {
	mu     sync.Mutex
	cfg    routing.FirewallConfig // guarded by mu
	sets   int                    // guarded by mu
	closed bool                   // guarded by mu
}

var _ routing.Firewall = (*FirewallRecorder)(nil)

// Set records cfg. It returns routing.ErrClosed after Close and the
// validation error of an invalid cfg, leaving the state unchanged.
func (f *FirewallRecorder) Set(ctx context.Context, cfg routing.FirewallConfig) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sets++
	if f.closed {
		return routing.ErrClosed
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	f.cfg = cfg.Normalized()
	return nil
}

// IsolationDrops returns 0 (nothing is forwarded here).
func (f *FirewallRecorder) IsolationDrops() (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, routing.ErrClosed
	}
	return 0, nil
}

// Close clears the state; it is idempotent.
func (f *FirewallRecorder) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed, f.cfg = true, routing.FirewallConfig{}
	return nil
}

// Sets returns the number of Set calls so far.
func (f *FirewallRecorder) Sets() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sets
}

// Lines returns the recorded rules as sorted lines; nil when there are
// none.
func (f *FirewallRecorder) Lines() []string {
	f.mu.Lock()
	c := f.cfg
	f.mu.Unlock()
	return FirewallLines(c)
}

// String returns Lines joined by newlines, with a trailing newline unless
// empty.
func (f *FirewallRecorder) String() string { return joinLines(f.Lines()) }

// FirewallLines renders a FirewallConfig as FirewallRecorder does.
func FirewallLines(c routing.FirewallConfig) []string {
	c = c.Normalized()
	var lines []string
	for _, p := range c.Masquerade {
		if c.TunnelIf == "" {
			lines = append(lines, fmt.Sprintf("masquerade %v", p))
		} else {
			lines = append(lines, fmt.Sprintf("masquerade %v not-via %s", p, c.TunnelIf))
		}
	}
	if c.ClampMSS {
		lines = append(lines, "clamp-mss dev "+c.TunnelIf)
	}
	if c.KillSwitch {
		lines = append(lines, "kill-switch dev "+c.TunnelIf)
		for _, ap := range c.ServerEndpoints {
			lines = append(lines, fmt.Sprintf("kill-switch allow tcp %v", ap))
		}
		if c.PortalIf != "" {
			lines = append(lines, "kill-switch portal-hole dev "+c.PortalIf+" udp 53, tcp 53 80 443")
		}
		if c.ProbeMark != 0 {
			lines = append(lines, fmt.Sprintf("kill-switch probe-mark %#x not-via %s udp 53, tcp 53 80 443", c.ProbeMark, c.TunnelIf))
		}
	}
	if c.IsolateClients {
		lines = append(lines, "isolate-clients dev "+c.TunnelIf)
		for _, p := range c.ReachClients {
			lines = append(lines, fmt.Sprintf("reach-clients %v", p))
		}
	}
	slices.Sort(lines)
	return lines
}

func joinLines(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\n") + "\n"
}
