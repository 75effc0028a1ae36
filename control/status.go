package control

import (
	"fmt"
	"io"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// ServerStatus is tunneld's answer to "status".
type ServerStatus struct {
	Version      string         `json:"version,omitempty"`
	Started      time.Time      `json:"started"`
	Uptime       float64        `json:"uptime_seconds"`
	Listen       string         `json:"listen"`
	TUN          string         `json:"tun"`
	Subnets      []netip.Prefix `json:"subnets"`
	Sessions     int            `json:"sessions"`
	PeakSessions int            `json:"peak_sessions"`
	Connections  int            `json:"connections"` // open: handshaking or in a session
	BytesIn      uint64         `json:"bytes_in"`    // IP bytes received from clients
	BytesOut     uint64         `json:"bytes_out"`   // IP bytes sent to clients
	Handshakes   Handshakes     `json:"handshakes"`
	// Refusals counts connections refused, by reason (limits, failed
	// handshakes, networks refused to clients); reasons with no refusal
	// are left out.
	Refusals    map[string]uint64 `json:"refusals"`
	Certificate Expiry            `json:"certificate"`
	CRL         *Expiry           `json:"crl,omitempty"` // nil without --crl
	BGP         *BGPStatus        `json:"bgp,omitempty"` // nil without --bgp-asn
	// DrainingSince is when 'tunneld drain' took the gateway out of
	// service (zero: it is in service).
	DrainingSince time.Time `json:"draining_since,omitzero"`
	// Shared is the port shared with a web server; nil without
	// --share-backend.
	Shared *Shared `json:"shared,omitempty"`
	// Store is the shared state store of a fleet (state: etcd); nil for
	// a gateway on its own.
	Store *StoreStatus `json:"store,omitempty"`
}

// BGPStatus is what the gateway announces over BGP, and to whom.
type BGPStatus struct {
	Routes int       `json:"routes"` // prefixes announced now
	Peers  []BGPPeer `json:"peers"`
}

// BGPPeer is one router the gateway announces to.
type BGPPeer struct {
	Peer  string    `json:"peer"`  // ASN@ADDRESS
	State string    `json:"state"` // established, active, idle, ...
	Since time.Time `json:"since,omitzero"`
}

// Shared counts what the port shared with a web server (tunneld
// --share-backend) did since start.
type Shared struct {
	Backend  string `json:"backend"`
	Tunnel   uint64 `json:"tunnel"`   // connections that offered the VPN's ALPN
	Relayed  uint64 `json:"relayed"`  // connections relayed to the backend
	Relaying int64  `json:"relaying"` // relays open now
	Peeking  int64  `json:"peeking"`  // connections whose ClientHello is awaited now
	// Refused counts connections closed because every relay was taken
	// (--share-max-conns); BackendErrors, those the backend did not
	// take.
	Refused       uint64 `json:"refused"`
	BackendErrors uint64 `json:"backend_errors"`
}

// StoreStatus is the health of a fleet's state store as one gateway sees
// it.
type StoreStatus struct {
	Backend   string    `json:"backend"` // "etcd"
	Gateway   string    `json:"gateway"` // this gateway's name in the fleet
	Endpoints []string  `json:"endpoints"`
	Up        bool      `json:"up"`
	Since     time.Time `json:"since"`           // when Up last changed
	Error     string    `json:"error,omitempty"` // why it is down
	// Refusals counts new clients and address moves refused while the
	// store was down.
	Refusals uint64 `json:"refusals"`
	// LeaseLost counts the outages longer than the gateway's etcd lease
	// TTL, after which its claims were written again.
	LeaseLost uint64 `json:"lease_lost"`
	// FleetSessions is the number of identities with a session on any
	// gateway, as last seen in the store.
	FleetSessions int `json:"fleet_sessions"`
	// Gateways are the fleet's live gateways (this one included) and the
	// sessions each holds, by name.
	Gateways []FleetGateway `json:"gateways"`
}

// FleetGateway is one gateway of a fleet in 'tunneld status'.
type FleetGateway struct {
	Name     string `json:"name"`
	Sessions int    `json:"sessions"`
}

// Handshakes counts sessions established since start, and their rate.
type Handshakes struct {
	Full    uint64 `json:"full"`    // with a certificate exchange
	Resumed uint64 `json:"resumed"` // TLS session resumption
	// PerMinute is the rate of established sessions over the last
	// minute (over the uptime while it is shorter).
	PerMinute float64 `json:"per_minute"`
}

// Expiry names a file and when what it holds stops being valid.
type Expiry struct {
	File    string    `json:"file"`
	Expires time.Time `json:"expires,omitzero"` // certificate NotAfter or CRL NextUpdate
	Error   string    `json:"error,omitempty"`  // the CRL is unusable: why
}

// Session is one line of tunneld's answer to "clients".
type Session struct {
	Identity      string         `json:"identity"`
	Addresses     []netip.Addr   `json:"addresses"`
	Networks      []netip.Prefix `json:"networks,omitempty"` // accepted networks behind the client
	Underlay      string         `json:"underlay"`           // the client's address and port
	Since         time.Time      `json:"connected_since"`
	LastHandshake time.Time      `json:"last_handshake"` // TLS handshake or KeyUpdate
	BytesIn       uint64         `json:"bytes_in"`       // received from the client
	BytesOut      uint64         `json:"bytes_out"`      // sent to the client
	RTTMillis     float64        `json:"rtt_ms,omitempty"`
}

// ClientStatus is tunnelc's answer to "status".
type ClientStatus struct {
	Server        string         `json:"server"`                // --server as given (the one in use, with several)
	Servers       []string       `json:"servers,omitempty"`     // every --server, when there are several
	ServerAddr    string         `json:"server_addr,omitempty"` // address of the current (or last) connection; "" through a proxy
	State         string         `json:"state"`                 // connecting, up, backing off
	TUN           string         `json:"tun"`
	Addresses     []netip.Prefix `json:"addresses"`
	Routes        []netip.Prefix `json:"routes"`
	DNS           []netip.Addr   `json:"dns"`
	FullTunnel    bool           `json:"full_tunnel"`
	KillSwitch    bool           `json:"kill_switch"`
	Since         time.Time      `json:"connected_since,omitzero"`
	LastHandshake time.Time      `json:"last_handshake,omitzero"`
	RTTMillis     float64        `json:"rtt_ms,omitempty"`
	BytesIn       uint64         `json:"bytes_in"`  // received from the server
	BytesOut      uint64         `json:"bytes_out"` // sent to the server
	Reconnects    uint64         `json:"reconnects"`
	Rotations     uint64         `json:"rotations"`
	RetryAt       time.Time      `json:"retry_at,omitzero"` // backing off: next attempt
	LastError     string         `json:"last_error,omitempty"`
	Portal        *PortalStatus  `json:"portal,omitempty"` // a captive portal in the way; nil: none known

	// Proxy is the proxy the connection goes through (--proxy or the
	// environment), as a URL without the credentials; "" for none.
	Proxy     string `json:"proxy,omitempty"`
	ProxyAddr string `json:"proxy_addr,omitempty"` // the proxy's address of the current (or last) connection
	ProxyAuth bool   `json:"proxy_auth,omitempty"` // tunnelc authenticates to the proxy with a user and password
}

// PortalStatus is the captive portal tunnelc found in the way to the
// server, and the hole its kill switch opened for logging in.
type PortalStatus struct {
	URL       string    `json:"url"`                 // the portal's page (the probe's redirect, or the probe URL)
	Interface string    `json:"interface,omitempty"` // the physical interface probed (and opened)
	Detected  time.Time `json:"detected_at"`
	// OpenUntil is when the kill switch's hole (DNS, TCP 80 and 443 out of
	// Interface) closes; zero when it is closed.
	OpenUntil time.Time `json:"open_until,omitzero"`
}

// WriteServerStatus renders s for a person; now is the time ages and
// countdowns are measured from.
func WriteServerStatus(w io.Writer, s ServerStatus, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) {
		fmt.Fprintf(tw, "%s:\t"+format+"\n", append([]any{k}, args...)...)
	}
	if s.Version != "" {
		row("version", "%s", s.Version)
	}
	row("uptime", "%s (since %s)", Duration(now.Sub(s.Started)), stamp(s.Started))
	row("listen", "%s", s.Listen)
	row("tun", "%s", strings.TrimSpace(s.TUN+" "+joinList(s.Subnets)))
	if !s.DrainingSince.IsZero() {
		row("state", "draining for %s: new connections refused, %d sessions left", Duration(now.Sub(s.DrainingSince)), s.Sessions)
	}
	row("sessions", "%d now, %d peak, %d connections open", s.Sessions, s.PeakSessions, s.Connections)
	row("traffic", "%s in, %s out", Bytes(s.BytesIn), Bytes(s.BytesOut))
	row("handshakes", "%d full, %d resumed, %.1f/min", s.Handshakes.Full, s.Handshakes.Resumed, s.Handshakes.PerMinute)
	row("refusals", "%s", refusals(s.Refusals))
	row("certificate", "%s", expiry(s.Certificate, now, "expires"))
	if s.CRL != nil {
		row("crl", "%s", expiry(*s.CRL, now, "next update"))
	} else {
		row("crl", "none (--crl not set: revoked certificates are not refused)")
	}
	if s.BGP != nil {
		row("bgp", "%d routes announced", s.BGP.Routes)
		for _, p := range s.BGP.Peers {
			since := ""
			if !p.Since.IsZero() {
				since = fmt.Sprintf(" for %s", Duration(now.Sub(p.Since)))
			}
			row("  peer "+p.Peer, "%s%s", p.State, since)
		}
	}
	if sh := s.Shared; sh != nil {
		row("shared", "port with %s: %d to the tunnel, %d relayed (%d open, %d awaiting a ClientHello, %d refused, %d backend errors)",
			sh.Backend, sh.Tunnel, sh.Relayed, sh.Relaying, sh.Peeking, sh.Refused, sh.BackendErrors)
	}
	if st := s.Store; st != nil {
		health := fmt.Sprintf("up for %s", Duration(now.Sub(st.Since)))
		if !st.Up {
			health = fmt.Sprintf("UNREACHABLE for %s (%s): live sessions and known clients kept, new clients refused", Duration(now.Sub(st.Since)), st.Error)
		}
		row("store", "%s %s as gateway %q: %s", st.Backend, strings.Join(st.Endpoints, ","), st.Gateway, health)
		gws := make([]string, len(st.Gateways))
		for i, g := range st.Gateways {
			gws[i] = fmt.Sprintf("%s (%d)", g.Name, g.Sessions)
		}
		row("fleet", "%d sessions on %d gateways: %s; %d refused for want of the store, lease lost %d times",
			st.FleetSessions, len(st.Gateways), strings.Join(gws, ", "), st.Refusals, st.LeaseLost)
	}
	return tw.Flush()
}

// WriteSessions renders tunneld's client list as a table, one session a
// line.
func WriteSessions(w io.Writer, list []Session, now time.Time) error {
	if len(list) == 0 {
		_, err := fmt.Fprintln(w, "no clients connected")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "IDENTITY\tADDRESSES\tUNDERLAY\tCONNECTED\tHANDSHAKE\tIN\tOUT\tRTT")
	for _, s := range list {
		addrs := joinList(s.Addresses)
		if len(s.Networks) > 0 {
			addrs += " +" + joinList(s.Networks)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s ago\t%s ago\t%s\t%s\t%s\n", s.Identity, addrs, s.Underlay,
			Duration(now.Sub(s.Since)), Duration(now.Sub(s.LastHandshake)), Bytes(s.BytesIn), Bytes(s.BytesOut), rtt(s.RTTMillis))
	}
	return tw.Flush()
}

// WriteClientStatus renders tunnelc's status for a person.
func WriteClientStatus(w io.Writer, s ClientStatus, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) {
		fmt.Fprintf(tw, "%s:\t"+format+"\n", append([]any{k}, args...)...)
	}
	server := s.Server
	if s.ServerAddr != "" && s.ServerAddr != s.Server {
		server += " (" + s.ServerAddr + ")"
	}
	row("server", "%s", server)
	if len(s.Servers) > 1 {
		row("servers", "%s", strings.Join(s.Servers, ", "))
	}
	if s.Proxy != "" {
		proxy := s.Proxy
		if s.ProxyAddr != "" && !strings.HasSuffix(s.Proxy, "://"+s.ProxyAddr) {
			proxy += " (" + s.ProxyAddr + ")"
		}
		if s.ProxyAuth {
			proxy += ", with a user and password"
		}
		row("proxy", "%s", proxy)
	}
	state := s.State
	switch {
	case s.State == "up" && !s.Since.IsZero():
		state += " for " + Duration(now.Sub(s.Since))
	case !s.RetryAt.IsZero() && s.RetryAt.After(now):
		state += ", next attempt in " + Duration(s.RetryAt.Sub(now))
	}
	row("state", "%s", state)
	if s.LastError != "" && s.State != "up" {
		row("last error", "%s", s.LastError)
	}
	if p := s.Portal; p != nil {
		switch {
		case !p.OpenUntil.IsZero() && p.OpenUntil.After(now):
			row("captive portal", "%s: DNS and TCP 80/443 open on %s for %s more", p.URL, p.Interface, Duration(p.OpenUntil.Sub(now)))
		case s.KillSwitch:
			row("captive portal", "%s (detected %s ago): the kill switch's hole is closed", p.URL, Duration(now.Sub(p.Detected)))
		default:
			row("captive portal", "%s (detected %s ago): log in with a browser", p.URL, Duration(now.Sub(p.Detected)))
		}
	}
	row("tun", "%s", strings.TrimSpace(s.TUN+" "+joinList(s.Addresses)))
	row("routes", "%s", orNone(joinList(s.Routes)))
	row("dns", "%s", orNone(joinList(s.DNS)))
	row("full tunnel", "%s", onOff(s.FullTunnel))
	row("kill switch", "%s", onOff(s.KillSwitch))
	row("traffic", "%s in, %s out", Bytes(s.BytesIn), Bytes(s.BytesOut))
	if !s.LastHandshake.IsZero() {
		row("last handshake", "%s ago", Duration(now.Sub(s.LastHandshake)))
	}
	row("rtt", "%s", rtt(s.RTTMillis))
	row("reconnects", "%d, rotations %d", s.Reconnects, s.Rotations)
	return tw.Flush()
}

// Duration renders d the way people read ages: 45s, 12m30s, 3h12m, 4d2h.
func Duration(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

// Bytes renders n with a binary unit: 512 B, 1.5 KiB, 3.2 GiB.
func Bytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/unit, 0
	for v >= unit && i < 5 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTPE"[i])
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }

func joinList[T fmt.Stringer](xs []T) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = x.String()
	}
	return strings.Join(parts, ", ")
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func rtt(ms float64) string {
	if ms <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fms", ms)
}

func refusals(m map[string]uint64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
	}
	return orNone(strings.Join(parts, ", "))
}

func expiry(e Expiry, now time.Time, verb string) string {
	if e.Error != "" {
		return fmt.Sprintf("%s: UNUSABLE: %s", e.File, e.Error)
	}
	left := e.Expires.Sub(now)
	if left < 0 {
		return fmt.Sprintf("%s: EXPIRED %s ago (%s)", e.File, Duration(-left), stamp(e.Expires))
	}
	return fmt.Sprintf("%s: %s in %s (%s)", e.File, verb, Duration(left), stamp(e.Expires))
}
