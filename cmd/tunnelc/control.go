package main

import (
	"encoding/json"
	"io"
	"time"

	"tlsvpn/cmd/internal/cli"
	"tlsvpn/control"
)

// statusCommand is 'tunnelc status': it asks a running tunnelc over its
// control socket.
var statusCommand = cli.ControlCommand{
	Prog: "tunnelc", Name: "status", DefaultTun: "tunnelc0", ProfileDir: DefaultProfileDir,
	Help: `Show what a running tunnelc is doing: the server (and the address it
connected to; with several --server, the one in use and then all of them
on the servers line), its state (connecting, up, backing off with the time of the
next attempt and the last error), the tunnel addresses, routes and DNS
servers it installed, whether the full tunnel and kill switch are on, a
captive portal in the way (its URL, and until when the kill switch lets DNS
and TCP 80/443 out of the physical interface for logging in), IP
bytes received from and sent to the server, when the session's keys last
changed (TLS handshake or KeyUpdate), the keepalive round-trip time, and how
often it reconnected and rotated sessions.`,
	Example: `  $ tunnelc status
  server:          vpn.example.com:443 (192.0.2.1:443)
  state:           up for 2h03m
  tun:             tunnelc0 100.64.0.2/24, fd00:64::2/64
  routes:          198.18.10.0/24
  dns:             100.64.0.1
  full tunnel:     off
  kill switch:     off
  traffic:         3.0 GiB in, 1.1 GiB out
  last handshake:  2h03m ago
  rtt:             23.4ms
  reconnects:      1, rotations 0
`,
	Render: func(w io.Writer, raw json.RawMessage, now time.Time) error {
		var s control.ClientStatus
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		return control.WriteClientStatus(w, s, now)
	},
}

// reconnectCommand is 'tunnelc reconnect [SERVER]'.
var reconnectCommand = cli.ControlCommand{
	Prog: "tunnelc", Name: "reconnect", Args: "[SERVER]", NArgs: 1, ArgsOptional: true, DefaultTun: "tunnelc0",
	Help: `Make a running tunnelc open a new session now: the current one is replaced
(a tunnelc waiting to retry tries at once). With SERVER, one of its --server
values exactly as given, that server is tried first, e.g. to move back to
the usual one after a failover; without, a tunnelc with several servers
tries the others before the one in use, and one with a single server
reconnects to it. The tunnel's routes and addresses stay in place while it
reconnects. tunnelc keeps a server it moved to until that one fails or it is
told again.`,
	Example: `  $ tunnelc reconnect vpn1.example.com:443
  reconnecting to vpn1.example.com:443 first
`,
}
