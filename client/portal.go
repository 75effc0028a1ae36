package client

// Captive portals: when the server cannot be reached, tunnelc probes an
// HTTP URL that answers 204 on an open network, through the physical
// interface. Any other answer is a portal, and with the kill switch on it
// opens, for a bounded time, only what a login needs (routing's
// FirewallConfig.PortalIf): DNS and TCP 80/443 out of that interface.
//
// The policy:
//   - a probe follows a failed connection attempt (the tunnel not up),
//     at most one per portalProbeGap;
//   - a portal opens the hole for Config.PortalWindow; it closes when a
//     session comes up, when a later probe answers 204 (the login is
//     done), or when the window ends, whichever comes first;
//   - after a window ended, only a new probe that still finds the portal
//     opens it again, and at most portalMaxWindows windows in a row: the
//     count starts again when the tunnel has come up. Past that, the log
//     says to restart tunnelc, which is the user's explicit "again".

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"tlsvpn/control"
	"tlsvpn/internal/service"
	"tlsvpn/routing"
	"tlsvpn/tunnel"
)

const (
	// DefaultPortalProbe is the URL probed for a captive portal when
	// Config.PortalProbe is empty: a well-known endpoint that answers
	// 204 No Content with an empty body on an open network.
	DefaultPortalProbe = "http://connectivitycheck.gstatic.com/generate_204"
	// DefaultPortalWindow is how long the kill switch's portal hole stays
	// open when Config.PortalWindow is 0.
	DefaultPortalWindow = 5 * time.Minute

	// portalProbeMark is the SO_MARK of the probe's sockets, which the
	// kill switch lets out to DNS and TCP 80/443 (FirewallConfig.ProbeMark):
	// "tvp0".
	portalProbeMark uint32 = 0x74767030
	// portalProbeTimeout bounds one probe, DNS included.
	portalProbeTimeout = 5 * time.Second
	// portalProbeGap is the least time between two probes.
	portalProbeGap = 10 * time.Second
	// portalMaxWindows bounds the windows opened in a row without the
	// tunnel coming up.
	portalMaxWindows = 3
)

// CheckPortalProbe checks a --portal-probe URL: plain HTTP, as a portal
// can only answer for a host it intercepts without a certificate for it.
// The errors do not name the flag.
func CheckPortalProbe(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return err
	case u.Scheme != "http":
		return fmt.Errorf("want an http:// URL (a portal cannot answer for an https:// one), e.g. %s", DefaultPortalProbe)
	case u.Host == "":
		return errors.New("no host")
	}
	return nil
}

// probeResult is what a probe found.
type probeResult struct {
	Portal bool   // the answer was not 204: a captive portal
	URL    string // the portal's page: the redirect's Location, or the probe URL
	Status int    // the HTTP status of the answer
}

// classifyProbe reads the answer to a probe of probeURL: 204 is an open
// network; anything else (a redirect to a login page, a 200 page, 511
// Network Authentication Required) is a portal, whose page is the
// redirect's Location (resolved against probeURL) or else probeURL.
func classifyProbe(probeURL *url.URL, status int, location string) probeResult {
	r := probeResult{Status: status, URL: probeURL.String()}
	if status == http.StatusNoContent {
		return r
	}
	r.Portal = true
	if location != "" && status >= 300 && status < 400 {
		if l, err := probeURL.Parse(location); err == nil {
			r.URL = l.String()
		}
	}
	return r
}

// probePortal fetches probeURL with hc, which must not follow redirects,
// and classifies the answer. Errors (no route, a timeout, DNS) say
// nothing about a portal.
func probePortal(ctx context.Context, hc *http.Client, probeURL string) (probeResult, error) {
	u, err := url.Parse(probeURL)
	if err != nil {
		return probeResult{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, portalProbeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, probeURL, nil)
	if err != nil {
		return probeResult{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return probeResult{}, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return classifyProbe(u, resp.StatusCode, resp.Header.Get("Location")), nil
}

// noRedirects makes an http.Client return a redirect as the answer.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// portalWatch probes for a captive portal after failed connection
// attempts and opens and closes the kill switch's hole. attempt and
// connected are called by the client (any goroutine); run does the work.
type portalWatch struct {
	// Immutable after newPortalWatch, but for the funcs, which the
	// client sets before it starts run and makes its first attempt.
	window time.Duration
	log    *slog.Logger
	url    string // the probe URL
	// probe probes for a portal through the interface ifname ("": where
	// the routes lead).
	probe func(ctx context.Context, ifname string) (probeResult, error)
	// egress returns the physical interface the tunnel runs over, "" when
	// it is not known.
	egress func() (string, error)
	// setHole opens the hole on ifname, or closes it with ""; nil without
	// the kill switch (nothing to open).
	setHole func(ctx context.Context, ifname string) error
	// isUp reports whether a session is up; fullRoutes whether the full
	// tunnel's routes point into the TUN (they survive a lost session).
	isUp, fullRoutes func() bool
	// setAside takes the full tunnel's routes and DNS settings off until
	// the next session, so that a browser reaches the portal.
	setAside func(ctx context.Context) error

	attempts  atomic.Int64  // connection attempts since the last session came up
	failed    chan struct{} // an attempt failed (cap 1)
	connected chan struct{} // a session came up (cap 1)

	mu sync.Mutex
	st *control.PortalStatus // guarded by mu; nil: no portal known
}

func newPortalWatch(w *portalWatch) *portalWatch {
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	if w.window <= 0 {
		w.window = DefaultPortalWindow
	}
	w.failed, w.connected = make(chan struct{}, 1), make(chan struct{}, 1)
	return w
}

// attempt records a connection attempt; the second in a row without a
// session in between means the first failed, and asks for a probe. An
// attempt while a session is up (a rotation) is not one. A nil watch does
// nothing.
func (p *portalWatch) attempt() {
	if p == nil || (p.isUp != nil && p.isUp()) {
		return
	}
	if p.attempts.Add(1) >= 2 {
		notify(p.failed)
	}
}

// sessionUp records that a session came up. A nil watch does nothing.
func (p *portalWatch) sessionUp() {
	if p == nil {
		return
	}
	p.attempts.Store(0)
	notify(p.connected)
}

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// status returns the portal as 'tunnelc status' shows it; nil when none is
// known (or the watch is nil).
func (p *portalWatch) status() *control.PortalStatus {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.st == nil {
		return nil
	}
	st := *p.st
	return &st
}

func (p *portalWatch) setStatus(st *control.PortalStatus) {
	p.mu.Lock()
	p.st = st
	p.mu.Unlock()
}

// run probes and opens and closes the hole until ctx ends; it leaves the
// hole as it is then (the firewall goes with the client).
func (p *portalWatch) run(ctx context.Context) {
	var (
		lastProbe time.Time
		windows   int    // opened in a row without a session
		holeIf    string // where the hole is open; "" closed
		ends      <-chan time.Time
		endTimer  *time.Timer
		warned    bool // that the window limit is reached
	)
	closeHole := func(why string) {
		if endTimer != nil {
			endTimer.Stop()
			endTimer, ends = nil, nil
		}
		if holeIf == "" {
			return
		}
		if err := p.setHole(ctx, ""); err != nil {
			p.log.Error("closing the captive portal hole in the kill switch", "err", err)
			return
		}
		p.log.Warn(why+"; DNS and TCP 80/443 closed again", "ifname", holeIf)
		holeIf = ""
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.connected:
			windows, warned = 0, false
			closeHole("tunnel up: captive portal hole closed")
			p.setStatus(nil)
		case <-ends:
			endTimer, ends = nil, nil
			why := "captive portal window ended"
			if windows < portalMaxWindows {
				why += " (it opens again if a later probe still finds the portal)"
			} else {
				why += " for the last time (restart tunnelc to open it again)"
			}
			closeHole(why)
			if st := p.status(); st != nil {
				st.OpenUntil = time.Time{}
				p.setStatus(st)
			}
		case <-p.failed:
			if !lastProbe.IsZero() && time.Since(lastProbe) < portalProbeGap {
				continue
			}
			lastProbe = time.Now()
			if p.isUp != nil && p.isUp() {
				continue
			}
			ifname, err := p.egress()
			if err != nil {
				p.log.Debug("captive portal probe: no physical interface", "err", err)
				continue
			}
			res, err := p.probe(ctx, ifname)
			if err != nil {
				p.log.Debug("captive portal probe failed", "ifname", ifname, "err", err)
				continue
			}
			if !res.Portal {
				if p.status() != nil {
					closeHole("captive portal gone (the probe answers 204)")
					p.setStatus(nil)
				}
				continue
			}
			// A portal's redirect often carries a fresh session ID each
			// time: the latest URL is shown, the rest is kept.
			st := p.status()
			fresh := st == nil
			if fresh {
				st = &control.PortalStatus{Interface: ifname, Detected: time.Now()}
			}
			st.URL = res.URL
			p.setStatus(st)
			switch {
			case p.setHole == nil:
				switch {
				case !fresh:
				case p.fullRoutes != nil && p.fullRoutes():
					// Without the kill switch, these routes are all that
					// keeps traffic in the tunnel: they stay.
					p.log.Warn("captive portal detected at "+res.URL+"; the full tunnel's routes lead the browser into the tunnel: stop tunnelc, log in, and start it again", "portal_url", res.URL, "http_status", res.Status)
				default:
					p.log.Warn("captive portal detected at "+res.URL+"; log in with a browser, then the tunnel connects", "portal_url", res.URL, "http_status", res.Status)
				}
			case holeIf != "":
				// Open already.
			case windows >= portalMaxWindows:
				if !warned {
					p.log.Warn(fmt.Sprintf("still behind the captive portal at %s, but its hole was open %d times already; restart tunnelc to open it again", res.URL, windows), "portal_url", res.URL)
					warned = true
				}
			default:
				if err := p.setHole(ctx, ifname); err != nil {
					p.log.Error("opening the captive portal hole in the kill switch", "ifname", ifname, "err", err)
					continue
				}
				holeIf, windows = ifname, windows+1
				endTimer = time.NewTimer(p.window)
				ends = endTimer.C
				st.Interface, st.OpenUntil = ifname, time.Now().Add(p.window)
				p.setStatus(st)
				p.log.Warn(fmt.Sprintf("captive portal detected at %s; opening DNS and TCP 80/443 on %s for %v so you can log in", res.URL, ifname, p.window),
					"portal_url", res.URL, "http_status", res.Status, "ifname", ifname, "until", st.OpenUntil.Format(time.RFC3339))
				if p.fullRoutes != nil && p.fullRoutes() {
					p.moveFullTunnelAside(ctx)
				}
			}
		}
	}
}

// moveFullTunnelAside takes the routes and DNS settings of the last
// session off, which would send the browser into the tunnel while it is
// down: the laptop joined the portal's network with the tunnel up.
func (p *portalWatch) moveFullTunnelAside(ctx context.Context) {
	if p.setAside == nil {
		return
	}
	if err := p.setAside(ctx); err != nil {
		p.log.Error("the full tunnel's routes still send the browser into the tunnel: restart tunnelc (its routes go with it) to log in to the portal", "err", err)
		return
	}
	p.log.Warn("the full tunnel's routes and DNS settings are off until the tunnel is back, so that the browser reaches the portal (the kill switch still drops all but DNS and TCP 80/443)")
}

// newClientPortal returns the portal watch of a Client with cfg, nil with
// NoPortal. Run completes it (firewall, start).
func newClientPortal(cfg Config, log *slog.Logger) *portalWatch {
	if cfg.NoPortal {
		return nil
	}
	return newPortalWatch(&portalWatch{window: cfg.PortalWindow, log: log,
		url: cmp.Or(cfg.PortalProbe, DefaultPortalProbe)})
}

// firewall adds to the kill switch's fc the exception for the probe, and
// makes the hole fc plus PortalIf, set with fw. Without the kill switch,
// or with a nil watch, fc is returned as it is.
func (p *portalWatch) firewall(fc routing.FirewallConfig, fw routing.Firewall) routing.FirewallConfig {
	if p == nil || !fc.KillSwitch {
		return fc
	}
	fc.ProbeMark = portalProbeMark
	p.setHole = func(ctx context.Context, ifname string) error {
		h := fc
		h.PortalIf = ifname
		return fw.Set(ctx, h)
	}
	return fc
}

// startPortal starts the portal watch of Run on wg, until ctx ends: tc is
// the tunnel client, server the address of the server in use (invalid
// when not known: the probe then follows the system's routes), setAside
// what takes the full tunnel's routes and DNS settings off.
func (c *Client) startPortal(ctx context.Context, wg *sync.WaitGroup, tc *tunnel.Client, server func() netip.Addr, setAside func(context.Context) error) {
	p := c.portal
	if p == nil {
		return
	}
	p.probe = probeFunc(p.url, func() []netip.Addr {
		c.view.mu.Lock()
		defer c.view.mu.Unlock()
		return slices.Clone(c.view.dns)
	})
	if p.setHole != nil {
		// Only with the kill switch: without it, the routes are what
		// keeps the rest of the traffic in the (dead) tunnel.
		p.setAside = setAside
	}
	p.isUp = func() bool { return tc.Status().State == tunnel.StateUp }
	p.fullRoutes = func() bool {
		c.view.mu.Lock()
		defer c.view.mu.Unlock()
		return slices.ContainsFunc(c.view.routes, isFullTunnelHalf)
	}
	p.egress = func() (string, error) {
		a := server()
		if !a.IsValid() {
			return "", nil
		}
		return routing.EgressInterface(a, c.cfg.TUN)
	}
	wg.Go(func() { p.run(ctx) })
}

// checkPortal checks the portal settings of cfg (New's usage errors).
func checkPortal(cfg Config) error {
	if cfg.PortalProbe != "" {
		if err := CheckPortalProbe(cfg.PortalProbe); err != nil {
			return service.Usagef("--portal-probe %q: %v", cfg.PortalProbe, err)
		}
	}
	if cfg.PortalWindow < 0 {
		return service.Usagef("--portal-window %v: want a positive duration such as 5m", cfg.PortalWindow)
	}
	return nil
}

// isFullTunnelHalf reports whether r is one of the routes that stand for a
// default route in a full tunnel (fullTunnelRoutes).
func isFullTunnelHalf(r netip.Prefix) bool {
	return r.Bits() == 1 && (r.Addr() == netip.IPv4Unspecified() || r.Addr() == netip.MustParseAddr("128.0.0.0") ||
		r.Addr() == netip.IPv6Unspecified() || r.Addr() == netip.MustParseAddr("8000::"))
}

// withoutFullTunnel returns rc without the full tunnel's routes.
func withoutFullTunnel(rc routing.Config) routing.Config {
	rc.Routes = slices.DeleteFunc(slices.Clone(rc.Routes), isFullTunnelHalf)
	return rc
}
