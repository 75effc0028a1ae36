package main

import (
	"context"
	"encoding/json"
	"io"
	"time"

	"tlsvpn/cmd/internal/cli"
	"tlsvpn/control"
)

// controlCommands are the tunneld subcommands that ask a running tunneld
// over its control socket.
var controlCommands = map[string]cli.ControlCommand{
	"status": {
		Help: `Show what a running tunneld is doing: uptime, listen address, TUN and tunnel
subnets, sessions now and at peak, bytes from and to clients, sessions
established (full TLS handshakes and resumptions) and their rate over the
last minute, connections refused by reason, and when the server certificate
expires and the CRL needs its next update.`,
		Example: `  $ tunneld status
  version:      v0.4.0 (3f2a9c1)
  uptime:       3h12m (since 2026-12-05 06:35:10 UTC)
  listen:       0.0.0.0:443
  tun:          tunneld0 100.64.0.0/24, fd00:64::/64
  sessions:     2 now, 3 peak, 2 connections open
  traffic:      1.2 GiB in, 3.4 GiB out
  handshakes:   5 full, 41 resumed, 0.2/min
  refusals:     handshake_rate 4
  certificate:  /etc/tlsvpn/pki/vpn.example.com.crt: expires in 362d4h (2027-12-01 09:00:00 UTC)
  crl:          /etc/tlsvpn/pki/crl.pem: next update in 6d23h (2026-12-12 06:30:00 UTC)
`,
		Render: func(w io.Writer, raw json.RawMessage, now time.Time) error {
			var s control.ServerStatus
			if err := json.Unmarshal(raw, &s); err != nil {
				return err
			}
			return control.WriteServerStatus(w, s, now)
		},
	},
	"clients": {
		Help: `List the clients connected to a running tunneld, one session a line: the
certificate name, tunnel addresses (and accepted networks behind it, after
+), the underlay address it connects from, when it connected, when its keys
last changed (TLS handshake or KeyUpdate), IP bytes received from it (IN)
and sent to it (OUT), and the round-trip time of the last keepalive PING
(measured on demand for sessions with none in the last minute; - if none).

With --fleet, on a gateway of a fleet (state: etcd): every client identity
with a session on any gateway, the gateway holding it, and its tunnel
addresses, from the session directory in etcd as this gateway last saw it.`,
		Example: `  $ tunneld clients
  IDENTITY  ADDRESSES                   UNDERLAY           CONNECTED   HANDSHAKE   IN        OUT       RTT
  laptop    100.64.0.2, fd00:64::2      198.51.100.7:5123  2h03m ago   2h03m ago   1.1 GiB   3.0 GiB   23.4ms
  site-b    100.64.0.3 +198.18.20.0/24  203.0.113.9:40100  12m30s ago  12m30s ago  88.2 MiB  12.0 MiB  41.0ms
  $ tunneld clients --fleet
  IDENTITY  GATEWAY         ADDRESSES
  laptop    gw1 (this one)  100.64.0.2, fd00:64::2
  phone     gw2             100.64.0.7
  site-b    gw1 (this one)  100.64.0.3
  3 sessions on 2 gateways
`,
		Switches: []cli.ControlSwitch{{Name: "fleet", Usage: "list the sessions of every gateway of the fleet (state: etcd) and which gateway holds each",
			Render: func(w io.Writer, raw json.RawMessage, _ time.Time) error {
				var list []control.FleetSession
				if err := json.Unmarshal(raw, &list); err != nil {
					return err
				}
				return control.WriteFleetSessions(w, list)
			}}},
		Render: func(w io.Writer, raw json.RawMessage, now time.Time) error {
			var list []control.Session
			if err := json.Unmarshal(raw, &list); err != nil {
				return err
			}
			return control.WriteSessions(w, list, now)
		},
	},
	"reload": {
		Help: `Make a running tunneld re-read its config file (--config), its clients
policy and its --crl, exactly as SIGHUP does, but for this instance only, and
report the result. A file that does not parse or validate changes nothing and
is reported with its error (exit status 1); sessions stay up. Only what
changed is applied; only clients whose own configuration changed reconnect;
settings that need a restart are named and keep their running value.`,
		Example: `  $ tunneld reload
  configuration reloaded from /etc/tlsvpn/tunneld.yaml
  applied: max-clients, route
  client policies reloaded from /etc/tlsvpn/clients.yaml
  3 sessions reconnected for a changed configuration
  revocation list reloaded from /etc/tlsvpn/pki/crl.pem
`,
	},
	"kick": {
		Args:  "NAME",
		NArgs: 1,
		Help: `Close the session of the client whose certificate name is NAME. The client
logs that it was kicked and reconnects after its usual short wait: kick is
for forcing a fresh session (new keys, new configuration); to keep a client
out, revoke its certificate ('tunneld pki revoke') and reload. Exit status 1
if no such client is connected.`,
		Example: `  $ tunneld kick laptop
  closed the session of laptop (100.64.0.2 from 198.51.100.7:5123)
`,
	},
	"drain": {
		Help: `Take a running tunneld out of service without stopping it, before an upgrade
or maintenance: from now on it closes every new connection at once, its
/ready endpoint (on --metrics) answers 503 so that a load balancer stops
sending clients, and it closes the live sessions, 50 a second, with CLOSE
code 12 (draining), gracefully: what is queued is delivered first. Their
clients reconnect at once, to another server of their --server list.
'tunneld status' shows the drain and how many sessions are left; stop the
service when none is. Only a restart ends a drain.`,
		Example: `  $ tunneld drain
  draining: new connections are refused and /ready answers 503; 120 sessions move off, 50 a second ('tunneld status' shows how many are left)
`,
	},
}

// isControlCommand reports whether args name a control subcommand.
func isControlCommand(args []string) bool {
	if len(args) == 0 {
		return false
	}
	_, ok := controlCommands[args[0]]
	return ok
}

// runControlCommand runs 'tunneld status|clients|reload|kick|drain ...'.
func runControlCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := controlCommands[args[0]]
	c.Prog, c.Name, c.DefaultTun = "tunneld", args[0], "tunneld0"
	return cli.RunControl(ctx, c, args[1:], stdout, stderr)
}
