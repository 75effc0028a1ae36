package main

// A fleet of gateways sharing their state through etcd: the flags of
// state: etcd, their checks, and 'tunneld fleet publish-crl'.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"tlsvpn/certs"
	"tlsvpn/cmd/internal/cli"
	"tlsvpn/cmd/internal/conffile"
	"tlsvpn/server"
	"tlsvpn/state"
)

// fleetFlags are the settings of the state store.
type fleetFlags struct {
	state         string
	etcdEndpoints []string
	etcdCert      string
	etcdKey       string
	etcdCA        string
	etcdPrefix    string
	gatewayName   string
}

// addFleetFlags defines the store's flags on fs.
func addFleetFlags(fs *pflag.FlagSet, f *fleetFlags) {
	fs.StringVar(&f.state, "state", server.StateFile, "where the leases, revocation list, session directory and ticket keys live: file (this gateway alone: --state-dir, --crl) or etcd (shared by a fleet of gateways through --etcd-endpoints; see docs/FLEET.md)")
	fs.StringSliceVar(&f.etcdEndpoints, "etcd-endpoints", nil, "with --state etcd: the etcd members' client URLs, e.g. https://198.18.1.1:2379 (repeatable or comma-separated)")
	fs.StringVar(&f.etcdCert, "etcd-cert", "", "with --state etcd: client certificate FILE (PEM) this gateway presents to etcd")
	fs.StringVar(&f.etcdKey, "etcd-key", "", "with --state etcd: the private key FILE of --etcd-cert")
	fs.StringVar(&f.etcdCA, "etcd-ca", "", "with --state etcd: CA FILE that etcd's server certificates chain to (empty: the system's)")
	fs.StringVar(&f.etcdPrefix, "etcd-prefix", state.DefaultEtcdPrefix, "with --state etcd: the prefix of every key of this fleet (fleets sharing a cluster need different ones)")
	fs.StringVar(&f.gatewayName, "gateway-name", "", "with --state etcd: this gateway's name in the fleet, unique (empty: the host name)")
}

// etcdOptions are the store's options of o.
func (o options) etcdOptions() state.EtcdOptions {
	name := o.gatewayName
	if name == "" {
		name, _ = os.Hostname()
	}
	return state.EtcdOptions{Endpoints: o.etcdEndpoints, CertFile: o.etcdCert, KeyFile: o.etcdKey, CAFile: o.etcdCA,
		Prefix: o.etcdPrefix, Gateway: name}
}

// fleetSettings checks the store's settings of o that need no file.
func fleetSettings(o options) []error {
	var errs []error
	bad := func(flag, format string, args ...any) { errs = append(errs, conffile.Flagf(flag, format, args...)) }
	switch o.state {
	case "", server.StateFile:
		return nil
	case server.StateEtcd:
	default:
		bad("state", "%q: want file or etcd", o.state)
		return errs
	}
	if len(o.etcdEndpoints) == 0 {
		bad("etcd-endpoints", "required with state etcd, e.g. https://198.18.1.1:2379")
	}
	for _, ep := range o.etcdEndpoints {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Port() == "" {
			bad("etcd-endpoints", "%q: want a URL such as https://198.18.1.1:2379", ep)
		}
	}
	if (o.etcdCert == "") != (o.etcdKey == "") {
		bad("etcd-cert", "etcd-cert and etcd-key go together")
	}
	if o.crl != "" {
		bad("crl", "with state etcd the fleet's CRL is published in etcd: drop crl and run 'tunneld fleet publish-crl FILE'")
	}
	if !strings.HasPrefix(o.etcdPrefix, "/") {
		bad("etcd-prefix", "%q: want a key prefix such as /tlsvpn/", o.etcdPrefix)
	}
	if strings.Contains(o.gatewayName, "/") {
		bad("gateway-name", "%q: a name without '/'", o.gatewayName)
	}
	return errs
}

// checkFleetFiles checks the store's TLS files, as 'tunneld check' does
// for the others.
func checkFleetFiles(o options, bad func(flag string, err error)) {
	if o.state != server.StateEtcd {
		return
	}
	for _, f := range []struct{ flag, path string }{{"etcd-cert", o.etcdCert}, {"etcd-key", o.etcdKey}, {"etcd-ca", o.etcdCA}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			bad(f.flag, err)
			return
		}
	}
	if _, err := state.EtcdTLS(o.etcdOptions()); err != nil {
		bad("etcd-cert", err)
	}
}

const fleetUsage = `Usage: tunneld fleet publish-crl FILE --config FILE [flags]
       tunneld fleet publish-clients FILE --config FILE [flags]

Commands of a fleet of gateways sharing their state through etcd (state: etcd).

  publish-crl FILE      publish the CRL in FILE (crl.pem from 'tunneld pki revoke'
                        or 'tunneld pki crl') to the fleet: checked against --ca
                        first (signature, expiry, not older than the one
                        published), then every gateway enforces it within
                        --crl-check and closes the sessions it revokes.
  publish-clients FILE  publish the clients policy in FILE (the YAML of
                        --clients) to the fleet: validated first as a reload
                        validates it (against subnet and subnet6; errors name
                        FILE:LINE, and nothing is written), then every gateway
                        applies it as a reload: only clients whose own entry
                        changed reconnect. While a policy is published, it is
                        in force on every gateway instead of a local clients
                        setting.

The store's settings (etcd-endpoints, etcd-cert, etcd-key, etcd-ca,
etcd-prefix) and ca come from --config or the flags, as for the gateway.

Example, when the laptop is lost:
  tunneld pki revoke --dir /etc/tlsvpn/pki --name laptop
  tunneld fleet publish-crl /etc/tlsvpn/pki/crl.pem --config /etc/tlsvpn/tunneld.yaml
`

// runFleet runs 'tunneld fleet CMD ARGS' with the settings of src.
func runFleet(ctx context.Context, cmd string, args []string, src *source, stdout io.Writer) error {
	if cmd == "publish-clients" {
		return runPublishClients(ctx, args, src, stdout)
	}
	if cmd != "publish-crl" {
		return cli.Usagef("unknown fleet command %q (see 'tunneld fleet --help')", cmd)
	}
	o, err := fleetOptions(cmd, "CRL FILE", args, src)
	if err != nil {
		return err
	}
	if errs := fleetSettings(o); len(errs) > 0 {
		return &cli.UsageError{Err: locateAll(o.file, errs)}
	}
	if o.ca == "" {
		return cli.Usagef("fleet publish-crl: --ca (the CA the CRL must be signed by) is required")
	}
	ca, err := certs.LoadCACert(o.ca)
	if err != nil {
		return err
	}
	pem, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	etcd, err := state.DialEtcd(o.etcdOptions())
	if err != nil {
		return err
	}
	defer etcd.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	crl, err := state.PublishCRL(ctx, etcd, o.etcdPrefix, pem, ca)
	if err != nil {
		return fmt.Errorf("fleet publish-crl %s: %w", args[0], err)
	}
	fmt.Fprintf(stdout, "published %s (number %v, %d revoked, next update %s) to %s%s\n", args[0], crl.List.Number,
		len(crl.List.RevokedCertificateEntries), crl.List.NextUpdate.UTC().Format(time.RFC3339), strings.Join(o.etcdEndpoints, ","), o.etcdPrefix+"crl")
	return nil
}

// fleetOptions checks that fleet command cmd has its one argument (what
// names it) and reads the settings of src, which must be of state etcd.
func fleetOptions(cmd, what string, args []string, src *source) (options, error) {
	if len(args) != 1 {
		return options{}, cli.Usagef("fleet %s: want one %s, got %d arguments", cmd, what, len(args))
	}
	o, err := src.read()
	if err != nil {
		return options{}, &cli.UsageError{Err: err}
	}
	if o.state != server.StateEtcd {
		return options{}, cli.Usagef("fleet %s: state is %q: set state etcd and the etcd settings (in --config or as flags)", cmd, o.state)
	}
	return o, nil
}

// fleetCommand splits 'fleet CMD ...' off args: the command ("" if args
// are not a fleet command) and the rest, parsed as tunneld's flags. Help
// is printed and pflag.ErrHelp returned for 'fleet' alone or --help.
func fleetCommand(args []string, stdout io.Writer) (cmd string, rest []string, err error) {
	if len(args) == 0 || args[0] != "fleet" {
		return "", args, nil
	}
	if len(args) < 2 || args[1] == "--help" || args[1] == "-h" || args[1] == "help" {
		fmt.Fprint(stdout, fleetUsage)
		return "", nil, pflag.ErrHelp
	}
	if strings.HasPrefix(args[1], "-") {
		return "", nil, errors.New("fleet: the command comes first, e.g. 'tunneld fleet publish-crl FILE --config FILE'")
	}
	return args[1], args[2:], nil
}
