package tunnel_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"tlsvpn/certs"
	"tlsvpn/certs/certstest"
	"tlsvpn/tun"
	"tlsvpn/tunnel"
	"tlsvpn/tunnel/tunneltest"
)

// pki is the material of the diagnosis tests: the CA the client trusts,
// another one, and a clock both ends agree on (the bubble's starts in
// 2000, before the certificates are valid).
type pki struct {
	ca, other *certstest.CA
	now       time.Time
}

func newPKI(t *testing.T) pki {
	return pki{ca: certstest.NewCA(t), other: certstest.NewCA(t), now: time.Now()}
}

// server is a TLS config presenting cert and trusting p.ca for clients,
// speaking the tlsvpn ALPN unless alpn says otherwise.
func (p pki) server(cert tls.Certificate, alpn ...string) *tls.Config {
	cfg := certs.ServerConfigFrom(cert, p.ca.Pool())
	cfg.NextProtos = []string{tunnel.ALPN}
	if alpn != nil {
		cfg.NextProtos = alpn
	}
	cfg.Time = func() time.Time { return p.now }
	return cfg
}

// client is the client's TLS config: a certificate of ca named laptop,
// p.ca as its only root, checking serverName.
func (p pki) client(t *testing.T, ca *certstest.CA, serverName string) *tls.Config {
	cfg := certs.ClientConfigFrom(ca.ClientCert(t, "laptop"), p.ca.Pool(), serverName)
	cfg.Time = func() time.Time { return p.now }
	return cfg
}

// serveTLS plays a server with cfg: the TLS handshake, then, if it
// succeeded, reading the client's Hello and answering with close (a
// refusal) if close is not nil.
func serveTLS(cfg *tls.Config, close []byte) func(net.Conn) {
	return func(c net.Conn) {
		tc := tls.Server(c, cfg)
		if err := tc.Handshake(); err != nil {
			return
		}
		var hdr [tunnel.HeaderLen]byte
		if _, err := io.ReadFull(tc, hdr[:]); err != nil {
			return
		}
		h, err := tunnel.ParseHeader(hdr[:])
		if err != nil {
			return
		}
		if _, err := io.ReadFull(tc, make([]byte, h.Len)); err != nil {
			return
		}
		if close != nil {
			tc.Write(close)
		}
	}
}

// pipeDial is a Dial that connects the client to serve over an in-memory
// connection; serve runs on a goroutine of its own and its end is closed
// when it returns.
func pipeDial(serve func(net.Conn)) func(context.Context) (net.Conn, error) {
	return func(context.Context) (net.Conn, error) {
		a, b := certstest.Pipe()
		go func() {
			defer b.Close()
			serve(b)
		}()
		return a, nil
	}
}

var errRefused = &net.OpError{Op: "dial", Net: "tcp", Addr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 443},
	Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}

// proxyRefusal stands for transport.ProxyError: an error of the dial that
// says whether it is permanent.
type proxyRefusal struct {
	msg, hint string
	permanent bool
}

func (e *proxyRefusal) Error() string   { return e.msg }
func (e *proxyRefusal) Hint() string    { return e.hint }
func (e *proxyRefusal) Permanent() bool { return e.permanent }

func noSetup(context.Context, tunnel.Config) (tun.Device, error) {
	return nil, errors.New("the test never gets this far")
}

// TestDiagnose: each way a connection attempt fails is told apart, the
// permanent ones with a reason that names what is wrong and a hint.
func TestDiagnose(t *testing.T) {
	p := newPKI(t)
	good := p.ca.ServerCert(t, "vpn.example.com")
	named := p.ca.Issue(t, certs.IssueRequest{Name: "vpn.example.com", Server: true, IPs: []net.IP{net.IPv4(192, 0, 2, 1)}})
	expired := p.ca.Issue(t, certs.IssueRequest{Name: "vpn.example.com", Server: true, Days: 1, Now: p.now.AddDate(0, 0, -2)})
	revoked := p.ca.ClientCert(t, "laptop")
	revokedCfg := certs.ClientConfigFrom(revoked, p.ca.Pool(), "vpn.example.com")
	revokedCfg.Time = func() time.Time { return p.now }
	withCRL := certs.WithRevocation(p.server(good), p.ca.Revocation(t, revoked))

	tests := []struct {
		name       string
		tls        *tls.Config
		dial       func(context.Context) (net.Conn, error)
		want       tunnel.Problem
		wantReason []string // substrings of Reason
		wantHint   string   // substring of Hint
	}{
		{name: "server certificate from another CA", tls: p.client(t, p.ca, "vpn.example.com"),
			dial: pipeDial(serveTLS(p.server(p.other.ServerCert(t, "vpn.example.com")), nil)),
			want: tunnel.ProblemUnknownCA, wantReason: []string{"not signed by the CA in --ca"}, wantHint: "--ca"},
		{name: "name mismatch", tls: p.client(t, p.ca, "192.0.2.7"), dial: pipeDial(serveTLS(p.server(named), nil)),
			want: tunnel.ProblemServerName, wantReason: []string{"is for vpn.example.com, 192.0.2.1, not 192.0.2.7"}, wantHint: "--server-name vpn.example.com"},
		{name: "server certificate expired", tls: p.client(t, p.ca, "vpn.example.com"), dial: pipeDial(serveTLS(p.server(expired), nil)),
			want: tunnel.ProblemServerCert, wantReason: []string{"expired at"}, wantHint: "new certificate"},
		{name: "client certificate revoked", tls: revokedCfg, dial: pipeDial(serveTLS(withCRL, nil)),
			want: tunnel.ProblemClientRefused, wantReason: []string{"refused this client's certificate (bad certificate)"}, wantHint: "revoked"},
		{name: "client certificate from another CA", tls: p.client(t, p.other, "vpn.example.com"), dial: pipeDial(serveTLS(p.server(good), nil)),
			want: tunnel.ProblemClientRefused, wantReason: []string{"does not know the CA of this client's certificate"}, wantHint: "pki issue --client"},
		{name: "server with another ALPN", tls: p.client(t, p.ca, "vpn.example.com"), dial: pipeDial(serveTLS(p.server(good, "h2"), nil)),
			want: tunnel.ProblemNotTLSVPN, wantReason: []string{"does not speak " + tunnel.ALPN}, wantHint: "wrong port"},
		{name: "server without ALPN", tls: p.client(t, p.ca, "vpn.example.com"), dial: pipeDial(serveTLS(p.server(good, []string{}...), nil)),
			want: tunnel.ProblemNotTLSVPN, wantReason: []string{"negotiated no ALPN"}, wantHint: "wrong port"},
		{name: "not TLS", tls: p.client(t, p.ca, "vpn.example.com"),
			dial: pipeDial(func(c net.Conn) {
				c.Read(make([]byte, 4096)) // the ClientHello
				c.Write([]byte("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n"))
			}),
			want: tunnel.ProblemNotTLSVPN, wantReason: []string{"does not speak TLS"}, wantHint: "a web or SSH server"},
		{name: "closed during the TLS handshake", tls: p.client(t, p.ca, "vpn.example.com"),
			dial: pipeDial(func(c net.Conn) { c.Read(make([]byte, 4096)) }),
			want: tunnel.ProblemTransient, wantHint: "refusing new connections for now"},
		{name: "refused by policy", tls: p.client(t, p.ca, "vpn.example.com"),
			dial: pipeDial(serveTLS(p.server(good), tunnel.AppendFrame(nil, tunnel.TypeClose, true, tunnel.MarshalClose(tunnel.ClosePolicy, "too many sessions")))),
			want: tunnel.ProblemTransient, wantHint: "policy or limits"},
		{name: "connection refused", tls: p.client(t, p.ca, "vpn.example.com"),
			dial: func(context.Context) (net.Conn, error) { return nil, errRefused }, want: tunnel.ProblemTransient},
		{name: "proxy refused the password", tls: p.client(t, p.ca, "vpn.example.com"),
			dial: func(context.Context) (net.Conn, error) {
				return nil, &proxyRefusal{"proxy 198.18.0.9:3128 refused CONNECT to vpn.example.com:443: 407 Proxy Authentication Required", "check the password", true}
			},
			want: tunnel.ProblemRefusedOnTheWay, wantReason: []string{"proxy 198.18.0.9:3128 refused", "407"}, wantHint: "check the password"},
		{name: "proxy could not reach the server", tls: p.client(t, p.ca, "vpn.example.com"),
			dial: func(context.Context) (net.Conn, error) {
				return nil, &proxyRefusal{"proxy 198.18.0.9:3128 refused CONNECT to vpn.example.com:443: 503 Service Unavailable", "the proxy could not reach the server", false}
			},
			want: tunnel.ProblemTransient, wantHint: "could not reach"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			synctest.Test(t, func(t *testing.T) {
				c, nerr := tunnel.NewClient(tunnel.ClientConfig{Dial: tt.dial, TLS: tt.tls, Setup: noSetup})
				if nerr != nil {
					t.Fatal(nerr)
				}
				var tr tunnel.Transport
				tr, _, err = c.Connect(context.Background())
				if tr != nil {
					tr.Close()
				}
			})
			if err == nil {
				t.Fatal("Connect succeeded, want an error")
			}
			d := tunnel.Diagnose(err)
			if d.Problem != tt.want {
				t.Errorf("Diagnose(%v).Problem = %v, want %v", err, d.Problem, tt.want)
			}
			for _, w := range tt.wantReason {
				if !strings.Contains(d.Reason, w) {
					t.Errorf("Diagnose(%v).Reason = %q, want it to contain %q", err, d.Reason, w)
				}
			}
			if !strings.Contains(d.Hint, tt.wantHint) {
				t.Errorf("Diagnose(%v).Hint = %q, want it to contain %q", err, d.Hint, tt.wantHint)
			}
			if d.Problem.Permanent() && (d.Reason == "" || d.Hint == "") {
				t.Errorf("Diagnose(%v) = %+v: a permanent problem needs a reason and a hint", err, d)
			}
		})
	}
}

// TestDiagnoseNoNames: a server certificate with no subjectAltName (only
// a common name, which Go no longer matches) is named as such.
func TestDiagnoseNoNames(t *testing.T) {
	err := &tls.CertificateVerificationError{Err: x509.HostnameError{
		Certificate: &x509.Certificate{Subject: pkix.Name{CommonName: "server"}}, Host: "192.0.2.7"}}
	d := tunnel.Diagnose(fmt.Errorf("tls handshake: %w", err))
	if d.Problem != tunnel.ProblemServerName || !strings.Contains(d.Reason, `"server" holds no DNS name or IP address`) ||
		!strings.Contains(d.Hint, "pki issue --server --name NAME --ip ADDR") {
		t.Errorf("Diagnose(%v) = %+v, want a name mismatch saying the certificate holds no names", err, d)
	}
}

// attempt is one connection attempt of runAttempts: when, and the wait
// before it.
type attempt struct {
	at  time.Time
	gap time.Duration
}

// runAttempts runs a Client in a synctest bubble whose nth connection
// attempt is dial(n) (n from 1), until n attempts were made, and returns
// them with the client's log (debug level, text).
func runAttempts(t *testing.T, cfg tunnel.ClientConfig, n int, dial func(n int) (net.Conn, error)) ([]attempt, string) {
	t.Helper()
	var got []attempt
	log := new(tunneltest.SyncBuffer)
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cfg.Dial = func(ctx context.Context) (net.Conn, error) {
			a := attempt{at: time.Now()}
			if len(got) > 0 {
				a.gap = a.at.Sub(got[len(got)-1].at)
			}
			got = append(got, a)
			if len(got) > n {
				cancel()
				return nil, context.Canceled
			}
			return dial(len(got))
		}
		cfg.Setup = noSetup
		cfg.Logger = slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))
		c, err := tunnel.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Run(ctx); err != nil {
			t.Errorf("Run = %v, want nil after the context ended", err)
		}
	})
	return got[1:], log.String()
}

// logLines returns the lines of log at level with msg="connect failed".
func failedLines(log, level string) []string {
	var out []string
	for l := range strings.Lines(log) {
		if strings.Contains(l, "level="+level+" ") && strings.Contains(l, `msg="connect failed"`) {
			out = append(out, l)
		}
	}
	return out
}

// checkGaps checks that each wait was drawn (tunnel.Jitter) around the
// base the backoff should have reached by then.
func checkGaps(t *testing.T, got []attempt, bases []time.Duration) {
	t.Helper()
	for i, b := range bases {
		if g := got[i].gap; g < b/2 || g > b+b/2 {
			t.Errorf("wait before attempt %d = %v, want it drawn from [%v, %v]", i+2, g, b/2, b+b/2)
		}
	}
}

// TestPermanentProblemBacksOffSlowly: a client whose attempts fail for a
// permanent reason waits ever longer, from the normal backoff's ceiling
// to the slow interval, and logs the reason once until it changes.
func TestPermanentProblemBacksOffSlowly(t *testing.T) {
	p := newPKI(t)
	fromOther := p.server(p.other.ServerCert(t, "vpn.example.com"))
	wrongName := p.server(p.ca.ServerCert(t, "other.example.com"))
	cfg := tunnel.ClientConfig{TLS: p.client(t, p.ca, "vpn.example.com")} // default backoffs: 250ms, 30s, 5m
	const n = 9
	got, log := runAttempts(t, cfg, n, func(n int) (net.Conn, error) {
		srv := fromOther
		if n > 4 {
			srv = wrongName // the operator fixed the CA, but not the name
		}
		return pipeDial(serveTLS(srv, nil))(context.Background())
	})
	s := time.Second
	checkGaps(t, got, []time.Duration{30 * s, 60 * s, 120 * s, 240 * s, 300 * s, 300 * s, 300 * s, 300 * s})

	errs := failedLines(log, "ERROR")
	if len(errs) != 2 || !strings.Contains(errs[0], "not signed by the CA in --ca") || !strings.Contains(errs[1], "is for other.example.com, not vpn.example.com") {
		t.Errorf("error lines:\n%s\nwant two, the unknown CA and then the name mismatch, each with its reason", strings.Join(errs, ""))
	}
	for _, l := range errs {
		if !strings.Contains(l, "hint=") || !strings.Contains(l, "problem=") {
			t.Errorf("error line without the problem or hint: %s", l)
		}
	}
	if debug := failedLines(log, "DEBUG"); len(debug)+len(errs) != n {
		t.Errorf("%d error and %d debug lines for %d failed attempts, want one line each:\n%s", len(errs), len(debug), n, log)
	}
}

// TestTransientProblemBacksOffFast: a client whose attempts fail for a
// transient reason keeps the normal backoff (doubling from 250ms to 30s)
// and logs the repeats as warnings only every half minute or so.
func TestTransientProblemBacksOffFast(t *testing.T) {
	p := newPKI(t)
	cfg := tunnel.ClientConfig{TLS: p.client(t, p.ca, "vpn.example.com")}
	const n = 14
	got, log := runAttempts(t, cfg, n, func(int) (net.Conn, error) { return nil, errRefused })
	ms := time.Millisecond
	checkGaps(t, got, []time.Duration{250 * ms, 500 * ms, 1000 * ms, 2000 * ms, 4000 * ms, 8000 * ms, 16000 * ms,
		30000 * ms, 30000 * ms, 30000 * ms, 30000 * ms, 30000 * ms, 30000 * ms})

	warns, debug := failedLines(log, "WARN"), failedLines(log, "DEBUG")
	if len(warns)+len(debug) != n || len(failedLines(log, "ERROR")) != 0 {
		t.Fatalf("%d warning and %d debug lines for %d failed attempts, want one line each and no error:\n%s", len(warns), len(debug), n, log)
	}
	// About 4.5 minutes of retries: the first failure, then one about
	// every 30s.
	if len(warns) < 3 || len(warns) > 11 {
		t.Errorf("%d of %d failures logged as warnings, want the first and about one each 30s:\n%s", len(warns), n, log)
	}
	if !strings.Contains(warns[0], "connection refused") {
		t.Errorf("first warning %q does not say why", warns[0])
	}
}

// TestRunExplainsPermanentProblem: when MaxAttempts runs out on a
// permanent problem, Run's error is the reason and hint, wrapping the
// TLS error.
func TestRunExplainsPermanentProblem(t *testing.T) {
	p := newPKI(t)
	srv := p.server(p.other.ServerCert(t, "vpn.example.com"))
	var err error
	synctest.Test(t, func(t *testing.T) {
		c, nerr := tunnel.NewClient(tunnel.ClientConfig{Dial: pipeDial(serveTLS(srv, nil)), TLS: p.client(t, p.ca, "vpn.example.com"),
			Setup: noSetup, MaxAttempts: 1})
		if nerr != nil {
			t.Fatal(nerr)
		}
		err = c.Run(context.Background())
	})
	var ce *tunnel.ConnectError
	var ua x509.UnknownAuthorityError
	if !errors.As(err, &ce) || ce.Problem != tunnel.ProblemUnknownCA || !errors.As(err, &ua) ||
		!strings.HasPrefix(err.Error(), ce.Reason+"; "+ce.Hint) {
		t.Errorf("Run = %v, want a *ConnectError (unknown CA) saying the reason and hint, wrapping the x509 error", err)
	}
}
