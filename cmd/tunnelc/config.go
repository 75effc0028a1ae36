package main

// tunnelc's config file (--config FILE, or --profile NAME for
// DIR/NAME.yaml): YAML whose keys are the long flag names (conffile); the
// command line overrides the file. 'tunnelc check' validates it without
// connecting, 'tunnelc profiles' lists the profiles.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"tlsvpn/certs"
	"tlsvpn/client"
	"tlsvpn/cmd/internal/cli"
	"tlsvpn/cmd/internal/conffile"
	"tlsvpn/tunnel"
)

// DefaultProfileDir holds one config file per server: NAME.yaml is
// 'tunnelc --profile NAME'.
const DefaultProfileDir = "/etc/tlsvpn/client"

// fileOptions maps a config file onto tunnelc's flags.
var fileOptions = conffile.Options{
	Refuse: map[string]string{
		"config":      "a config file cannot name another one",
		"profile":     "a profile is a config file: it cannot name another one",
		"profile-dir": "a profile is a config file: it cannot name another one",
		"cleanup":     "it is a one-off action: run 'tunnelc --config FILE --cleanup'",
		"cpu-profile": "profiling is for one run: give --cpu-profile on the command line",
	},
}

// profileName is what a profile may be called: a file name, no path.
var profileName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)

// configPath returns the config file of o: --config, or the file of
// --profile (not both).
func configPath(o options) (string, error) {
	switch {
	case o.profile == "":
		return o.config, nil
	case o.config != "":
		return "", cli.Usagef("--profile %s and --config %s: give one", o.profile, o.config)
	case !profileName.MatchString(o.profile) || strings.HasSuffix(o.profile, ".yaml"):
		return "", cli.Usagef("--profile %q: want a name such as work, the file %s/work.yaml", o.profile, o.profileDir)
	}
	return filepath.Join(o.profileDir, o.profile+".yaml"), nil
}

// applyConfig applies the config file of o (if any) to fs, whose
// variables o holds; the command line wins.
func applyConfig(fs *pflag.FlagSet, o *options) (*conffile.File, error) {
	path, err := configPath(*o)
	if err != nil || path == "" {
		return nil, err
	}
	if o.profile != "" {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("--profile %s: no file %s ('tunnelc profiles' lists the profiles)", o.profile, path)
		}
	}
	return conffile.New(fs, path, fileOptions).Apply()
}

// runCheck prints "FILE: ok", or every problem of the settings one a line
// (file:line where the config file set the value), and then fails.
func runCheck(stdout io.Writer, fs *pflag.FlagSet, o *options) error {
	name, err := configPath(*o)
	if err != nil {
		return err
	}
	if name == "" {
		name = "command line"
	}
	var problems []string
	file, err := applyConfig(fs, o)
	if err != nil {
		problems = strings.Split(err.Error(), "\n")
	} else {
		o.congestionSet = fs.Changed("congestion")
		o.proxySet = fs.Changed("proxy")
		for _, err := range checkOptions(*o) {
			problems = append(problems, file.Locate(err))
		}
	}
	if len(problems) == 0 {
		fmt.Fprintf(stdout, "%s: ok\n", name)
		return nil
	}
	for _, p := range problems {
		fmt.Fprintln(stdout, p)
	}
	return fmt.Errorf("%s: %d problem(s)", name, len(problems))
}

// checkOptions returns every problem of o that can be found without
// connecting: values, required flags, and the certificate, key and CA
// loaded as tunnelc loads them. Each is a *conffile.FlagError.
func checkOptions(o options) []error {
	var errs []error
	bad := func(flag, format string, args ...any) { errs = append(errs, conffile.Flagf(flag, format, args...)) }
	host := ""
	if len(o.servers) == 0 {
		bad("server", "required, e.g. vpn.example.com:443")
	}
	for i, server := range o.servers {
		if h, port, err := net.SplitHostPort(server); err != nil || h == "" {
			bad("server", "%q: want HOST:PORT, e.g. vpn.example.com:443", server)
		} else if _, err := client.ServerPort(port); err != nil {
			bad("server", "%q: %v", server, err)
		} else if slices.Contains(o.servers[:i], server) {
			bad("server", "%q is given twice", server)
		} else if host == "" {
			host = h
		}
	}
	if o.killSwitch && !o.fullTunnel {
		bad("kill-switch", "needs full-tunnel")
	}
	errs = append(errs, checkProxy(o)...)
	for _, a := range o.advertise {
		p, err := netip.ParsePrefix(a)
		switch {
		case err != nil || p.Addr().Is4In6():
			bad("advertise", "%q: want a CIDR such as 198.18.20.0/24", a)
		case p.Masked() != p:
			bad("advertise", "%q has host bits set; did you mean %v?", a, p.Masked())
		case p.Bits() == 0:
			bad("advertise", "%q: a default route cannot be advertised", a)
		}
	}
	if len(o.advertise) > tunnel.MaxRoutes {
		bad("advertise", "%d networks, at most %d", len(o.advertise), tunnel.MaxRoutes)
	}
	if err := client.CheckPortalProbe(o.portalProbe); err != nil {
		bad("portal-probe", "%q: %v", o.portalProbe, err)
	}
	if o.portalWindow < 0 {
		bad("portal-window", "%v: want a positive duration such as 5m", o.portalWindow)
	}
	if o.tunName == "" || len(o.tunName) > 15 || strings.ContainsAny(o.tunName, "/: \t\n") {
		bad("tun", "%q: want an interface name of at most 15 bytes without '/', ':' or spaces", o.tunName)
	}
	if o.metrics != "" {
		if _, _, err := net.SplitHostPort(o.metrics); err != nil {
			bad("metrics", "%q: want ADDR:PORT, e.g. 127.0.0.1:9101", o.metrics)
		}
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
	missing := false
	for _, f := range []struct{ flag, path, example string }{{"cert", o.cert, "laptop.crt"}, {"key", o.key, "laptop.key"}, {"ca", o.ca, "ca.crt"}} {
		if f.path == "" {
			bad(f.flag, "required, e.g. %s", f.example)
			missing = true
		} else if _, err := os.Stat(f.path); err != nil {
			bad(f.flag, "%v", err)
			missing = true
		}
	}
	if !missing {
		name := o.serverName
		if name == "" {
			name = host
		}
		if _, err := certs.ClientConfig(o.cert, o.key, o.ca, name); err != nil {
			bad("cert", "%v", err)
		}
	}
	return errs
}

// runProfiles lists the profiles in the profile directory: each file
// NAME.yaml, with the server it connects to.
func runProfiles(stdout, stderr io.Writer, args []string) error {
	fs := pflag.NewFlagSet("tunnelc profiles", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("profile-dir", DefaultProfileDir, "directory of the profiles (NAME.yaml each)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return &cli.UsageError{Err: err}
	}
	if fs.NArg() > 0 {
		return cli.Usagef("unexpected argument %q (usage: tunnelc profiles [--profile-dir DIR])", fs.Arg(0))
	}
	paths, err := filepath.Glob(filepath.Join(*dir, "*.yaml"))
	if err != nil {
		return err
	}
	if _, err := os.Stat(*dir); err != nil {
		return fmt.Errorf("profiles: %w", err)
	}
	slices.Sort(paths)
	if len(paths) == 0 {
		fmt.Fprintf(stdout, "no profiles in %s: write one NAME.yaml per server there (see docs/examples/tunnelc.yaml)\n", *dir)
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROFILE\tSERVER\tFILE")
	for _, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), ".yaml")
		if !profileName.MatchString(name) {
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", name, profileServer(p), p)
	}
	return tw.Flush()
}

// profileServer returns the server a profile names, or why it cannot tell.
func profileServer(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		return "(not valid YAML: run 'tunnelc check --config " + path + "')"
	}
	switch s := m["server"].(type) {
	case string:
		if s != "" {
			return s
		}
	case []any:
		var list []string
		for _, v := range s {
			list = append(list, fmt.Sprint(v))
		}
		if len(list) > 0 {
			return strings.Join(list, ", ")
		}
	}
	return "(no server)"
}
