package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"reflect"
	"time"

	"tlsvpn/control"
	"tlsvpn/routing/bgp"
	"tlsvpn/state"
	"tlsvpn/tun"
	"tlsvpn/tunnel"
)

// Defaults of the settings whose zero value in Config means the default.
const (
	DefaultListen = "0.0.0.0:443"
	DefaultTUN    = "tunneld0"
	DefaultMTU    = 1500
)

// DefaultSubnet is the tunnel subnet of a Config without one.
var DefaultSubnet = netip.MustParsePrefix("100.64.0.0/24")

// Config is the configuration of a server. Each field has the meaning of
// the tunneld flag named in its tag (see 'tunneld --help'); where the
// comment says so, the zero value means the flag's default. The values
// are taken as they are: tunneld's main checks them with their flag names
// and config file lines first, and New only refuses what cannot run.
type Config struct {
	Listen string `flag:"listen"` // TCP ADDR:PORT; "": DefaultListen
	Cert   string `flag:"cert"`   // server certificate file (PEM); required
	Key    string `flag:"key"`    // its private key file; required
	CA     string `flag:"ca"`     // CA file client certificates chain to; required
	CRL    string `flag:"crl"`    // revocation list file; "": none
	// CRLCheck is how often the CRL file is looked at and live sessions
	// re-checked (at least every 100ms; tunneld's default is 5s).
	CRLCheck time.Duration `flag:"crl-check"`

	Subnet         netip.Prefix   `flag:"subnet"`           // IPv4 tunnel subnet; zero: DefaultSubnet
	Subnet6        netip.Prefix   `flag:"subnet6"`          // IPv6 tunnel subnet; zero: IPv4 only
	Routes         []netip.Prefix `flag:"route"`            // pushed to clients
	DNS            []netip.Addr   `flag:"dns"`              // pushed to clients
	NAT            bool           `flag:"nat"`              // masquerade the tunnel subnets
	ClientToClient bool           `flag:"client-to-client"` // the default of reach_clients
	// Policy reads the clients policy against the address pools (pool6
	// nil without Subnet6); it is called at start and on every reload.
	// nil: no policy.
	Policy func(pool, pool6 state.Leases) (Policies, error)
	// PolicySource names the policy for logs (a file, or file:line).
	PolicySource string `flag:"clients"`
	// ParsePolicy reads a clients policy published in the fleet's store
	// (state: etcd; the YAML of a --clients file) against the address
	// pools; errors name lines ("line 3: ..."). While one is published it
	// is in force instead of Policy (see fleet_policy.go). nil: a
	// published policy is refused.
	ParsePolicy func(data []byte, pool, pool6 state.Leases) (Policies, error)

	TUN       string        `flag:"tun"`       // interface name, and the instance's; "": DefaultTUN
	MTU       int           `flag:"mtu"`       // 0: DefaultMTU
	Keepalive time.Duration `flag:"keepalive"` // pushed to clients; 0 disables (tunneld's default is 15s)
	// StateDir keeps the leases; "": StateRoot/TUN. MemoryLeases keeps
	// them in memory only (tunneld --state-dir "").
	StateDir     string `flag:"state-dir"`
	MemoryLeases bool
	// State is where the state a fleet shares lives: "" or StateFile, this
	// gateway alone (leases in StateDir); StateEtcd, the etcd cluster of
	// Etcd, shared with the other gateways (see fleet.go).
	State string `flag:"state"`
	// Etcd are the store's settings with StateEtcd (flags etcd-*,
	// gateway-name); Logger is the server's.
	Etcd state.EtcdOptions

	HandshakeTimeout       time.Duration `flag:"handshake-timeout"` // 0: 10s
	HelloTimeout           time.Duration `flag:"hello-timeout"`     // 0: 2s
	QueueLen               int           `flag:"queue-len"`         // 0: tunnel.DefaultQueueLen
	MaxConnections         int           `flag:"max-connections"`   // 0: from the descriptor limit; -1: none
	MaxClients             int           `flag:"max-clients"`       // this and the limits below: 0 is tunnel's default
	MaxSessionsPerClient   int           `flag:"max-sessions-per-client"`
	MaxHandshakes          int           `flag:"max-handshakes"`
	MaxHandshakesPerSource int           `flag:"max-handshakes-per-source"`
	ReservedHandshakes     int           `flag:"reserved-handshakes"`
	HandshakeQueue         int           `flag:"handshake-queue"`
	HandshakeQueueWait     time.Duration `flag:"handshake-queue-wait"`
	HandshakeRate          float64       `flag:"handshake-rate"`
	HandshakeBurst         int           `flag:"handshake-burst"`

	NoOffload        bool   `flag:"no-offload"`
	StdlibTLSRecords bool   `flag:"stdlib-tls-records"`
	OwnAESGCM        bool   `flag:"own-aes-gcm"`
	Congestion       string `flag:"congestion"` // "": bbr, else the system's (with a warning); "system": the system's
	Metrics          string `flag:"metrics"`    // Prometheus ADDR:PORT; "": off

	// ShareBackend shares the listen port with a web server: connections
	// that do not offer the VPN's ALPN are relayed to this TCP ADDR:PORT
	// (see transport.ShareListener); "": not shared.
	ShareBackend       string        `flag:"share-backend"`
	ShareProxyProtocol bool          `flag:"share-proxy-protocol"` // PROXY v2 header to the backend
	ShareMaxConns      int           `flag:"share-max-conns"`      // relays open at once; 0: the default, -1: no cap
	ShareIdleTimeout   time.Duration `flag:"share-idle-timeout"`   // 0: the default

	Control      string `flag:"control"` // control socket; "": control.DefaultPath(TUN)
	NoControl    bool   // no control socket (tunneld --control "")
	ControlGroup string `flag:"control-group"` // see control.Options.Group

	LogLevel slog.Level `flag:"log-level"` // applied on reload to Options.Level

	// BGP, if set, announces each client's tunnel addresses (and the
	// networks accepted behind it) to routers while its session is here
	// (tunneld --bgp-asn and the other --bgp- flags; restart only).
	BGP *bgp.Config

	// ConfigFile names where the settings come from, for messages ("":
	// the command line).
	ConfigFile string `flag:"config"`
	// Settings are every setting's value by its flag name, as the
	// operator wrote it: a reload compares them to find what changed,
	// names them, and warns about those that need a restart (all but the
	// live ones, also settings only tunneld's main knows). nil: the
	// tagged fields of Config, printed.
	Settings map[string]string
	// Locate names where a setting was set, e.g. "tunneld.yaml:5: crl";
	// nil: "--crl".
	Locate func(flag string) string
}

// withDefaults fills in the defaults of zero fields.
func (c Config) withDefaults() Config {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if !c.Subnet.IsValid() {
		c.Subnet = DefaultSubnet
	}
	if c.TUN == "" {
		c.TUN = DefaultTUN
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.Control == "" && !c.NoControl {
		c.Control = control.DefaultPath(c.TUN)
	}
	return c
}

// validate refuses what cannot run (tunneld's main says the same with
// flag names and file lines before New is called).
func (c Config) validate() error {
	var errs []error
	if c.Cert == "" || c.Key == "" || c.CA == "" {
		errs = append(errs, errors.New("a certificate, its key and a CA are required"))
	}
	if !c.Subnet.Addr().Is4() {
		errs = append(errs, fmt.Errorf("subnet %v: want IPv4", c.Subnet))
	}
	if c.Subnet6.IsValid() && (!c.Subnet6.Addr().Is6() || c.Subnet6.Addr().Is4In6()) {
		errs = append(errs, fmt.Errorf("subnet6 %v: want IPv6", c.Subnet6))
	}
	if c.MTU < 576 || c.MTU > tun.MaxPacketSize {
		errs = append(errs, fmt.Errorf("MTU %d: want 576 to %d", c.MTU, tun.MaxPacketSize))
	}
	if len(c.Routes) > tunnel.MaxRoutes || len(c.DNS) > tunnel.MaxDNS {
		errs = append(errs, fmt.Errorf("at most %d routes and %d DNS servers", tunnel.MaxRoutes, tunnel.MaxDNS))
	}
	if err := c.validateFleet(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// settings returns c.Settings, or without them the tagged fields printed.
func (c Config) settings() map[string]string {
	if c.Settings != nil {
		return c.Settings
	}
	out := map[string]string{}
	v, t := reflect.ValueOf(c), reflect.TypeFor[Config]()
	for i := range t.NumField() {
		if name := t.Field(i).Tag.Get("flag"); name != "" {
			out[name] = fmt.Sprint(v.Field(i).Interface())
		}
	}
	return out
}

// where names where flag was set: the config file's line or the command
// line.
func (c Config) where(flag string) string {
	if c.Locate != nil {
		return c.Locate(flag)
	}
	return "--" + flag
}

// StateRoot holds each instance's state directory; before instances had
// their own, it was the one state directory of every tunneld.
const StateRoot = "/var/lib/tlsvpn"

// stateDir returns the state directory of the instance ("": leases in
// memory only).
func (c Config) stateDir() string {
	switch {
	case c.MemoryLeases:
		return ""
	case c.StateDir != "":
		return c.StateDir
	}
	return DefaultStateDir(c.TUN)
}

// DefaultStateDir is the state directory of the instance whose TUN is tun
// when none is configured.
func DefaultStateDir(tun string) string { return filepath.Join(StateRoot, tun) }

// limitConfig is the Limiter configuration of c.
func (c Config) limitConfig() tunnel.LimitConfig {
	return tunnel.LimitConfig{
		MaxClients:             c.MaxClients,
		MaxSessionsPerIdentity: c.MaxSessionsPerClient,
		MaxHandshakes:          c.MaxHandshakes,
		MaxHandshakesPerSource: c.MaxHandshakesPerSource,
		ReservedHandshakes:     c.ReservedHandshakes,
		MaxQueued:              c.HandshakeQueue,
		MaxQueueWait:           c.HandshakeQueueWait,
		HandshakeRate:          c.HandshakeRate,
		HandshakeBurst:         c.HandshakeBurst,
	}
}

// needsForwarding reports whether c has the server forward between the
// tunnel and other networks (IP forwarding, the nftables table).
func (c Config) needsForwarding() bool {
	// A fleet's clients policy may be published in etcd at any time.
	return len(c.Routes) > 0 || c.NAT || c.Policy != nil || c.ClientToClient || c.State == StateEtcd
}

// tunnelSubnets lists the tunnel subnets (Subnet6 only when valid).
func (c Config) tunnelSubnets() []netip.Prefix {
	out := []netip.Prefix{c.Subnet}
	if c.Subnet6.IsValid() {
		out = append(out, c.Subnet6)
	}
	return out
}
