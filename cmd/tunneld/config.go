package main

// tunneld's config file (--config FILE): YAML whose keys are the long flag
// names (conffile), plus the clients policy under "clients:" in place of a
// separate --clients file; the command line overrides the file.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"tlsvpn/cmd/internal/cli"
	"tlsvpn/cmd/internal/conffile"
	"tlsvpn/routing"
	"tlsvpn/routing/bgp"
	"tlsvpn/server"
	"tlsvpn/state"
	"tlsvpn/tun"
	"tlsvpn/tunnel"
)

// fileOptions maps a config file onto tunneld's flags.
var fileOptions = conffile.Options{
	Refuse: map[string]string{
		"config":      "a config file cannot name another one",
		"cleanup":     "it is a one-off action: run 'tunneld --config FILE --cleanup'",
		"cpu-profile": "profiling is for one run: give --cpu-profile on the command line",
	},
	// "clients: FILE" is --clients; a mapping under it is the policy itself.
	Sections: []string{"clients"},
}

// source is where tunneld's settings come from: its command line and,
// with --config, the file. Reading it again is a reload.
type source struct {
	fs *pflag.FlagSet
	o  *options          // the FlagSet's variables
	ov *conffile.Overlay // nil without --config
}

// newSource returns the source of fs, parsed into o.
func newSource(fs *pflag.FlagSet, o *options) *source {
	s := &source{fs: fs, o: o}
	if o.config != "" {
		s.ov = conffile.New(fs, o.config, fileOptions)
	}
	return s
}

// read returns the settings in force: the command line over the config
// file, read now. Without --config they are the command line's, always
// the same.
func (s *source) read() (options, error) {
	var file *conffile.File
	if s.ov != nil {
		var err error
		if file, err = s.ov.Apply(); err != nil {
			return options{}, err
		}
	}
	o := *s.o
	o.congestionSet = s.fs.Changed("congestion")
	o.stateDirSet = s.fs.Changed("state-dir")
	o.file = file
	if file != nil {
		o.clientsNode = file.Sections["clients"]
		if o.clientsNode != nil && s.ov.CommandLine("clients") {
			return options{}, fmt.Errorf("%s:%d: clients: the policy is in the file and --clients %s names another: keep one", file.Path, file.Lines["clients"], o.clients)
		}
	}
	o.values = map[string]string{}
	s.fs.VisitAll(func(f *pflag.Flag) { o.values[f.Name] = f.Value.String() })
	return o, nil
}

// config returns the server configuration of the settings in force, read
// now, or every problem with them, each where it was set. It is the
// server's Options.Source: a reload calls it.
func (s *source) config() (server.Config, error) {
	o, err := s.read()
	if err != nil {
		return server.Config{}, err
	}
	st, errs := parseSettings(o)
	if err := locateAll(o.file, errs); err != nil {
		return server.Config{}, err
	}
	return serverConfig(o, st), nil
}

// serverConfig is the server configuration of o, whose values parse
// into st (parseSettings found no problem).
func serverConfig(o options, st settings) server.Config {
	c := server.Config{
		Listen: o.listen, Cert: o.cert, Key: o.key, CA: o.ca, CRL: o.crl, CRLCheck: o.crlCheck,
		Subnet: st.subnet, Subnet6: st.subnet6, Routes: st.routes, DNS: st.dns, NAT: o.nat, ClientToClient: o.clientToClient,
		TUN: o.tunName, MTU: o.mtu, Keepalive: o.keepalive,
		HandshakeTimeout: o.handshakeTimeout, HelloTimeout: o.helloTimeout, QueueLen: o.queueLen, MaxConnections: o.maxConnections,
		MaxClients: o.maxClients, MaxSessionsPerClient: o.maxSessionsPerID, MaxHandshakes: o.maxHandshakes,
		MaxHandshakesPerSource: o.maxHandshakesPerSrc, ReservedHandshakes: o.reservedHandshakes,
		HandshakeQueue: o.handshakeQueue, HandshakeQueueWait: o.handshakeQueueWait,
		HandshakeRate: o.handshakeRate, HandshakeBurst: o.handshakeBurst,
		NoOffload: o.noOffload, StdlibTLSRecords: o.stdlibRecords, OwnAESGCM: o.ownAESGCM, Metrics: o.metrics,
		Control: o.ctl.Socket(o.tunName), ControlGroup: o.ctl.Group,
		ConfigFile: o.config, Settings: o.values,
		Locate: func(flag string) string { return where(o, flag) },
	}
	c.NoControl = c.Control == ""
	c.BGP = st.bgp
	shareConfig(&c, o.share)
	if o.congestionSet {
		c.Congestion = o.congestion
	}
	if o.stateDirSet {
		c.StateDir, c.MemoryLeases = o.stateDir, o.stateDir == ""
	}
	c.LogLevel.UnmarshalText([]byte(o.logLevel)) // checked by parseSettings
	if c.State = o.state; o.state == server.StateEtcd {
		c.Etcd = o.etcdOptions()
		c.ParsePolicy = parseClients // the fleet's policy, published in etcd
	}
	if o.hasPolicy() {
		c.Policy, c.PolicySource = o.loadPolicy, o.policySource()
	}
	return c
}

// where names where flag was set: the config file's line or the command
// line.
func where(o options, flag string) string {
	if w := o.file.Line(flag); w != "" {
		return w + ": " + flag
	}
	return "--" + flag
}

// stateDirOf returns the state directory of the instance: --state-dir as
// given if set (also ""), else the default of its --tun.
func stateDirOf(o options) string {
	if o.stateDirSet {
		return o.stateDir
	}
	return server.DefaultStateDir(o.tunName)
}

// hasPolicy reports whether a clients policy is configured (a file or a
// clients mapping in the config file).
func (o options) hasPolicy() bool { return o.clients != "" || o.clientsNode != nil }

// loadPolicy reads the clients policy against the address pools: nil
// without one.
func (o options) loadPolicy(pool, pool6 state.Leases) (clientPolicies, error) {
	switch {
	case o.clientsNode != nil:
		return parseClientsNode(o.config, o.clientsNode, pool, pool6)
	case o.clients != "":
		return loadClients(o.clients, pool, pool6)
	}
	return nil, nil
}

// policySource names where the clients policy comes from, for logs.
func (o options) policySource() string {
	if o.clientsNode != nil {
		return o.file.Line("clients")
	}
	return o.clients
}

// settings are tunneld's flag values that are parsed into something
// other than themselves.
type settings struct {
	subnet, subnet6 netip.Prefix // subnet6 invalid: IPv4 only
	routes          []netip.Prefix
	dns             []netip.Addr
	bgp             *bgp.Config // nil: no BGP
}

// parseSettings checks every value of o that needs no file and no system
// call, and parses what it must. It returns every problem, each a
// *conffile.FlagError (which o.file.Locate places in the config file).
func parseSettings(o options) (settings, []error) {
	var st settings
	var errs []error
	bad := func(flag, format string, args ...any) { errs = append(errs, conffile.Flagf(flag, format, args...)) }
	for _, req := range []struct{ flag, val, example string }{
		{"cert", o.cert, "/etc/tlsvpn/pki/vpn.example.com.crt"},
		{"key", o.key, "/etc/tlsvpn/pki/vpn.example.com.key"},
		{"ca", o.ca, "/etc/tlsvpn/pki/ca.crt"},
	} {
		if req.val == "" {
			bad(req.flag, "required, e.g. %s (create it with 'tunneld pki')", req.example)
		}
	}
	var err error
	st.subnet, err = netip.ParsePrefix(o.subnet)
	switch {
	case err != nil || !st.subnet.Addr().Is4():
		bad("subnet", "%q: want an IPv4 CIDR such as 100.64.0.0/24", o.subnet)
	default:
		st.subnet = st.subnet.Masked()
		if _, err := routing.NewPool(st.subnet); err != nil {
			bad("subnet", "%v", err)
		}
	}
	if o.subnet6 != "" {
		st.subnet6, err = netip.ParsePrefix(o.subnet6)
		switch {
		case err != nil || !st.subnet6.Addr().Is6() || st.subnet6.Addr().Is4In6():
			bad("subnet6", "%q: want an IPv6 CIDR such as fd00:64::/64", o.subnet6)
			st.subnet6 = netip.Prefix{}
		default:
			st.subnet6 = st.subnet6.Masked()
			if _, err := routing.NewPool(st.subnet6); err != nil {
				bad("subnet6", "%v", err)
			}
		}
	}
	for _, r := range o.routes {
		p, err := netip.ParsePrefix(r)
		if err != nil {
			bad("route", "%q: want a CIDR such as 198.18.10.0/24", r)
			continue
		}
		st.routes = append(st.routes, p.Masked())
	}
	if len(o.routes) > tunnel.MaxRoutes {
		bad("route", "%d routes, at most %d", len(o.routes), tunnel.MaxRoutes)
	}
	for _, d := range o.dns {
		a, err := netip.ParseAddr(d)
		if err != nil || a.Zone() != "" {
			bad("dns", "%q: want an IP address such as 100.64.0.1", d)
			continue
		}
		st.dns = append(st.dns, a.Unmap())
	}
	if len(o.dns) > tunnel.MaxDNS {
		bad("dns", "%d servers, at most %d", len(o.dns), tunnel.MaxDNS)
	}
	if o.mtu < 576 || o.mtu > tun.MaxPacketSize {
		bad("mtu", "%d: want 576 to %d", o.mtu, tun.MaxPacketSize)
	}
	if err := checkHostPort(o.listen); err != nil {
		bad("listen", "%q: %v", o.listen, err)
	}
	if o.metrics != "" {
		if err := checkHostPort(o.metrics); err != nil {
			bad("metrics", "%q: %v", o.metrics, err)
		}
	}
	if err := checkIfname(o.tunName); err != nil {
		bad("tun", "%q: %v", o.tunName, err)
	}
	if _, err := cli.NewLogger(io.Discard, o.logLevel, "text"); err != nil {
		bad("log-level", "%q: want debug, info, warn or error", o.logLevel)
	}
	if f := strings.ToLower(o.logFormat); f != "text" && f != "json" {
		bad("log-format", "%q: want text or json", o.logFormat)
	}
	if _, _, err := cli.Congestion(o.congestion, o.congestionSet); err != nil {
		bad("congestion", "%v", err)
	}
	st.bgp = parseBGP(o.bgp, o.listen, bad)
	checkShare(o.share, bad)
	errs = append(errs, fleetSettings(o)...)
	return st, errs
}

// checkHostPort checks an ADDR:PORT to listen on.
func checkHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("want ADDR:PORT, e.g. 0.0.0.0:443 or [2001:db8::1]:443")
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("port %q: want a number up to 65535", port)
	}
	return nil
}

// checkIfname checks a network interface name as Linux does (dev_valid_name).
func checkIfname(s string) error {
	switch {
	case s == "" || s == "." || s == "..":
		return errors.New("not an interface name")
	case len(s) > 15:
		return errors.New("longer than 15 bytes, the kernel's limit")
	case strings.ContainsAny(s, "/: \t\n"):
		return errors.New("an interface name cannot hold '/', ':' or spaces")
	}
	return nil
}

// locateAll renders errs for the user, each where it was set, one a line.
func locateAll(file *conffile.File, errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	lines := make([]string, len(errs))
	for i, err := range errs {
		lines[i] = file.Locate(err)
	}
	return errors.New(strings.Join(lines, "\n"))
}

// fileState is what options carry about the config file.
type fileState struct {
	config      string            // --config FILE
	file        *conffile.File    // the file as last read; nil without --config
	clientsNode *yaml.Node        // the clients mapping in the file, if any
	values      map[string]string // every flag's value, by name, as last read (for the reload's diff)
}
