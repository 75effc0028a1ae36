package client

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"tlsvpn/routing"
	"tlsvpn/routing/routingtest"
)

func TestClassifyProbe(t *testing.T) {
	probe, _ := url.Parse("http://probe.example/generate_204")
	tests := []struct {
		name     string
		status   int
		location string
		want     probeResult
	}{
		{"open network", 204, "", probeResult{Status: 204, URL: probe.String()}},
		{"redirect", 302, "http://portal.example/login?x=1", probeResult{Portal: true, Status: 302, URL: "http://portal.example/login?x=1"}},
		{"relative redirect", 307, "/login", probeResult{Portal: true, Status: 307, URL: "http://probe.example/login"}},
		{"redirect without location", 302, "", probeResult{Portal: true, Status: 302, URL: probe.String()}},
		{"page", 200, "", probeResult{Portal: true, Status: 200, URL: probe.String()}},
		{"network authentication required", 511, "", probeResult{Portal: true, Status: 511, URL: probe.String()}},
		{"location on a page is not a redirect", 200, "http://elsewhere.example/", probeResult{Portal: true, Status: 200, URL: probe.String()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := classifyProbe(probe, tt.status, tt.location); got != tt.want {
				t.Errorf("classifyProbe(%d, %q) = %+v, want %+v", tt.status, tt.location, got, tt.want)
			}
		})
	}
}

// TestProbePortal probes a local HTTP server the way the probe client
// does (no redirects followed): a redirect to a page that answers 204
// must still be a portal.
func TestProbePortal(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/open", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/open", http.StatusFound) })
	mux.HandleFunc("/page", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>Welcome, please log in</html>")) })
	srv := httptest.NewServer(mux)
	defer srv.Close()
	hc := &http.Client{CheckRedirect: noRedirects}
	for _, tt := range []struct {
		path   string
		portal bool
		url    string
	}{
		{"/open", false, srv.URL + "/open"},
		{"/redirect", true, srv.URL + "/open"},
		{"/page", true, srv.URL + "/page"},
	} {
		got, err := probePortal(t.Context(), hc, srv.URL+tt.path)
		if err != nil {
			t.Fatalf("probePortal(%s): %v", tt.path, err)
		}
		if got.Portal != tt.portal || got.URL != tt.url {
			t.Errorf("probePortal(%s) = %+v, want portal %v at %s", tt.path, got, tt.portal, tt.url)
		}
	}
	srv.Close()
	if got, err := probePortal(t.Context(), hc, srv.URL+"/open"); err == nil {
		t.Errorf("probePortal(closed server) = %+v, want an error (says nothing about a portal)", got)
	}
}

func TestCheckPortalProbe(t *testing.T) {
	for s, ok := range map[string]bool{
		"http://connectivitycheck.gstatic.com/generate_204": true,
		"http://198.18.0.1:8080/204":                        true,
		"https://example.com/generate_204":                  false,
		"http:///generate_204":                              false,
		"example.com/generate_204":                          false,
	} {
		if err := CheckPortalProbe(s); (err == nil) != ok {
			t.Errorf("CheckPortalProbe(%q) = %v, want ok %v", s, err, ok)
		}
	}
	if _, err := New(Config{Server: "192.0.2.1:443", PortalProbe: "https://example.com/"}, nil); err == nil || !strings.Contains(err.Error(), "--portal-probe") {
		t.Errorf("New with an https probe: %v, want an error naming --portal-probe", err)
	}
}

// fakePortal is a network as the probe sees it, and the client's state.
type fakePortal struct {
	mu     sync.Mutex
	result probeResult
	probes int
	up     bool
}

func (f *fakePortal) set(r probeResult) { f.mu.Lock(); f.result = r; f.mu.Unlock() }
func (f *fakePortal) count() int        { f.mu.Lock(); defer f.mu.Unlock(); return f.probes }

// newFakeWatch returns a watch over f with the kill switch on, its
// firewall recorded in fw, and its log in buf.
func newFakeWatch(f *fakePortal, fw *routingtest.FirewallRecorder, window time.Duration, buf *bytes.Buffer) *portalWatch {
	p := newPortalWatch(&portalWatch{
		window: window,
		log:    slog.New(slog.NewTextHandler(buf, nil)),
		probe: func(ctx context.Context, ifname string) (probeResult, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.probes++
			return f.result, nil
		},
		egress: func() (string, error) { return "wlan0", nil },
		isUp:   func() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.up },
	})
	if fw != nil {
		base := routing.FirewallConfig{TunnelIf: "tunnelc0", KillSwitch: true}
		fw.Set(context.Background(), p.firewall(base, fw))
	}
	return p
}

const holeLine = "kill-switch portal-hole dev wlan0 udp 53, tcp 53 80 443"

func hasLine(fw *routingtest.FirewallRecorder, line string) bool {
	return strings.Contains(fw.String(), line+"\n")
}

// fail makes a failed attempt followed by the next one, as tunnel.Client
// does, and lets the watch act on it.
func (p *portalWatch) fail() {
	p.attempt()
	p.attempt()
	synctest.Wait()
}

// TestPortalWindow follows the window policy with a fake probe and
// firewall, in fake time: the hole opens on a portal, closes at the end
// of the window, reopens only after a new probe, at most three times in a
// row, and closes when the tunnel comes up or the portal is gone.
func TestPortalWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var f fakePortal
		var fw routingtest.FirewallRecorder
		var logs bytes.Buffer
		const window = time.Minute
		p := newFakeWatch(&f, &fw, window, &logs)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go p.run(ctx)

		if !hasLine(&fw, "kill-switch probe-mark 0x74767030 not-via tunnelc0 udp 53, tcp 53 80 443") {
			t.Fatalf("kill switch without the probe's exception:\n%s", &fw)
		}
		p.attempt()
		synctest.Wait()
		if f.count() != 0 {
			t.Fatalf("probed after the first attempt, before any failed")
		}

		// No portal: nothing opens, nothing shows.
		f.set(probeResult{Status: 204, URL: "http://probe/generate_204"})
		p.fail()
		if f.count() != 1 || hasLine(&fw, holeLine) || p.status() != nil {
			t.Fatalf("open network: probes %d, status %+v, firewall:\n%s", f.count(), p.status(), &fw)
		}

		portal := probeResult{Portal: true, Status: 302, URL: "http://portal/login"}
		f.set(portal)
		p.fail() // within the probe gap: no probe
		if f.count() != 1 {
			t.Fatalf("probed %d times within %v, want 1", f.count(), portalProbeGap)
		}
		for i := 1; i <= portalMaxWindows; i++ {
			time.Sleep(portalProbeGap)
			start := time.Now()
			p.fail()
			st := p.status()
			if !hasLine(&fw, holeLine) || st == nil || st.URL != "http://portal/login" || st.Interface != "wlan0" || !st.OpenUntil.Equal(start.Add(window)) {
				t.Fatalf("window %d: status %+v, firewall:\n%s", i, st, &fw)
			}
			time.Sleep(window / 2)
			f.set(probeResult{Portal: true, Status: 302, URL: "http://portal/login?session=2"})
			p.fail() // probes again: still open, the end does not move
			if st := p.status(); !st.OpenUntil.Equal(start.Add(window)) || st.URL != "http://portal/login?session=2" {
				t.Fatalf("window %d: after a probe in the window: %+v, want the new URL and the end unchanged", i, st)
			}
			f.set(portal)
			time.Sleep(window / 2)
			synctest.Wait()
			if hasLine(&fw, holeLine) {
				t.Fatalf("window %d ended, hole still open:\n%s", i, &fw)
			}
			if st := p.status(); st == nil || !st.OpenUntil.IsZero() {
				t.Fatalf("window %d ended: status %+v, want the portal with the hole closed", i, st)
			}
		}
		time.Sleep(portalProbeGap)
		p.fail()
		if hasLine(&fw, holeLine) {
			t.Fatalf("opened a window beyond %d in a row", portalMaxWindows)
		}
		if !strings.Contains(logs.String(), "restart tunnelc to open it again") {
			t.Errorf("log does not say how to open it again:\n%s", &logs)
		}

		// The tunnel comes up: the portal is forgotten, the count starts again.
		p.sessionUp()
		synctest.Wait()
		if p.status() != nil {
			t.Fatalf("tunnel up: status still shows %+v", p.status())
		}
		time.Sleep(portalProbeGap)
		p.fail()
		if !hasLine(&fw, holeLine) {
			t.Fatalf("after the tunnel was up, a portal does not open the hole:\n%s", &fw)
		}
		// Logged in elsewhere: the probe answers 204; the hole closes.
		f.set(probeResult{Status: 204})
		time.Sleep(portalProbeGap)
		p.fail()
		if hasLine(&fw, holeLine) || p.status() != nil {
			t.Fatalf("portal gone: status %+v, firewall:\n%s", p.status(), &fw)
		}
		// And again, closed this time by the tunnel coming up.
		f.set(portal)
		time.Sleep(portalProbeGap)
		p.fail()
		if !hasLine(&fw, holeLine) {
			t.Fatalf("portal back: hole not open:\n%s", &fw)
		}
		p.sessionUp()
		synctest.Wait()
		if hasLine(&fw, holeLine) || p.status() != nil {
			t.Fatalf("tunnel up: status %+v, firewall:\n%s", p.status(), &fw)
		}
		for _, want := range []string{
			"captive portal detected at http://portal/login; opening DNS and TCP 80/443 on wlan0 for 1m0s so you can log in",
			"tunnel up: captive portal hole closed",
			"captive portal gone",
		} {
			if !strings.Contains(logs.String(), want) {
				t.Errorf("log lacks %q:\n%s", want, &logs)
			}
		}
	})
}

// TestPortalWhileUp: attempts while a session is up are rotations, not
// failures: no probe, no hole.
func TestPortalWhileUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := fakePortal{up: true, result: probeResult{Portal: true, URL: "http://portal/"}}
		var fw routingtest.FirewallRecorder
		p := newFakeWatch(&f, &fw, time.Minute, new(bytes.Buffer))
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go p.run(ctx)
		for range 5 {
			p.fail()
		}
		if f.count() != 0 || hasLine(&fw, holeLine) {
			t.Errorf("while up: %d probes, firewall:\n%s", f.count(), &fw)
		}
	})
}

// TestPortalWithoutKillSwitch: the portal shows in status and the log,
// and there is no firewall to open.
func TestPortalWithoutKillSwitch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := fakePortal{result: probeResult{Portal: true, Status: 200, URL: "http://probe/generate_204"}}
		var logs bytes.Buffer
		p := newFakeWatch(&f, nil, time.Minute, &logs)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go p.run(ctx)
		p.fail()
		st := p.status()
		if st == nil || st.URL != "http://probe/generate_204" || !st.OpenUntil.IsZero() {
			t.Errorf("status %+v, want the portal with no hole", st)
		}
		if !strings.Contains(logs.String(), "log in with a browser") {
			t.Errorf("log:\n%s", &logs)
		}

		// A full tunnel's routes from before stay without the kill switch.
		logs.Reset()
		p.setStatus(nil)
		p.fullRoutes = func() bool { return true }
		time.Sleep(portalProbeGap)
		p.fail()
		if !strings.Contains(logs.String(), "stop tunnelc, log in, and start it again") {
			t.Errorf("log with the full tunnel's routes in place:\n%s", &logs)
		}
	})
}

func TestNoPortal(t *testing.T) {
	var p *portalWatch = newClientPortal(Config{NoPortal: true}, nil)
	if p != nil {
		t.Fatal("newClientPortal(NoPortal) is not nil")
	}
	p.attempt()
	p.sessionUp()
	fc := routing.FirewallConfig{TunnelIf: "tunnelc0", KillSwitch: true}
	if got := p.firewall(fc, nil); got.ProbeMark != 0 || got.PortalIf != "" {
		t.Errorf("--no-portal kill switch = %+v, want no exception", got)
	}
	if p.status() != nil {
		t.Error("--no-portal status shows a portal")
	}
}

// TestPortalSetsFullTunnelAside: a portal found while the last session's
// full tunnel routes are in place takes them off (once) when the hole
// opens, so that the browser reaches the portal.
func TestPortalSetsFullTunnelAside(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := fakePortal{result: probeResult{Portal: true, Status: 302, URL: "http://portal/"}}
		var fw routingtest.FirewallRecorder
		var logs bytes.Buffer
		p := newFakeWatch(&f, &fw, time.Minute, &logs)
		full, asides := true, 0
		p.fullRoutes = func() bool { return full }
		p.setAside = func(context.Context) error { asides++; full = false; return nil }
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go p.run(ctx)
		p.fail()
		if asides != 1 || !hasLine(&fw, holeLine) {
			t.Fatalf("hole open with full tunnel routes: set aside %d times, firewall:\n%s", asides, &fw)
		}
		time.Sleep(time.Minute + portalProbeGap)
		p.fail()
		if asides != 1 {
			t.Errorf("set aside %d times, want once", asides)
		}
		if !strings.Contains(logs.String(), "routes and DNS settings are off until the tunnel is back") {
			t.Errorf("log:\n%s", &logs)
		}
	})
}

func TestWithoutFullTunnel(t *testing.T) {
	rc := routing.Config{Interface: "tunnelc0", Routes: pfxs("198.18.10.0/24", "0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1", "fd00:1::/64")}
	got := withoutFullTunnel(rc)
	if fmt.Sprint(got.Routes) != "[198.18.10.0/24 fd00:1::/64]" || len(rc.Routes) != 6 {
		t.Errorf("withoutFullTunnel(%v) = %v (and changed the input to %v)", pfxs("198.18.10.0/24", "0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1", "fd00:1::/64"), got.Routes, rc.Routes)
	}
}

func pfxs(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}
