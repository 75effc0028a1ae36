package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"tlsvpn/certs"
)

// pkiExampleDir is the directory used in help text and hints when none is known yet.
const pkiExampleDir = "/etc/tlsvpn/pki"

// pkiUsage is the help for 'tunneld pki' itself.
const pkiUsage = `Usage: tunneld pki <command> [flags]

Manage the private certificate authority (CA) that authenticates tunneld and its
clients. The server and every client trust only this CA; each client is identified
by the --name in its certificate.

Commands:
  init    create the CA: write ca.key and ca.crt to --dir
  issue   issue a server or client certificate signed by the CA in --dir

Run 'tunneld pki <command> --help' for the flags of a command.

Example (a server that clients reach as vpn.example.com, and one client):
  tunneld pki init  --dir ` + pkiExampleDir + `
  tunneld pki issue --dir ` + pkiExampleDir + ` --server --name vpn.example.com
  tunneld pki issue --dir ` + pkiExampleDir + ` --client --name laptop
`

// runPKI runs 'tunneld pki ...'; args are the arguments after "pki". Results go to stdout.
// It returns pflag.ErrHelp after printing requested help, so the caller can exit 0.
func runPKI(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stdout, pkiUsage)
		return pflag.ErrHelp
	}
	switch cmd := args[0]; cmd {
	case "init":
		return pkiInit(args[1:], stdout)
	case "issue":
		return pkiIssue(args[1:], stdout)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, pkiUsage)
		return pflag.ErrHelp
	default:
		fmt.Fprint(stderr, pkiUsage)
		return fmt.Errorf("unknown pki command %q: use 'tunneld pki init' or 'tunneld pki issue'", cmd)
	}
}

// pkiFlagSet returns a flag set for 'tunneld pki cmd' whose --help prints usage, the flags and
// examples to stdout. Parse errors are returned, never printed, so the caller reports them once.
func pkiFlagSet(cmd, usage, examples string, stdout io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet("tunneld pki "+cmd, pflag.ContinueOnError)
	fs.SortFlags = false
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprintf(stdout, "%s\nFlags:\n%s\n%s", usage, fs.FlagUsagesWrapped(90), examples)
	}
	return fs
}

// pkiParse parses args into fs and rejects positional arguments. Errors end with a pointer to
// the command's --help.
func pkiParse(fs *pflag.FlagSet, cmd string, args []string) error {
	err := fs.Parse(args)
	if errors.Is(err, pflag.ErrHelp) {
		return pflag.ErrHelp
	}
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q: every value is passed with a flag", fs.Arg(0))
	}
	if err != nil {
		return fmt.Errorf("pki %s: %w; see 'tunneld pki %s --help'", cmd, err, cmd)
	}
	return nil
}

// pkiAlgorithm validates an --algo value.
func pkiAlgorithm(s string) (certs.Algorithm, error) {
	switch a := certs.Algorithm(strings.ToLower(s)); a {
	case certs.ECDSA, certs.Ed25519:
		return a, nil
	}
	return "", fmt.Errorf("--algo %q is not supported: use ecdsa or ed25519", s)
}

const pkiInitUsage = `Usage: tunneld pki init --dir DIR [--algo ecdsa|ed25519] [--cn NAME] [--days N]

Create a new certificate authority: DIR/ca.key (the CA's private key, mode 0600)
and DIR/ca.crt (its certificate, mode 0644). DIR is created with mode 0700 if it
is missing. Existing files are never overwritten.

Keep ca.key secret: anyone who has it can issue certificates the server accepts.
Copy ca.crt to every client.
`

const pkiInitExamples = `Examples:
  tunneld pki init --dir ` + pkiExampleDir + `
  tunneld pki init --dir ./pki --algo ed25519 --cn "Example VPN CA" --days 1825
`

// pkiInit runs 'tunneld pki init'.
func pkiInit(args []string, stdout io.Writer) error {
	var (
		dir, algo, cn string
		days          int
	)
	fs := pkiFlagSet("init", pkiInitUsage, pkiInitExamples, stdout)
	fs.StringVar(&dir, "dir", "", "directory `DIR` to create the CA in (required)")
	fs.StringVar(&algo, "algo", string(certs.ECDSA), "key algorithm `ALGO`: ecdsa (NIST P-256, the widest support) or ed25519")
	fs.StringVar(&cn, "cn", certs.DefaultCACommonName, "CA common name `NAME`, shown when inspecting certificates")
	fs.IntVar(&days, "days", certs.DefaultCADays, "number of days `N` the CA is valid; certificates it issues cannot outlive it")
	if err := pkiParse(fs, "init", args); err != nil {
		return err
	}
	if dir == "" {
		return fmt.Errorf("pki init: --dir is required, e.g. tunneld pki init --dir %s", pkiExampleDir)
	}
	alg, err := pkiAlgorithm(algo)
	if err != nil {
		return fmt.Errorf("pki init: %w", err)
	}
	if days < 1 {
		return fmt.Errorf("pki init: --days %d: pass a positive number of days, e.g. --days %d", days, certs.DefaultCADays)
	}
	if cn == "" {
		return fmt.Errorf("pki init: --cn is empty: pass a name, e.g. --cn %q", certs.DefaultCACommonName)
	}
	f, err := certs.InitCA(dir, certs.CAOptions{Algorithm: alg, CommonName: cn, Days: days})
	if err != nil {
		return fmt.Errorf("pki init: %w", err)
	}
	fmt.Fprintf(stdout, "Created CA %q (%s), valid until %s.\n", f.Cert.Subject.CommonName, certs.DescribeKey(f.Cert), pkiDate(f.Cert.NotAfter))
	fmt.Fprintf(stdout, "  %s  private key: keep it secret; it signs every certificate\n", f.KeyFile)
	fmt.Fprintf(stdout, "  %s  certificate: copy it to every client\n", f.CertFile)
	fmt.Fprintf(stdout, "\nNext, issue the server certificate, named after the address clients dial:\n")
	fmt.Fprintf(stdout, "  tunneld pki issue --dir %s --server --name vpn.example.com\n", pkiQuote(dir))
	return nil
}

const pkiIssueUsage = `Usage: tunneld pki issue --dir DIR --server --name NAME [--ip IP]... [--dns HOST]... [--days N]
       tunneld pki issue --dir DIR --client --name NAME [--days N]

Issue a certificate signed by the CA in DIR (see 'tunneld pki init') and write
DIR/NAME.key (private key, mode 0600) and DIR/NAME.crt (certificate, mode 0644).
Existing files are never overwritten.

A server certificate must name the address clients dial: pass each DNS name with
--dns and each IP address with --ip. With neither, NAME is used as the DNS name.

A client certificate carries only NAME, which is the client's identity: the server
logs it and tells clients apart by it, so give every client its own NAME. Copy
NAME.crt, NAME.key and ca.crt to the client.
`

const pkiIssueExamples = `Examples:
  tunneld pki issue --dir ` + pkiExampleDir + ` --server --name vpn.example.com
  tunneld pki issue --dir ` + pkiExampleDir + ` --server --name gw --dns vpn.example.com --ip 203.0.113.10
  tunneld pki issue --dir ` + pkiExampleDir + ` --client --name laptop --days 90
`

// pkiIssue runs 'tunneld pki issue'.
func pkiIssue(args []string, stdout io.Writer) error {
	var (
		dir, name, algo  string
		server, client   bool
		ipArgs, dnsNames []string
		days             int
	)
	fs := pkiFlagSet("issue", pkiIssueUsage, pkiIssueExamples, stdout)
	fs.StringVar(&dir, "dir", "", "directory `DIR` holding ca.crt and ca.key from 'tunneld pki init' (required)")
	fs.BoolVar(&server, "server", false, "issue a server certificate, for tunneld")
	fs.BoolVar(&client, "client", false, "issue a client certificate, for tunnelc")
	fs.StringVar(&name, "name", "", "certificate `NAME`: its file name and CommonName, and a client's identity; "+
		"1-64 letters, digits, '.', '_' or '-', not starting with '.' or '-' (required)")
	fs.StringArrayVar(&ipArgs, "ip", nil, "`IP` address clients dial to reach the server (--server only; repeatable)")
	fs.StringArrayVar(&dnsNames, "dns", nil, "hostname `HOST` clients dial to reach the server (--server only; repeatable)")
	fs.IntVar(&days, "days", certs.DefaultLeafDays, "number of days `N` the certificate is valid")
	fs.StringVar(&algo, "algo", string(certs.ECDSA), "key algorithm `ALGO`: ecdsa (NIST P-256) or ed25519")
	if err := pkiParse(fs, "issue", args); err != nil {
		return err
	}
	switch {
	case dir == "":
		return fmt.Errorf("pki issue: --dir is required, e.g. tunneld pki issue --dir %s --client --name laptop", pkiExampleDir)
	case server && client:
		return errors.New("pki issue: --server and --client are mutually exclusive: issue one certificate per command")
	case !server && !client:
		example := name
		if example == "" {
			example = "laptop"
		}
		return fmt.Errorf("pki issue: pass --server (a certificate for tunneld) or --client (one for tunnelc), e.g. tunneld pki issue --dir %s --client --name %s", pkiQuote(dir), pkiQuote(example))
	case name == "" && server:
		return errors.New("pki issue: --name is required, e.g. --name vpn.example.com")
	case name == "":
		return errors.New("pki issue: --name is required, e.g. --name laptop")
	case days < 1:
		return fmt.Errorf("pki issue: --days %d: pass a positive number of days, e.g. --days %d", days, certs.DefaultLeafDays)
	}
	alg, err := pkiAlgorithm(algo)
	if err != nil {
		return fmt.Errorf("pki issue: %w", err)
	}
	var ips []net.IP
	for _, s := range ipArgs {
		ip := net.ParseIP(s)
		if ip == nil {
			return fmt.Errorf("pki issue: --ip %q is not an IP address: pass one like --ip 203.0.113.10 (use --dns for names)", s)
		}
		ips = append(ips, ip)
	}
	f, err := certs.Issue(dir, certs.IssueRequest{
		Name:      name,
		Server:    server,
		Client:    client,
		IPs:       ips,
		DNSNames:  dnsNames,
		Days:      days,
		Algorithm: alg,
	})
	if err != nil {
		return fmt.Errorf("pki issue: %w", err)
	}
	kind := "client"
	if server {
		kind = "server"
	}
	c := f.Cert
	fmt.Fprintf(stdout, "Issued %s certificate %q (%s), valid until %s.\n", kind, c.Subject.CommonName, certs.DescribeKey(c), pkiDate(c.NotAfter))
	fmt.Fprintf(stdout, "  %s  private key: keep it secret\n", f.KeyFile)
	fmt.Fprintf(stdout, "  %s  certificate\n", f.CertFile)
	if server {
		var sans []string
		sans = append(sans, c.DNSNames...)
		for _, ip := range c.IPAddresses {
			sans = append(sans, ip.String())
		}
		fmt.Fprintf(stdout, "Clients must dial the server as one of: %s\n", strings.Join(sans, ", "))
	} else {
		fmt.Fprintf(stdout, "Copy %s, %s and %s to the client; the server will know it as %q.\n",
			filepath.Base(f.CertFile), filepath.Base(f.KeyFile), certs.CACertFile, c.Subject.CommonName)
	}
	return nil
}

// pkiDate formats t as a UTC date for humans.
func pkiDate(t time.Time) string {
	return t.UTC().Format(time.DateOnly)
}

// pkiQuote returns s quoted for a POSIX shell if it needs quoting, so printed commands can be
// pasted as they are.
func pkiQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("/._-+:,=@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
