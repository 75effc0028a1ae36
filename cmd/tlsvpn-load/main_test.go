package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"tlsvpn/certs/certstest"
	"tlsvpn/tunnel"
	"tlsvpn/tunnel/tunneltest"
)

func TestParseSources(t *testing.T) {
	for _, tc := range []struct {
		in          []string
		n           int
		first, last string
		bad         bool
	}{
		{in: []string{"198.18.0.2"}, n: 1, first: "198.18.0.2", last: "198.18.0.2"},
		{in: []string{"198.19.0.1, 198.19.0.2", "198.19.0.3"}, n: 3, first: "198.19.0.1", last: "198.19.0.3"},
		{in: []string{"198.19.0.0/20"}, n: 4094, first: "198.19.0.1", last: "198.19.15.254"},
		{in: []string{"198.19.0.0/16:300"}, n: 300, first: "198.19.0.1", last: "198.19.1.44"},
		{in: []string{"198.19.0.4/31"}, n: 2, first: "198.19.0.4", last: "198.19.0.5"},
		{in: []string{"2001:db8::/120:3"}, n: 3, first: "2001:db8::", last: "2001:db8::2"},
		{in: []string{"198.19.0.0/30:3"}, bad: true}, // only 2 hosts
		{in: []string{"198.0.0.0/8"}, bad: true},     // more than maxSources
		{in: []string{"198.19.0.0/16:0"}, bad: true},
		{in: []string{"not-an-address"}, bad: true},
	} {
		got, err := parseSources(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("parseSources(%q) = %d addresses, want an error", tc.in, len(got))
			}
			continue
		}
		if err != nil {
			t.Errorf("parseSources(%q): %v", tc.in, err)
			continue
		}
		if len(got) != tc.n || got[0].String() != tc.first || got[len(got)-1].String() != tc.last {
			t.Errorf("parseSources(%q) = %d addresses %v..%v, want %d %s..%s", tc.in, len(got), got[0], got[len(got)-1], tc.n, tc.first, tc.last)
		}
	}
}

func TestClassify(t *testing.T) {
	alert := &net.OpError{Op: "remote error", Err: errors.New("tls: unknown certificate authority")}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&stageError{"tls", io.EOF}, "tls: EOF (server closed the connection)"},
		{&stageError{"tls", fmt.Errorf("read: %w", syscall.ECONNRESET)}, "tls: connection reset by server"},
		{&stageError{"dial", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}, "dial: connection refused (nothing listening)"},
		{&stageError{"config", alert}, "config: TLS alert from server: unknown certificate authority"},
		{&stageError{"config", &tunnel.PeerClosedError{Code: tunnel.ClosePolicy, Reason: `too many sessions for one identity: "load-00001" is at the limit of 2`}},
			`config: server CLOSE policy (5): too many sessions for one identity: "…" is at the limit of 2`},
		{&stageError{"session", &tunnel.PeerClosedError{Code: tunnel.CloseReplaced, Reason: "replaced by a new connection from 198.19.0.7:41234"}},
			"session: server CLOSE replaced (2): replaced by a new connection from ADDR"},
		{&stageError{"session", errSilent}, "session: timeout (server silent for 3 keepalive intervals)"},
		{&stageError{"config", os.ErrDeadlineExceeded}, "config: timeout"},
	} {
		if got := classify(tc.err); got != tc.want {
			t.Errorf("classify(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestUDPPacket(t *testing.T) {
	cfg := tunnel.Config{Addr: netip.MustParsePrefix("100.64.3.7/16"), ServerAddr: netip.MustParseAddr("100.64.0.1")}
	p := udpPacket(cfg, 5, 64)
	if len(p) != 92 || p[0] != 0x45 || p[9] != 17 {
		t.Fatalf("packet %x: want 92 bytes of IPv4/UDP", p)
	}
	if ipChecksum(p[:20]) != 0 {
		t.Errorf("IPv4 header checksum does not verify: %x", p[:20])
	}
	if got := netip.AddrFrom4([4]byte(p[12:16])); got != cfg.Addr.Addr() {
		t.Errorf("source %v, want %v", got, cfg.Addr.Addr())
	}
}

func TestSummarize(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	d := summarize(ds)
	if d.N != 100 || d.P50 != 50 || d.P90 != 90 || d.P99 != 99 || d.Max != 100 {
		t.Errorf("summarize(1..100 ms) = %+v", d)
	}
	if summarize(nil).N != 0 {
		t.Error("summarize(nil) should be empty")
	}
}

func TestParseMetrics(t *testing.T) {
	in := `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 42
tunneld_refused_connections_total{limit="handshake_rate"} 7
tunneld_sessions 3
go_gc_duration_seconds{quantile="0.5"} 1e-05
`
	keep := func(n string) bool { return n == "go_goroutines" || strings.HasPrefix(n, "tunneld_") }
	m, err := parseMetrics(strings.NewReader(in), keep)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"go_goroutines": 42, `tunneld_refused_connections_total{limit="handshake_rate"}`: 7, "tunneld_sessions": 3}
	if len(m) != len(want) {
		t.Fatalf("got %v, want %v", m, want)
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
}

// startServer runs an in-process tunnel server (real TLS 1.3, in-memory
// TUN device) and writes its CA where --pki finds it. It counts the
// packets the server delivers to its device.
func startServer(t *testing.T) (addr, pki string, delivered *atomic.Int64) {
	t.Helper()
	// A keepalive short enough that both sides ping during the hold, long
	// enough (3 s of silence ends a session) for a loaded -race run.
	srv := tunneltest.StartServer(t, tunneltest.ServerOptions{Keepalive: time.Second})
	pki = t.TempDir()
	srv.CA.WriteFiles(t, pki)
	delivered = new(atomic.Int64)
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go func() {
		for {
			select {
			case <-srv.Dev.Outbound:
				delivered.Add(1)
			case <-stop:
				return
			}
		}
	}()
	return srv.Listener.Addr().String(), pki, delivered
}

// TestRunAgainstServer runs a small load with churn, traffic and the ping
// check against a real server and checks the report.
func TestRunAgainstServer(t *testing.T) {
	addr, pki, delivered := startServer(t)
	jsonFile := filepath.Join(t.TempDir(), "load.json")
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{
		"--server", addr, "--server-name", "server", "--pki", pki,
		"--sessions", "30", "--concurrency", "8", "--hold", "2500ms",
		"--churn", "3", "--churn-life", "150ms", "--resume",
		"--traffic", "20", "--ping-check", "--require-ping-all", "--max-failures", "0",
		// The default per-source limit (burst 20) would refuse some of
		// 30 sessions and the churn from one address: spread them.
		"--source", "127.0.0.0/24:20",
		"--progress", "0", "--settle", "0", "--sample-every", "200ms", "--json", jsonFile,
	}, &out, &errOut)
	t.Logf("report:\n%s", out.String())
	if err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, errOut.String())
	}
	b, err := os.ReadFile(jsonFile)
	if err != nil {
		t.Fatal(err)
	}
	var r report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("JSON report: %v", err)
	}
	if r.Ramp.Up != 30 || r.Ramp.OK != 30 || r.Ramp.Connect.N != 30 {
		t.Errorf("ramp: %+v, want 30 up", r.Ramp)
	}
	if r.PingCheck == nil || r.PingCheck.Answered != 30 {
		t.Errorf("ping check: %+v, want 30 answered", r.PingCheck)
	}
	if r.Churn == nil || r.Churn.OK < 3 || r.Churn.Cycles < 3 {
		t.Errorf("churn: %+v, want at least one cycle per churn session", r.Churn)
	}
	if r.Churn != nil && r.Churn.Resumed == 0 {
		t.Errorf("churn: no resumed handshake with --resume: %+v", r.Churn)
	}
	if r.Hold.TxData == 0 || delivered.Load() == 0 {
		t.Errorf("traffic: sent %d, server delivered %d; want both > 0", r.Hold.TxData, delivered.Load())
	}
	// The server pings only sessions that were silent for an interval;
	// these ping every second, so they get PONGs and no PINGs.
	if r.Hold.PingsSent == 0 || r.Hold.PongsRecv == 0 {
		t.Errorf("keepalive: %d PINGs sent, %d PONGs back; want both > 0 with a 1s keepalive", r.Hold.PingsSent, r.Hold.PongsRecv)
	}
	if r.FailureCount != 0 || r.Close.Outcomes[closeAcked] != r.Close.Sessions || r.Close.Sessions < 30 {
		t.Errorf("failures %d %v, close %+v: want no failures and every close answered", r.FailureCount, r.Failures, r.Close)
	}
	if r.Before.Self.RSSKiB == 0 || r.Before.SelfGor == 0 {
		t.Errorf("own resource use not measured: %+v", r.Before)
	}
}

// TestRunWrongCA checks that failures are counted by reason and that
// --max-failures makes the run fail.
func TestRunWrongCA(t *testing.T) {
	addr, _, _ := startServer(t)
	other := t.TempDir()
	certstest.NewCA(t).WriteFiles(t, other)
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{
		"--server", addr, "--server-name", "server", "--pki", other,
		"--sessions", "4", "--hold", "0s", "--max-failures", "0", "--progress", "0", "--settle", "0",
	}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "max-failures 0 failed") {
		t.Fatalf("run with another CA: err %v, want the max-failures check to fail\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "tls: server certificate not accepted") {
		t.Errorf("report does not classify the failure:\n%s", out.String())
	}
}
