package tunnel_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"tlsvpn/certs/certstest"
	"tlsvpn/tun"
	"tlsvpn/tun/tuntest"
	"tlsvpn/tunnel"
	"tlsvpn/tunnel/tunneltest"
)

// TestInteropOpenSSL runs our real tunnel.Server and tunnel.Client against
// a peer on a TLS 1.3 implementation that is not Go's: OpenSSL, through
// Python's ssl module (testdata/interop/peer.py, written from
// docs/PROTOCOL.md). Our side hands its data phase over from crypto/tls to
// the project's own record layer (record.go) after HELLO/CONFIG; the peer
// cannot tell, and these tests check that it indeed cannot: every cipher
// suite, padded records, NewSessionTickets, KeyUpdates both ways, frames
// that share HELLO's record, and the E bit, with packets checked byte for
// byte in both directions.
//
// Roles: "python-client" is OpenSSL's client against tunneltest's server;
// "python-server" is our tunnel.Client against OpenSSL's server. The
// OpenSSL side's cipher suite and record padding come from an OpenSSL
// config file in OPENSSL_CONF (its system_default section applies to every
// SSL_CTX that Python makes).
//
// CI runs it with Debian's /usr/bin/python3 (3.11, OpenSSL 3.0).
func TestInteropOpenSSL(t *testing.T) {
	python := interopPython(t)
	script, err := filepath.Abs(filepath.Join("testdata", "interop", "peer.py"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range interopCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runInterop(t, python, script, tc)
		})
	}
}

// interopPython returns Debian's python3, else the first on PATH.
func interopPython(t *testing.T) string {
	t.Helper()
	const debian = "/usr/bin/python3"
	if _, err := os.Stat(debian); err == nil {
		return debian
	}
	p, err := exec.LookPath("python3")
	if err != nil {
		if testing.Short() {
			t.Skip("python3 not found; the OpenSSL interop tests need it (skipped in -short)")
		}
		t.Fatalf("python3 not found (%v): the OpenSSL interop tests need Debian's python3 with its ssl module "+
			"(apt-get install python3; scripts/test.sh installs it)", err)
	}
	return p
}

type interopRole string

const (
	pyClient interopRole = "python-client" // OpenSSL client <-> our tunnel.Server
	pyServer interopRole = "python-server" // our tunnel.Client <-> OpenSSL server
)

// What the record layer of our side is expected to be in the data phase.
type interopHandOver int

const (
	wantHandOver interopHandOver = iota // handed over to the own record layer
	wantRefusal                         // refused (bytes buffered after HELLO): stays on crypto/tls
	wantStdlib                          // StdlibRecords: never tried
)

type interopCase struct {
	name string
	role interopRole
	// OpenSSL side, through OPENSSL_CONF: Ciphersuites ("" keeps
	// OpenSSL's default list) and RecordPadding (0: none).
	suite   string
	padding int
	// peerCaps: the caps the peer announces (its HELLO, or its CONFIG).
	peerCaps uint32
	// hello (python-client): how the peer sends HELLO (peer.py --hello).
	hello string
	// Our side.
	stdlib    bool
	ownAESGCM bool
	rekey     uint64 // ServerConfig.RekeyRecords, ClientConfig.RotateRecords
	want      interopHandOver
	run       func(e *interopEnv)
}

const (
	suiteAES128 = "TLS_AES_128_GCM_SHA256"
	suiteAES256 = "TLS_AES_256_GCM_SHA384"
	suiteChaCha = "TLS_CHACHA20_POLY1305_SHA256"
)

// interopCases is the table: each scenario for the roles it applies to.
func interopCases() []interopCase {
	both := []interopRole{pyClient, pyServer}
	type scenario struct {
		roles []interopRole
		c     interopCase
	}
	exchange := func(n int) func(e *interopEnv) {
		return func(e *interopEnv) {
			e.exchange(n)
			e.finish()
		}
	}
	withBulk := func(e *interopEnv) {
		e.exchange(14)
		e.bulk()
		e.exchange(7)
		e.finish()
	}
	scenarios := []scenario{
		// 8. The plain case: OpenSSL's defaults, our own record layer.
		{both, interopCase{name: "plain", run: withBulk}},
		// 1. Each TLS 1.3 cipher suite, forced from the OpenSSL side.
		{both, interopCase{name: "suite-aes128-gcm", suite: suiteAES128, run: withBulk}},
		{both, interopCase{name: "suite-aes256-gcm", suite: suiteAES256, run: withBulk}},
		{both, interopCase{name: "suite-chacha20-poly1305", suite: suiteChaCha, run: withBulk}},
		// 8. Our own AES-GCM in the record layer.
		{both, interopCase{name: "own-aesgcm-aes128", suite: suiteAES128, ownAESGCM: true, run: withBulk}},
		{both, interopCase{name: "own-aesgcm-aes256", suite: suiteAES256, ownAESGCM: true, run: withBulk}},
		// 2. Every record the peer sends is padded to a multiple of 512.
		{both, interopCase{name: "padding-512", padding: 512, run: interopPadding}},
		{both, interopCase{name: "padding-512-chacha20", suite: suiteChaCha, padding: 512, run: interopPadding}},
		// 3. NewSessionTickets from OpenSSL's server, one after data.
		{[]interopRole{pyServer}, interopCase{name: "session-tickets", run: interopTickets}},
		// 4. KeyUpdate from OpenSSL to us, not requested and requested.
		{both, interopCase{name: "keyupdate-from-peer", run: interopKeyUpdateFromPeer}},
		{both, interopCase{name: "keyupdate-from-peer-chacha20", suite: suiteChaCha, run: interopKeyUpdateFromPeer}},
		// 5. KeyUpdate from us: a tiny budget, a peer with CapKeyUpdate.
		{both, interopCase{name: "keyupdate-from-us", peerCaps: tunnel.CapKeyUpdate, rekey: 50, run: interopKeyUpdateFromUs}},
		{both, interopCase{name: "keyupdate-from-us-aes256", suite: suiteAES256, peerCaps: tunnel.CapKeyUpdate, rekey: 50, run: interopKeyUpdateFromUs}},
		// 4+5. The peer's update_requested arrives as the very record that
		// uses up our receive budget.
		{both, interopCase{name: "keyupdate-requested-at-our-budget", peerCaps: tunnel.CapKeyUpdate, rekey: 50, run: interopKeyUpdateAtBudget}},
		// 6. Frames sharing HELLO's TLS record.
		{[]interopRole{pyClient}, interopCase{name: "hello-and-ping-in-one-record", hello: "with-ping", want: wantRefusal, run: exchange(7)}},
		{[]interopRole{pyClient}, interopCase{name: "hello-and-partial-data-in-one-record", hello: "with-partial-data", want: wantRefusal, run: interopPartialData}},
		// 7. The E bit on a PING flushes the DATA before it.
		{both, interopCase{name: "end-bit-on-ping", run: interopEndBit}},
		// Control: our side on crypto/tls's record layer, same peer and
		// the same post-handshake messages. If this fails, suspect the
		// peer or the test, not the record layer.
		{both, interopCase{name: "control-stdlib-records", stdlib: true, want: wantStdlib, run: interopControl}},
	}
	var out []interopCase
	for _, s := range scenarios {
		for _, r := range s.roles {
			c := s.c
			c.role = r
			c.name = string(r) + "/" + c.name
			out = append(out, c)
		}
	}
	return out
}

// interopPadding: data both ways with every record from the peer padded.
func interopPadding(e *interopEnv) {
	e.exchange(21)
	e.bulk() // full records: the largest inner plaintext cannot be padded
	st := e.cmd("stats")
	if st["records_sent"] == 0 || st["unpadded"] != 0 {
		e.t.Errorf("peer wrote %d records, %d of them not padded to 512: OPENSSL_CONF RecordPadding not in effect",
			st["records_sent"], st["unpadded"])
	}
	e.finish()
}

// interopTickets: OpenSSL's server sends two tickets after the handshake
// (NumTickets), which our client's crypto/tls stores before the hand-over;
// then one more after data flowed, which our record layer must skip.
func interopTickets(e *interopEnv) {
	if got := e.tlsLine["tickets_sent"]; got != "2" {
		e.t.Fatalf("OpenSSL server sent %s NewSessionTickets after the handshake, want 2 (its default NumTickets)", got)
	}
	tunneltest.Eventually(e.t, func() bool { return e.cache.puts.Load() >= 2 },
		"our client stored %d of the 2 session tickets OpenSSL sent after the handshake", &e.cache.puts)
	e.exchange(7)
	e.cmd("ticket")
	st := e.fromPeer(3, 3) // the first write after "ticket" carries it
	if st["tickets_sent"] != 3 {
		e.t.Fatalf("OpenSSL sent %d tickets in all, want 3 (2 after the handshake, 1 after data)", st["tickets_sent"])
	}
	e.toPeer(7, false)
	e.exchange(7)
	if got := e.cache.puts.Load(); got < 2 {
		e.t.Errorf("our client stored %d session tickets, want at least the 2 sent before the hand-over", got)
	}
	e.t.Logf("session tickets stored by our client: %d (the third arrived after the hand-over)", e.cache.puts.Load())
	e.finish()
}

// interopKeyUpdateFromPeer: OpenSSL updates its keys three times without
// and three times with update_requested, with data both ways around each.
// Our side must accept each; to each request it must answer with exactly
// one KeyUpdate(update_not_requested) before its next data, and then send
// under its new keys (OpenSSL reading that data proves it).
func interopKeyUpdateFromPeer(e *interopEnv) {
	e.exchange(7)
	for round := 1; round <= 3; round++ {
		for _, req := range []int{0, 1} {
			e.cmd("keyupdate %d", req)
			e.fromPeer(4, 2) // the first write carries the KeyUpdate
			st := e.toPeer(4, false)
			if st["ku_sent"] != 2*(round-1)+req+1 {
				e.t.Fatalf("round %d, update_requested=%d: OpenSSL sent %d KeyUpdates, want %d",
					round, req, st["ku_sent"], 2*(round-1)+req+1)
			}
			if want := round - 1 + req; st["ku_recv"] != want {
				e.t.Fatalf("round %d, update_requested=%d: after our data the peer had received %d KeyUpdates from us, want %d "+
					"(one answer per update_requested, sent before our next data, none for update_not_requested)",
					round, req, st["ku_recv"], want)
			}
		}
	}
	e.ping()
	st := e.cmd("stats")
	if st["ku_recv_req"] != 0 {
		e.t.Errorf("%d of our KeyUpdates set update_requested; an answer must be update_not_requested (RFC 8446 4.6.3)", st["ku_recv_req"])
	}
	if e.tc.want == wantHandOver {
		if got := e.stats.KeyUpdatesReceived.Load(); got != 6 {
			e.t.Errorf("Stats.KeyUpdatesReceived = %d, want 6", got)
		}
		if got := e.stats.KeyUpdatesSent.Load(); got != 3 {
			e.t.Errorf("Stats.KeyUpdatesSent = %d, want 3 (the answers to update_requested)", got)
		}
	}
	e.finish()
}

// interopKeyUpdateFromUs: with a budget of 50 records per key and a peer
// that announced CapKeyUpdate, a few hundred records each way make our
// record layer update its keys in-band; OpenSSL must keep reading.
func interopKeyUpdateFromUs(e *interopEnv) {
	const n = 300
	e.fromPeer(n, 1) // one record per packet
	e.toPeer(n, true)
	e.ping()
	st := e.cmd("stats")
	sent, recv := e.stats.KeyUpdatesSent.Load(), e.stats.KeyUpdatesReceived.Load()
	e.t.Logf("our KeyUpdates: sent %d, received %d; peer: sent %d, received %d (%d requesting), records peer->us %d, us->peer %d",
		sent, recv, st["ku_sent"], st["ku_recv"], st["ku_recv_req"], st["records_sent"], st["records_recv"])
	if min := uint64(n/int(e.tc.rekey)) - 1; sent < min {
		e.t.Errorf("Stats.KeyUpdatesSent = %d after we sent over %d records with RekeyRecords=%d, want at least %d",
			sent, n, e.tc.rekey, min)
	}
	if uint64(st["ku_recv"]) != sent {
		e.t.Errorf("the peer received %d KeyUpdates, Stats.KeyUpdatesSent = %d: they must agree", st["ku_recv"], sent)
	}
	if uint64(st["ku_sent"]) != recv {
		e.t.Errorf("the peer sent %d KeyUpdates, Stats.KeyUpdatesReceived = %d: they must agree", st["ku_sent"], recv)
	}
	if recv == 0 {
		e.t.Errorf("Stats.KeyUpdatesReceived = 0 after the peer sent %d records under one key with RekeyRecords=%d: "+
			"the budget covers records received too (ServerConfig.RekeyRecords: \"sends or receives\"), so our side "+
			"should have asked the peer to update (update_requested)", st["records_sent"], e.tc.rekey)
	}
	e.finish()
}

// interopKeyUpdateAtBudget: the peer's KeyUpdate(update_requested) is the
// record that makes our side's receive count reach RekeyRecords. Our side
// must answer with update_not_requested (RFC 8446 section 4.6.3: "MUST
// send a KeyUpdate of its own with request_update set to
// update_not_requested"); and as the peer's key it wanted replaced was
// just replaced, it has nothing more to request.
func interopKeyUpdateAtBudget(e *interopEnv) {
	e.exchange(7)
	st := e.cmd("stats")
	k := int(e.tc.rekey) - 1 - st["records_key"]
	if k < 0 {
		e.t.Fatalf("the peer already wrote %d records under its key, over RekeyRecords=%d", st["records_key"], e.tc.rekey)
	}
	if k > 0 {
		st = e.fromPeer(k, 1)
	}
	if st["records_key"] != int(e.tc.rekey)-1 || st["ku_sent"] != 0 || st["ku_recv"] != 0 {
		e.t.Fatalf("before the KeyUpdate: peer wrote %d records under its key (want %d), KeyUpdates sent %d, received %d (want 0, 0)",
			st["records_key"], e.tc.rekey-1, st["ku_sent"], st["ku_recv"])
	}
	e.cmd("keyupdate 1")
	e.fromPeer(1, 1) // the KeyUpdate is record number RekeyRecords under the old key
	st = e.toPeer(3, false)
	if st["ku_recv"] != 1 || st["ku_recv_req"] != 0 {
		e.t.Errorf("after the peer's update_requested (its record %d under the key, our RekeyRecords=%d): the peer received %d "+
			"KeyUpdates from us, %d of them update_requested; want exactly 1, update_not_requested (RFC 8446 section 4.6.3: "+
			"the answer MUST be update_not_requested; and the peer's key was just replaced, so there is nothing to request)",
			e.tc.rekey, e.tc.rekey, st["ku_recv"], st["ku_recv_req"])
	}
	e.finish()
}

// interopPartialData: HELLO and the first 10 bytes of a DATA frame share
// a record; the rest of the frame comes in a later record. The packet must
// reach the TUN: the server must not lose the buffered bytes.
func interopPartialData(e *interopEnv) {
	e.expectPacket(e.peerPacket(0), 5*time.Second, "the DATA frame split across HELLO's record and the next")
	e.rx++
	e.exchange(7)
	e.finish()
}

// interopEndBit: a DATA frame without E followed by a PING with E, in one
// write: the receiver must flush its batch on the PING's E.
func interopEndBit(e *interopEnv) {
	e.exchange(3)
	e.cmd("ebit")
	e.expectPacket(e.peerPacket(e.rx), 2*time.Second,
		"the DATA frame (no E bit) before a PING with the E bit: the receiver must flush its batch on E on any frame type")
	e.rx++
	e.exchange(3)
	e.finish()
}

// interopControl: the post-handshake traffic of the other scenarios with
// our side on crypto/tls.
func interopControl(e *interopEnv) {
	e.exchange(7)
	for _, req := range []int{0, 1} {
		e.cmd("keyupdate %d", req)
		e.fromPeer(4, 2)
		e.toPeer(4, false)
	}
	if e.tc.role == pyServer {
		e.cmd("ticket")
		e.fromPeer(3, 3)
		e.toPeer(3, false)
	}
	st := e.cmd("stats")
	if st["ku_sent"] != 2 || st["ku_recv"] != 1 || st["ku_recv_req"] != 0 {
		e.t.Errorf("KeyUpdates: peer sent %d (want 2), received %d (want 1, not requesting: got %d requesting)",
			st["ku_sent"], st["ku_recv"], st["ku_recv_req"])
	}
	e.finish()
}

// ---------------------------------------------------------------- harness

// interopEnv is one running scenario: our side, the peer, and the counters
// of the packets sent each way (the recipe is interopPayload, shared with
// peer.py's payload()).
type interopEnv struct {
	t       *testing.T
	tc      interopCase
	peer    *interopPeer
	dev     *tuntest.ChannelDevice // our side's TUN
	stats   *tunnel.Stats          // our side's counters
	srv     *tunneltest.Server     // python-client only
	cache   *countingCache         // python-server only: our client's session cache
	ourAddr netip.Addr             // our side's tunnel address
	peerIP  netip.Addr             // the peer's tunnel address
	tx, rx  int                    // packets sent to / received from the peer
	tlsLine map[string]string      // the peer's "tls" line
	suite   atomic.Uint32          // the cipher suite our side negotiated
	logs    *tunneltest.SyncBuffer // our side's log, at debug level
}

func runInterop(t *testing.T, python, script string, tc interopCase) {
	logs := new(tunneltest.SyncBuffer)
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// Registered first, so it runs last: after our side and the peer stopped.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("our side's log:\n%s", logs.String())
		}
	})
	if tc.stdlib {
		tc.want = wantStdlib
	}
	e := &interopEnv{t: t, tc: tc, logs: logs}
	dir := t.TempDir()
	conf := writeOpenSSLConf(t, dir, tc.suite, tc.padding)
	args := []string{"--role", "client", "--caps", fmt.Sprintf("0x%x", tc.peerCaps)}
	if tc.suite != "" {
		args = append(args, "--expect-cipher", tc.suite)
	}
	if tc.padding > 0 {
		args = append(args, "--expect-padding", strconv.Itoa(tc.padding))
	}

	switch tc.role {
	case pyClient:
		e.srv = tunneltest.StartServer(t, tunneltest.ServerOptions{
			BatchSize: 64,
			CheckPeer: func(cs tls.ConnectionState) error {
				e.suite.Store(uint32(cs.CipherSuite))
				return nil
			},
			StdlibRecords: tc.stdlib,
			OwnAESGCM:     tc.ownAESGCM,
			RekeyRecords:  tc.rekey,
			Logger:        logger,
		})
		e.dev, e.stats = e.srv.Dev, e.srv.Stats
		caFile := e.srv.CA.WriteFiles(t, dir)
		cert, key := certstest.WriteCert(t, dir, "client", e.srv.CA.ClientCert(t, "interop-peer"))
		_, port, _ := net.SplitHostPort(e.srv.Listener.Addr().String())
		hello := tc.hello
		if hello == "" {
			hello = "normal"
		}
		args = append(args, "--port", port, "--ca", caFile, "--cert", cert, "--key", key,
			"--server-name", "server", "--hello", hello)
		e.peer = startInteropPeer(t, python, script, conf, args)
		e.tlsLine = e.peer.expect("tls")
		cfg := e.peer.expect("config")
		if cfg["addr4"] != "100.64.0.2/24" || cfg["server4"] != "100.64.0.1" || cfg["mtu"] != "1500" {
			t.Fatalf("peer parsed our CONFIG as %v, want addr4 100.64.0.2/24, server4 100.64.0.1, mtu 1500", cfg)
		}
		e.peer.expect("ready")
		e.peerIP, e.ourAddr = netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("100.64.0.1")
		// The session is registered before CONFIG is sent: CheckSessions
		// shows its TLS state to CheckPeer.
		if n := e.srv.Server.CheckSessions(); n != 0 {
			t.Fatalf("CheckSessions closed %d sessions", n)
		}
		if e.suite.Load() == 0 {
			t.Fatalf("our server has no live session right after sending CONFIG (CheckSessions found none to show "+
				"its TLS state): sessions opened %d, closed %d, protocol errors %d",
				e.stats.SessionsOpened.Load(), e.stats.SessionsClosed.Load(), e.stats.ProtocolErrors.Load())
		}
		t.Logf("peer: %v; our CONFIG caps %s", e.tlsLine, cfg["caps"])
		checkOurKeyUpdateCap(t, "CONFIG", cfg["caps"], tc.stdlib)

	case pyServer:
		args[1] = "server"
		ca := certstest.NewCA(t)
		caFile := ca.WriteFiles(t, dir)
		cert, key := certstest.WriteCert(t, dir, "server", ca.ServerCert(t, "server"))
		args = append(args, "--ca", caFile, "--cert", cert, "--key", key,
			"--addr4", "100.64.0.2/24", "--server4", "100.64.0.1", "--mtu", "1500", "--keepalive-ms", "10000")
		e.peer = startInteropPeer(t, python, script, conf, args)
		port := e.peer.expect("listen")["port"]
		tlsCfg := ca.ClientConfig(t, "interop-client", "server")
		tlsCfg.VerifyConnection = func(cs tls.ConnectionState) error {
			e.suite.Store(uint32(cs.CipherSuite))
			return nil
		}
		e.cache = &countingCache{ClientSessionCache: tls.NewLRUClientSessionCache(8)}
		tlsCfg.ClientSessionCache = e.cache
		e.stats = new(tunnel.Stats)
		e.dev = tuntest.NewChannelDevice("cli0", 1500, 64, 1024)
		cfg := startInteropClient(t, tunnel.ClientConfig{
			Dial: func(ctx context.Context) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", port))
			},
			TLS:           tlsCfg,
			Hello:         tunnel.Hello{Software: "interop-test"},
			StdlibRecords: tc.stdlib,
			OwnAESGCM:     tc.ownAESGCM,
			RotateRecords: tc.rekey,
			MinBackoff:    time.Minute, // the peer accepts one connection only
			MaxAttempts:   1,
			Stats:         e.stats,
			Logger:        logger,
		}, e.dev, e.peer)
		e.tlsLine = e.peer.expect("tls")
		hello := e.peer.expect("hello")
		e.peer.expect("ready")
		if hello["software"] != "interop-test" {
			t.Errorf("peer parsed our HELLO as %v, want software interop-test", hello)
		}
		want := tunnel.Config{Addr: netip.MustParsePrefix("100.64.0.2/24"), ServerAddr: netip.MustParseAddr("100.64.0.1"),
			MTU: 1500, Keepalive: 10 * time.Second, Caps: tc.peerCaps}
		if cfg.Addr != want.Addr || cfg.ServerAddr != want.ServerAddr || cfg.MTU != want.MTU ||
			cfg.Keepalive != want.Keepalive || cfg.Caps != want.Caps {
			t.Fatalf("our client parsed the peer's CONFIG as %+v, want %+v", cfg, want)
		}
		e.peerIP, e.ourAddr = netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("100.64.0.2")
		t.Logf("peer: %v; our HELLO caps %s", e.tlsLine, hello["caps"])
		checkOurKeyUpdateCap(t, "HELLO", hello["caps"], tc.stdlib)
	}

	// Both sides must agree on the cipher suite, and it must be the forced one.
	ours := tls.CipherSuiteName(uint16(e.suite.Load()))
	if ours != e.tlsLine["cipher"] {
		t.Fatalf("our side negotiated %s, the peer %s", ours, e.tlsLine["cipher"])
	}
	if tc.suite != "" && ours != tc.suite {
		t.Fatalf("negotiated %s, want %s (forced by OPENSSL_CONF)", ours, tc.suite)
	}
	tc.run(e)
}

// checkAEAD checks which AES-GCM sealed and opened our records after the
// hand-over, as the hand-over's log line reports it (RecordConn.OwnAESGCM):
// tlsvpn's own only when the case asked for it (OwnAESGCM), the suite is
// AES-GCM and the own code can run here; Go's otherwise, and by default.
// Both produce the same bytes, so nothing else here would tell.
func (e *interopEnv) checkAEAD() {
	e.t.Helper()
	want := e.tc.ownAESGCM && uint16(e.suite.Load()) != tls.TLS_CHACHA20_POLY1305_SHA256
	if err := tunnel.OwnAESGCMCheck(); want && err != nil {
		e.t.Logf("tlsvpn's own AES-GCM cannot run here (%v): expecting Go's", err)
		want = false
	}
	line := ""
	for l := range strings.Lines(e.logs.String()) {
		if strings.Contains(l, "data phase handed over") {
			line = l
		}
	}
	if attr := fmt.Sprintf("own_aes_gcm=%v", want); !strings.Contains(line, attr) {
		e.t.Errorf("our hand-over's log line %q does not say %s (OwnAESGCM %v, suite %s)",
			strings.TrimSpace(line), attr, e.tc.ownAESGCM, tls.CipherSuiteName(uint16(e.suite.Load())))
	}
}

// checkOurKeyUpdateCap checks the caps of our HELLO or CONFIG as the peer
// parsed them: CapKeyUpdate only from a side that tries the own record
// layer (not with StdlibRecords).
func checkOurKeyUpdateCap(t *testing.T, msg, caps string, stdlib bool) {
	t.Helper()
	v, err := strconv.ParseUint(caps, 0, 32)
	if err != nil {
		t.Fatalf("the peer reported our %s caps as %q: %v", msg, caps, err)
	}
	if got := uint32(v)&tunnel.CapKeyUpdate != 0; got == stdlib {
		t.Errorf("our %s caps %s: CapKeyUpdate %v with StdlibRecords %v; want it only from a side on the own record layer", msg, caps, got, stdlib)
	}
}

// exchange sends n packets each way and checks them.
func (e *interopEnv) exchange(n int) {
	e.t.Helper()
	e.fromPeer(n, 3)
	e.toPeer(n, false)
}

// bulk sends 150 packets (about 80 KiB) each way in one write, so that
// both sides seal full 16 KiB records.
func (e *interopEnv) bulk() {
	e.t.Helper()
	e.fromPeer(150, 150)
	st := e.toPeer(150, false)
	// A full record: 2^14 bytes of content, the type byte, the tag.
	// Our side seals one TUN read batch at a time (up to 64 packets here),
	// so its records are full only when enough packets were waiting.
	const full = 16<<10 + 1 + 16
	if st["max_sent"] != full {
		e.t.Errorf("largest record the peer wrote: %d bytes, want %d (a full record)", st["max_sent"], full)
	}
	e.t.Logf("largest record from our side: %d bytes (full: %d)", st["max_recv"], full)
}

// interopPayload is peer.py's payload(): tag, index, and a pattern whose
// length cycles through sizes from 0 to 1400 bytes.
func interopPayload(tag byte, i int) []byte {
	sizes := [...]int{0, 1, 7, 64, 300, 999, 1400}
	n := sizes[i%len(sizes)]
	p := make([]byte, 5, 5+n)
	p[0] = tag
	binary.BigEndian.PutUint32(p[1:], uint32(i))
	for j := range n {
		p = append(p, byte(i*31+j))
	}
	return p
}

// peerPacket is the i-th packet the peer sends us; ourPacket the i-th we send it.
func (e *interopEnv) peerPacket(i int) []byte {
	return tunneltest.UDP4(e.peerIP, e.ourAddr, interopPayload('P', i))
}

func (e *interopEnv) ourPacket(i int) []byte {
	return tunneltest.UDP4(e.ourAddr, e.peerIP, interopPayload('G', i))
}

// fromPeer has the peer send n packets, per to a write, and checks that
// they come out of our TUN device in order, byte for byte.
func (e *interopEnv) fromPeer(n, per int) map[string]int {
	e.t.Helper()
	st := e.cmd("send %d %d", n, per)
	for range n {
		e.expectPacket(e.peerPacket(e.rx), 5*time.Second, fmt.Sprintf("packet P%d from the peer", e.rx))
		e.rx++
	}
	return st
}

// toPeer injects n packets into our TUN device and has the peer check
// them. paced waits until each left in a write of its own (so each is at
// least one record).
func (e *interopEnv) toPeer(n int, paced bool) map[string]int {
	e.t.Helper()
	e.peer.send(fmt.Sprintf("recv %d", n))
	for range n {
		before := e.stats.TxPackets.Load()
		e.dev.Inbound <- e.ourPacket(e.tx)
		e.tx++
		if paced {
			deadline := time.Now().Add(5 * time.Second)
			for e.stats.TxPackets.Load() == before {
				if time.Now().After(deadline) {
					e.t.Fatalf("packet G%d injected into our TUN was not sent within 5s", e.tx-1)
				}
				time.Sleep(20 * time.Microsecond)
			}
		}
	}
	return counters(e.peer.expect("ok recv"))
}

// expectPacket waits up to d for the next packet on our TUN.
func (e *interopEnv) expectPacket(want []byte, d time.Duration, what string) {
	e.t.Helper()
	select {
	case got := <-e.dev.Outbound:
		if !bytes.Equal(got, want) {
			e.t.Fatalf("%s: got %d bytes %x, want %d bytes %x", what, len(got), head(got), len(want), head(want))
		}
	case <-time.After(d):
		e.t.Fatalf("%s: not on our TUN within %v (our stats: rx packets %d, dropped malformed %d, spoofed %d)",
			what, d, e.stats.RxPackets.Load(), e.stats.DropMalformed.Load(), e.stats.DropSpoofed.Load())
	}
}

func head(b []byte) []byte { return b[:min(len(b), 48)] }

// cmd runs one peer command and returns its counters.
func (e *interopEnv) cmd(format string, args ...any) map[string]int {
	e.t.Helper()
	line := fmt.Sprintf(format, args...)
	e.peer.send(line)
	return counters(e.peer.expect("ok " + strings.Fields(line)[0]))
}

func (e *interopEnv) ping() {
	e.t.Helper()
	e.cmd("ping")
}

// finish checks the end state: every packet arrived on both sides, the
// record layer is the expected one, nothing was dropped; then the peer
// closes the session gracefully and exits.
func (e *interopEnv) finish() {
	e.t.Helper()
	e.ping()
	st := e.cmd("stats")
	if st["rx"] != e.tx || st["tx"] != e.rx {
		e.t.Errorf("peer counted %d packets received and %d sent; we sent %d and received %d", st["rx"], st["tx"], e.tx, e.rx)
	}
	if e.tc.padding > 0 && st["unpadded"] != 0 {
		e.t.Errorf("%d records from the peer were not padded", st["unpadded"])
	}
	s := e.stats
	for name, c := range map[string]*atomic.Uint64{
		"DropMalformed": &s.DropMalformed, "DropSpoofed": &s.DropSpoofed, "DropTUNWrite": &s.DropTUNWrite,
		"DropQueueFull": &s.DropQueueFull, "DropNoSession": &s.DropNoSession, "ProtocolErrors": &s.ProtocolErrors,
	} {
		if v := c.Load(); v != 0 {
			e.t.Errorf("our Stats.%s = %d, want 0", name, v)
		}
	}
	handOvers, refusals := s.RecordHandOvers.Load(), s.RecordHandOverRefusals.Load()
	switch e.tc.want {
	case wantHandOver:
		if handOvers != 1 || refusals != 0 {
			e.t.Errorf("RecordHandOvers = %d, RecordHandOverRefusals = %d; want 1, 0 (data phase on our own record layer)", handOvers, refusals)
		}
		e.checkAEAD()
	case wantRefusal:
		if handOvers != 0 || refusals != 1 {
			e.t.Errorf("RecordHandOvers = %d, RecordHandOverRefusals = %d; want 0, 1 (bytes after HELLO were buffered in crypto/tls: "+
				"the hand-over must be refused)", handOvers, refusals)
		}
	case wantStdlib:
		if handOvers != 0 || refusals != 0 {
			e.t.Errorf("RecordHandOvers = %d, RecordHandOverRefusals = %d with StdlibRecords; want 0, 0", handOvers, refusals)
		}
	}
	if e.tc.want != wantHandOver {
		if ku := s.KeyUpdatesSent.Load() + s.KeyUpdatesReceived.Load(); ku != 0 {
			e.t.Errorf("KeyUpdate counters moved (%d) without our record layer", ku)
		}
	}
	e.cmd("close")
	if e.srv != nil {
		tunneltest.Eventually(e.t, func() bool { return s.SessionsClosed.Load() == 1 },
			"server: %d sessions closed after the peer's CLOSE, want 1", &s.SessionsClosed)
	}
	e.peer.wait()
}

// ---------------------------------------------------------------- the peer process

// interopPeer is a running peer.py.
type interopPeer struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *tunneltest.SyncBuffer
	exited chan struct{} // closed after Wait returned
	err    error         // Wait's result, once exited
}

// startInteropPeer starts peer.py with OPENSSL_CONF=conf. It stops in
// t.Cleanup: stdin closed (the peer leaves), then killed if still alive.
func startInteropPeer(t *testing.T, python, script, conf string, args []string) *interopPeer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 35*time.Second)
	// -B: no __pycache__ in testdata; -E, -s: ignore PYTHON* variables and
	// the user's site-packages.
	cmd := exec.CommandContext(ctx, python, append([]string{"-B", "-E", "-s", script}, args...)...)
	cmd.Env = append(os.Environ(), "OPENSSL_CONF="+conf)
	cmd.WaitDelay = 2 * time.Second
	p := &interopPeer{t: t, cmd: cmd, lines: make(chan string, 64), stderr: new(tunneltest.SyncBuffer), exited: make(chan struct{})}
	cmd.Stderr = p.stderr
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting %s: %v", python, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stdin.Close()
		select {
		case <-p.exited:
		case <-time.After(3 * time.Second):
			cancel() // kills this process (cmd.Process), nothing else
			<-p.exited
		}
		cancel()
		if t.Failed() {
			t.Logf("peer stderr:\n%s", p.stderr.String())
		}
	})
	return p
}

func (p *interopPeer) send(line string) {
	t := p.t
	t.Helper()
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		t.Fatalf("writing %q to the peer: %v%s", line, err, p.exitInfo())
	}
}

// exitInfo describes the peer's exit, if it has exited.
func (p *interopPeer) exitInfo() string {
	select {
	case <-p.exited:
		return fmt.Sprintf(" (peer exited: %v)", p.err)
	default:
		return ""
	}
}

// expect waits for the peer's next line, which must start with prefix,
// and returns its k=v fields.
func (p *interopPeer) expect(prefix string) map[string]string {
	t := p.t
	t.Helper()
	var line string
	select {
	case l, ok := <-p.lines:
		if !ok {
			<-p.exited
			t.Fatalf("peer exited (%v) while we waited for %q", p.err, prefix)
		}
		line = l
	case <-time.After(10 * time.Second):
		t.Fatalf("no %q line from the peer within 10s", prefix)
	}
	if strings.HasPrefix(line, "FAIL") {
		t.Fatalf("peer: %s", line)
	}
	if line != prefix && !strings.HasPrefix(line, prefix+" ") {
		t.Fatalf("peer said %q, want %q...", line, prefix)
	}
	fields := map[string]string{}
	for _, f := range strings.Fields(line[len(prefix):]) {
		if k, v, ok := strings.Cut(f, "="); ok {
			fields[k] = v
		}
	}
	return fields
}

// counters returns the numeric fields of an "ok" line.
func counters(fields map[string]string) map[string]int {
	out := map[string]int{}
	for k, v := range fields {
		if n, err := strconv.Atoi(v); err == nil {
			out[k] = n
		}
	}
	return out
}

// wait waits for the peer to exit and fails unless it exited with 0.
func (p *interopPeer) wait() {
	t := p.t
	t.Helper()
	p.stdin.Close()
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		t.Fatalf("peer did not exit after close")
	}
	if p.err != nil {
		t.Fatalf("peer exited with %v", p.err)
	}
}

// ---------------------------------------------------------------- our client

// startInteropClient runs our tunnel.Client with cfg (Setup returning dev)
// and waits until it has its CONFIG. It stops in t.Cleanup.
func startInteropClient(t *testing.T, cfg tunnel.ClientConfig, dev *tuntest.ChannelDevice, peer *interopPeer) tunnel.Config {
	t.Helper()
	ready := make(chan tunnel.Config, 1)
	cfg.Setup = func(ctx context.Context, c tunnel.Config) (tun.Device, error) {
		select {
		case ready <- c:
		default:
		}
		return dev, nil
	}
	cl, err := tunnel.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	exited := make(chan struct{})
	var runErr error
	go func() {
		defer close(exited)
		runErr = cl.Run(ctx)
		dev.Close()
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			t.Errorf("our client's Run did not return within 5s of cancel")
		}
	})
	select {
	case c := <-ready:
		return c
	case <-exited:
		t.Fatalf("our client ended before its session was set up: %v%s", runErr, peer.exitInfo())
	case <-time.After(10 * time.Second):
		t.Fatalf("our client not set up within 10s%s", peer.exitInfo())
	}
	return tunnel.Config{}
}

// countingCache counts the session tickets crypto/tls stores.
type countingCache struct {
	tls.ClientSessionCache
	puts atomic.Uint64
}

func (c *countingCache) Put(key string, cs *tls.ClientSessionState) {
	if cs != nil {
		c.puts.Add(1)
	}
	c.ClientSessionCache.Put(key, cs)
}

// writeOpenSSLConf writes the OpenSSL config for the peer: its
// system_default section applies to every SSL_CTX, so it sets what
// Python's ssl module cannot (TLS 1.3 cipher suites, record padding). It
// also keeps the host's /etc/ssl/openssl.cnf out of the test.
func writeOpenSSLConf(t *testing.T, dir, suite string, padding int) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("# Written by tunnel/interop_test.go for testdata/interop/peer.py.\n" +
		"openssl_conf = openssl_init\n\n[openssl_init]\nssl_conf = ssl_module\n\n" +
		"[ssl_module]\nsystem_default = tls_system_default\n\n[tls_system_default]\n" +
		"MinProtocol = TLSv1.3\n")
	if suite != "" {
		fmt.Fprintf(&b, "Ciphersuites = %s\n", suite)
	}
	if padding > 0 {
		fmt.Fprintf(&b, "RecordPadding = %d\n", padding)
	}
	path := filepath.Join(dir, "openssl.cnf")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
