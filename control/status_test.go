package control

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)

func TestWriteServerStatus(t *testing.T) {
	s := ServerStatus{
		Version:      "v1.2.3",
		Started:      now.Add(-3*time.Hour - 12*time.Minute),
		Listen:       "0.0.0.0:443",
		TUN:          "tunneld0",
		Subnets:      []netip.Prefix{netip.MustParsePrefix("100.64.0.0/24"), netip.MustParsePrefix("fd00:64::/64")},
		Sessions:     2,
		PeakSessions: 3,
		Connections:  2,
		BytesIn:      3 << 30,
		BytesOut:     1536,
		Handshakes:   Handshakes{Full: 5, Resumed: 41, PerMinute: 0.25},
		Refusals:     map[string]uint64{"handshake_rate": 4, "clients": 1, "connections": 0},
		Certificate:  Expiry{File: "/pki/server.crt", Expires: now.Add(90 * 24 * time.Hour)},
		CRL:          &Expiry{File: "/pki/crl.pem", Error: "crl expired"},
	}
	var b strings.Builder
	if err := WriteServerStatus(&b, s, now); err != nil {
		t.Fatal(err)
	}
	want := `version:      v1.2.3
uptime:       3h12m (since 2026-12-05 08:48:00 UTC)
listen:       0.0.0.0:443
tun:          tunneld0 100.64.0.0/24, fd00:64::/64
sessions:     2 now, 3 peak, 2 connections open
traffic:      3.0 GiB in, 1.5 KiB out
handshakes:   5 full, 41 resumed, 0.2/min
refusals:     clients 1, handshake_rate 4
certificate:  /pki/server.crt: expires in 90d0h (2027-03-05 12:00:00 UTC)
crl:          /pki/crl.pem: UNUSABLE: crl expired
`
	if got := b.String(); got != want {
		t.Errorf("WriteServerStatus:\n%s\nwant:\n%s", got, want)
	}
}

func TestWriteServerStatusShared(t *testing.T) {
	s := ServerStatus{Started: now, Certificate: Expiry{File: "/pki/server.crt", Expires: now.Add(time.Hour)},
		Shared: &Shared{Backend: "127.0.0.1:8443", Tunnel: 3, Relayed: 250, Relaying: 12, Peeking: 4, Refused: 1}}
	var b strings.Builder
	if err := WriteServerStatus(&b, s, now); err != nil {
		t.Fatal(err)
	}
	want := "shared:       port with 127.0.0.1:8443: 3 to the tunnel, 250 relayed (12 open, 4 awaiting a ClientHello, 1 refused, 0 backend errors)\n"
	if got := b.String(); !strings.HasSuffix(got, want) {
		t.Errorf("WriteServerStatus:\n%s\nwant it to end with:\n%s", got, want)
	}
}

func TestWriteServerStatusNoCRLExpiredCert(t *testing.T) {
	s := ServerStatus{Started: now, Certificate: Expiry{File: "c.crt", Expires: now.Add(-2 * time.Hour)}}
	var b strings.Builder
	WriteServerStatus(&b, s, now)
	for _, want := range []string{"refusals: none", "c.crt: EXPIRED 2h00m ago", "crl: none (--crl not set"} {
		if !strings.Contains(squash(b.String()), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
}

// TestWriteClientStatusServers: with several servers, status names the
// one in use and lists them all; with one, no list.
func TestWriteClientStatusServers(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	var b strings.Builder
	WriteClientStatus(&b, ClientStatus{Server: "vpn2.example.com:443", ServerAddr: "192.0.2.2:443",
		Servers: []string{"vpn1.example.com:443", "vpn2.example.com:443"}, State: "up", TUN: "tunnelc0"}, now)
	for _, want := range []string{"server: vpn2.example.com:443 (192.0.2.2:443)\n", "servers: vpn1.example.com:443, vpn2.example.com:443\n"} {
		if !strings.Contains(squash(b.String()), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	WriteClientStatus(&b, ClientStatus{Server: "vpn1.example.com:443", State: "up", TUN: "tunnelc0"}, now)
	if strings.Contains(b.String(), "servers:") {
		t.Errorf("a list of servers for one:\n%s", b.String())
	}
}

func TestWriteSessions(t *testing.T) {
	list := []Session{
		{Identity: "laptop", Addresses: []netip.Addr{netip.MustParseAddr("100.64.0.2"), netip.MustParseAddr("fd00:64::2")},
			Underlay: "198.51.100.7:5123", Since: now.Add(-2*time.Hour - 3*time.Minute), LastHandshake: now.Add(-10 * time.Minute),
			BytesIn: 1 << 30, BytesOut: 3 << 30, RTTMillis: 23.4},
		{Identity: "site-b", Addresses: []netip.Addr{netip.MustParseAddr("100.64.0.3")}, Networks: []netip.Prefix{netip.MustParsePrefix("198.18.20.0/24")},
			Underlay: "203.0.113.9:40100", Since: now.Add(-45 * time.Second), LastHandshake: now.Add(-45 * time.Second), BytesIn: 100},
	}
	var b strings.Builder
	if err := WriteSessions(&b, list, now); err != nil {
		t.Fatal(err)
	}
	want := `IDENTITY  ADDRESSES                   UNDERLAY           CONNECTED  HANDSHAKE   IN       OUT      RTT
laptop    100.64.0.2, fd00:64::2      198.51.100.7:5123  2h03m ago  10m00s ago  1.0 GiB  3.0 GiB  23.4ms
site-b    100.64.0.3 +198.18.20.0/24  203.0.113.9:40100  45s ago    45s ago     100 B    0 B      -
`
	if got := b.String(); got != want {
		t.Errorf("WriteSessions:\n%s\nwant:\n%s", got, want)
	}
	b.Reset()
	WriteSessions(&b, nil, now)
	if b.String() != "no clients connected\n" {
		t.Errorf("WriteSessions(nil) = %q", b.String())
	}
}

func TestWriteClientStatus(t *testing.T) {
	up := ClientStatus{
		Server: "vpn.example.com:443", ServerAddr: "192.0.2.1:443", State: "up", TUN: "tunnelc0",
		Addresses:  []netip.Prefix{netip.MustParsePrefix("100.64.0.2/24")},
		Routes:     []netip.Prefix{netip.MustParsePrefix("198.18.10.0/24")},
		DNS:        []netip.Addr{netip.MustParseAddr("100.64.0.1")},
		KillSwitch: true, FullTunnel: true,
		Since: now.Add(-time.Hour), LastHandshake: now.Add(-5 * time.Minute), RTTMillis: 12.25,
		BytesIn: 2048, BytesOut: 10, Reconnects: 1, Rotations: 2,
	}
	var b strings.Builder
	if err := WriteClientStatus(&b, up, now); err != nil {
		t.Fatal(err)
	}
	want := `server:          vpn.example.com:443 (192.0.2.1:443)
state:           up for 1h00m
tun:             tunnelc0 100.64.0.2/24
routes:          198.18.10.0/24
dns:             100.64.0.1
full tunnel:     on
kill switch:     on
traffic:         2.0 KiB in, 10 B out
last handshake:  5m00s ago
rtt:             12.2ms
reconnects:      1, rotations 2
`
	if got := b.String(); got != want {
		t.Errorf("WriteClientStatus:\n%s\nwant:\n%s", got, want)
	}

	down := ClientStatus{Server: "192.0.2.1:443", State: "backing off", TUN: "tunnelc0", RetryAt: now.Add(8 * time.Second), LastError: "dial: connection refused"}
	b.Reset()
	WriteClientStatus(&b, down, now)
	for _, want := range []string{"state: backing off, next attempt in 8s", "last error: dial: connection refused", "routes: none", "rtt: -"} {
		if !strings.Contains(squash(b.String()), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "proxy") {
		t.Errorf("a status without a proxy mentions one:\n%s", b.String())
	}

	proxied := ClientStatus{Server: "vpn.example.com:443", State: "up", TUN: "tunnelc0",
		Proxy: "http://proxy.example.com:3128", ProxyAddr: "198.18.0.9:3128", ProxyAuth: true}
	b.Reset()
	WriteClientStatus(&b, proxied, now)
	for _, want := range []string{"server: vpn.example.com:443\n", "proxy: http://proxy.example.com:3128 (198.18.0.9:3128), with a user and password\n"} {
		if !strings.Contains(squash(b.String()), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
}

// The JSON field names are the interface scripts use: keep them stable.
func TestJSONNames(t *testing.T) {
	for _, c := range []struct {
		v    any
		want []string
	}{
		{ServerStatus{CRL: &Expiry{}}, []string{`"uptime_seconds"`, `"peak_sessions"`, `"bytes_in"`, `"bytes_out"`, `"handshakes":{"full"`, `"resumed"`, `"per_minute"`, `"refusals"`, `"certificate"`, `"crl"`}},
		{ServerStatus{Shared: &Shared{}}, []string{`"shared":{"backend"`, `"tunnel"`, `"relayed"`, `"relaying"`, `"peeking"`, `"refused"`, `"backend_errors"`}},
		{Session{}, []string{`"identity"`, `"addresses"`, `"underlay"`, `"connected_since"`, `"last_handshake"`, `"bytes_in"`, `"bytes_out"`}},
		{ClientStatus{}, []string{`"server"`, `"state"`, `"addresses"`, `"routes"`, `"dns"`, `"kill_switch"`, `"reconnects"`, `"rotations"`}},
		{ClientStatus{Proxy: "http://p:1", ProxyAddr: "198.18.0.9:1", ProxyAuth: true}, []string{`"proxy":"http://p:1"`, `"proxy_addr"`, `"proxy_auth":true`}},
	} {
		b, err := json.Marshal(c.v)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range c.want {
			if !strings.Contains(string(b), w) {
				t.Errorf("%T JSON lacks %s: %s", c.v, w, b)
			}
		}
	}
	// Unset times are left out rather than printed as year 1.
	b, _ := json.Marshal(ClientStatus{State: "connecting"})
	if strings.Contains(string(b), "0001-01-01") {
		t.Errorf("ClientStatus JSON carries zero times: %s", b)
	}
}

func TestDurationAndBytes(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{{-time.Second, "0s"}, {59 * time.Second, "59s"}, {61 * time.Second, "1m01s"}, {47 * time.Hour, "47h00m"}, {50 * time.Hour, "2d2h"}} {
		if got := Duration(c.d); got != c.want {
			t.Errorf("Duration(%v) = %q, want %q", c.d, got, c.want)
		}
	}
	for _, c := range []struct {
		n    uint64
		want string
	}{{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {5 << 20, "5.0 MiB"}, {1 << 40, "1.0 TiB"}} {
		if got := Bytes(c.n); got != c.want {
			t.Errorf("Bytes(%d) = %q, want %q", c.n, got, c.want)
		}
	}
}

// squash collapses runs of spaces, so checks do not depend on the
// table's column widths.
func squash(s string) string {
	for strings.Contains(s, "  ") {
		s = strings.ReplaceAll(s, "  ", " ")
	}
	return s
}
