package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
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
  init    create the CA: write ca.key, ca.crt and an empty crl.pem to --dir
  issue   issue a server or client certificate signed by the CA in --dir
  revoke  revoke a certificate: add it to the revocation list crl.pem
  crl     re-sign crl.pem so it does not expire (run it from cron)
  list    list the certificates in --dir and whether they are revoked

Run 'tunneld pki <command> --help' for the flags of a command.

Example (a server that clients reach as vpn.example.com, and one client):
  tunneld pki init  --dir ` + pkiExampleDir + `
  tunneld pki issue --dir ` + pkiExampleDir + ` --server --name vpn.example.com
  tunneld pki issue --dir ` + pkiExampleDir + ` --client --name laptop

Later, when the laptop is lost:
  tunneld pki revoke --dir ` + pkiExampleDir + ` --name laptop --reason keyCompromise
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
	case "revoke":
		return pkiRevoke(args[1:], stdout)
	case "crl":
		return pkiCRL(args[1:], stdout)
	case "list":
		return pkiList(args[1:], stdout)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, pkiUsage)
		return pflag.ErrHelp
	default:
		fmt.Fprint(stderr, pkiUsage)
		return fmt.Errorf("unknown pki command %q: use init, issue, revoke, crl or list (see 'tunneld pki --help')", cmd)
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

const pkiInitUsage = `Usage: tunneld pki init --dir DIR [--algo ecdsa|ed25519] [--cn NAME] [--days N] [--crl-days N]

Create a new certificate authority: DIR/ca.key (the CA's private key, mode 0600),
DIR/ca.crt (its certificate, mode 0644) and DIR/crl.pem (an empty certificate
revocation list signed by it, mode 0644). DIR is created with mode 0700 if it is
missing. Existing files are never overwritten.

Keep ca.key secret: anyone who has it can issue certificates the server accepts.
Copy ca.crt to every client.

tunneld refuses every client once crl.pem is older than --crl-days: refresh it
with 'tunneld pki crl' well before then (see 'tunneld pki crl --help').
`

const pkiInitExamples = `Examples:
  tunneld pki init --dir ` + pkiExampleDir + `
  tunneld pki init --dir ./pki --algo ed25519 --cn "Example VPN CA" --days 1825
`

// pkiInit runs 'tunneld pki init'.
func pkiInit(args []string, stdout io.Writer) error {
	var (
		dir, algo, cn string
		days, crlDays int
	)
	fs := pkiFlagSet("init", pkiInitUsage, pkiInitExamples, stdout)
	fs.StringVar(&dir, "dir", "", "directory `DIR` to create the CA in (required)")
	fs.StringVar(&algo, "algo", string(certs.ECDSA), "key algorithm `ALGO`: ecdsa (NIST P-256, the widest support) or ed25519")
	fs.StringVar(&cn, "cn", certs.DefaultCACommonName, "CA common name `NAME`, shown when inspecting certificates")
	fs.IntVar(&days, "days", certs.DefaultCADays, "number of days `N` the CA is valid; certificates it issues cannot outlive it")
	pkiCRLDaysFlag(fs, &crlDays)
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
	if err := pkiCheckCRLDays(crlDays); err != nil {
		return fmt.Errorf("pki init: %w", err)
	}
	f, err := certs.InitCA(dir, certs.CAOptions{Algorithm: alg, CommonName: cn, Days: days, CRLDays: crlDays})
	if err != nil {
		return fmt.Errorf("pki init: %w", err)
	}
	fmt.Fprintf(stdout, "Created CA %q (%s), valid until %s.\n", f.Cert.Subject.CommonName, certs.DescribeKey(f.Cert), pkiDate(f.Cert.NotAfter))
	fmt.Fprintf(stdout, "  %s  private key: keep it secret; it signs every certificate\n", f.KeyFile)
	fmt.Fprintf(stdout, "  %s  certificate: copy it to every client\n", f.CertFile)
	fmt.Fprintf(stdout, "  %s  revocation list (empty): tunneld refuses every client after %s unless it is refreshed\n",
		f.CRLFile, pkiTime(time.Now().AddDate(0, 0, crlDays)))
	fmt.Fprintf(stdout, "\nRefresh the revocation list regularly, e.g. daily from cron:\n")
	fmt.Fprintf(stdout, "  tunneld pki crl --dir %s\n", pkiQuote(dir))
	fmt.Fprintf(stdout, "\nNext, issue the server certificate, named after the address clients dial:\n")
	fmt.Fprintf(stdout, "  tunneld pki issue --dir %s --server --name vpn.example.com\n", pkiQuote(dir))
	return nil
}

const pkiIssueUsage = `Usage: tunneld pki issue --dir DIR --server --name NAME [--ip IP]... [--dns HOST]... [--no-name-san] [--days N]
       tunneld pki issue --dir DIR --client --name NAME [--days N]

Issue a certificate signed by the CA in DIR (see 'tunneld pki init') and write
DIR/NAME.key (private key, mode 0600) and DIR/NAME.crt (certificate, mode 0644).
Existing files are never overwritten.

A server certificate must name every address clients dial (tunnelc --server, or
its --server-name). NAME is one of them: it is written in as a DNS name, or as an
IP address if NAME is one. Pass each other DNS name with --dns and each other IP
address with --ip; an address given twice is written once. --no-name-san leaves
NAME out, e.g. when it is only a label such as "gw".

A client certificate carries only NAME, which is the client's identity: the server
logs it and tells clients apart by it, so give every client its own NAME. Copy
NAME.crt, NAME.key and ca.crt to the client.
`

const pkiIssueExamples = `Examples:
  tunneld pki issue --dir ` + pkiExampleDir + ` --server --name vpn.example.com
  tunneld pki issue --dir ` + pkiExampleDir + ` --server --name vpn.example.com --ip 203.0.113.10
  tunneld pki issue --dir ` + pkiExampleDir + ` --server --name gw --no-name-san --dns vpn.example.com --ip 203.0.113.10
  tunneld pki issue --dir ` + pkiExampleDir + ` --client --name laptop --days 90
`

// pkiIssue runs 'tunneld pki issue'.
func pkiIssue(args []string, stdout io.Writer) error {
	var (
		dir, name, algo  string
		server, client   bool
		noNameSAN        bool
		ipArgs, dnsNames []string
		days             int
	)
	fs := pkiFlagSet("issue", pkiIssueUsage, pkiIssueExamples, stdout)
	fs.StringVar(&dir, "dir", "", "directory `DIR` holding ca.crt and ca.key from 'tunneld pki init' (required)")
	fs.BoolVar(&server, "server", false, "issue a server certificate, for tunneld")
	fs.BoolVar(&client, "client", false, "issue a client certificate, for tunnelc")
	fs.StringVar(&name, "name", "", "certificate `NAME`: its file name and CommonName; a client's identity, or one of a server's addresses (see --no-name-san); "+
		"1-64 letters, digits, '.', '_' or '-', not starting with '.' or '-' (required)")
	fs.StringArrayVar(&ipArgs, "ip", nil, "`IP` address clients dial to reach the server (--server only; repeatable)")
	fs.StringArrayVar(&dnsNames, "dns", nil, "hostname `HOST` clients dial to reach the server (--server only; repeatable)")
	fs.BoolVar(&noNameSAN, "no-name-san", false, "leave NAME out of the addresses in a server certificate: clients must dial one given with --dns or --ip (--server only)")
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
	req := certs.IssueRequest{
		Name:      name,
		Server:    server,
		Client:    client,
		IPs:       ips,
		DNSNames:  dnsNames,
		NoNameSAN: noNameSAN,
		Days:      days,
		Algorithm: alg,
	}
	f, err := certs.Issue(dir, req)
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
		if !noNameSAN && !req.NameInSANs() {
			fmt.Fprintf(stdout, "%q is neither a hostname nor an IP address, so it is only the certificate's name, not an address.\n", name)
		}
	} else {
		fmt.Fprintf(stdout, "Copy %s, %s and %s to the client; the server will know it as %q.\n",
			filepath.Base(f.CertFile), filepath.Base(f.KeyFile), certs.CACertFile, c.Subject.CommonName)
	}
	return nil
}

// pkiCRLDaysFlag adds the --crl-days flag shared by init, revoke and crl.
func pkiCRLDaysFlag(fs *pflag.FlagSet, days *int) {
	fs.IntVar(days, "crl-days", certs.DefaultCRLDays, "number of days `N` the written crl.pem is valid; "+
		"tunneld refuses every client once it expires, so refresh it well before with 'tunneld pki crl'")
}

// pkiCheckCRLDays validates a --crl-days value.
func pkiCheckCRLDays(days int) error {
	if days < 1 {
		return fmt.Errorf("--crl-days %d: pass a positive number of days, e.g. --crl-days %d", days, certs.DefaultCRLDays)
	}
	return nil
}

const pkiRevokeUsage = `Usage: tunneld pki revoke --dir DIR --name NAME [--reason REASON] [--crl-days N]
       tunneld pki revoke --dir DIR --serial SERIAL [--reason REASON] [--crl-days N]

Revoke a certificate issued by the CA in DIR: add its serial number to the
certificate revocation list DIR/crl.pem, sign the list with the next CRL number
and replace the file atomically (mode 0644). crl.pem is created if it is missing.

--name revokes the certificate now at DIR/NAME.crt. --serial revokes a serial
number directly, e.g. when the file is gone: hex with a 0x prefix as
'tunneld pki list' prints it, colon-separated hex as openssl prints it, or decimal.

tunneld refuses the certificate from its next handshake once it has loaded the
new crl.pem (copy it to the server if the CA is kept elsewhere). Revoking a
certificate twice changes nothing. To replace a revoked client certificate,
remove NAME.crt and NAME.key and issue a new one with the same --name.
`

const pkiRevokeExamples = `Examples:
  tunneld pki revoke --dir ` + pkiExampleDir + ` --name laptop --reason keyCompromise
  tunneld pki revoke --dir ` + pkiExampleDir + ` --serial 0x5F3A9C0D2E7B41A8 --reason cessationOfOperation
`

// pkiRevoke runs 'tunneld pki revoke'.
func pkiRevoke(args []string, stdout io.Writer) error {
	var (
		dir, name, serialArg, reasonArg string
		crlDays                         int
	)
	fs := pkiFlagSet("revoke", pkiRevokeUsage, pkiRevokeExamples, stdout)
	fs.StringVar(&dir, "dir", "", "directory `DIR` holding ca.crt and ca.key from 'tunneld pki init' (required)")
	fs.StringVar(&name, "name", "", "revoke the certificate DIR/`NAME`.crt")
	fs.StringVar(&serialArg, "serial", "", "revoke the certificate with serial number `SERIAL` (0x-prefixed or colon-separated hex, or decimal)")
	fs.StringVar(&reasonArg, "reason", "", "revocation `REASON` (RFC 5280), one of: "+certs.ReasonKeywords+" (default unspecified)")
	pkiCRLDaysFlag(fs, &crlDays)
	if err := pkiParse(fs, "revoke", args); err != nil {
		return err
	}
	switch {
	case dir == "":
		return fmt.Errorf("pki revoke: --dir is required, e.g. tunneld pki revoke --dir %s --name laptop", pkiExampleDir)
	case name != "" && serialArg != "":
		return errors.New("pki revoke: --name and --serial are mutually exclusive: revoke one certificate per command")
	case name == "" && serialArg == "":
		return fmt.Errorf("pki revoke: say what to revoke with --name NAME or --serial SERIAL, e.g. tunneld pki revoke --dir %s --name laptop "+
			"(see 'tunneld pki list --dir %s' for names and serials)", pkiQuote(dir), pkiQuote(dir))
	}
	if err := pkiCheckCRLDays(crlDays); err != nil {
		return fmt.Errorf("pki revoke: %w", err)
	}
	req := certs.RevokeRequest{Name: name, Days: crlDays}
	var err error
	if serialArg != "" {
		if req.Serial, err = certs.ParseSerial(serialArg); err != nil {
			return fmt.Errorf("pki revoke: --serial: %w", err)
		}
	}
	if req.Reason, err = certs.ParseReason(reasonArg); err != nil {
		return fmt.Errorf("pki revoke: --reason: %w", err)
	}
	u, err := certs.Revoke(dir, req)
	if err != nil {
		return fmt.Errorf("pki revoke: %w", err)
	}
	what := "serial " + certs.FormatSerial(u.Entry.SerialNumber)
	if u.Cert != nil {
		what = fmt.Sprintf("%s certificate %q (%s, %s)", pkiKind(u.Cert), u.Cert.Subject.CommonName, what, u.CertFile)
	}
	if u.AlreadyRevoked {
		fmt.Fprintf(stdout, "%s was already revoked on %s (%s): nothing to do; %s is unchanged.\n",
			pkiUpperFirst(what), pkiTime(u.Entry.RevocationTime), certs.ReasonText(u.Entry.ReasonCode), u.File)
		return nil
	}
	fmt.Fprintf(stdout, "Revoked %s, reason %s.\n", what, certs.ReasonText(u.Entry.ReasonCode))
	verb := "Updated"
	if u.Created {
		verb = "Created"
	}
	fmt.Fprintf(stdout, "%s %s\n", verb, pkiDescribeCRL(u.File, u.CRL))
	if u.Cert == nil {
		fmt.Fprintf(stdout, "No certificate in %s has this serial number: if you expected one, check the number "+
			"(hex needs a 0x prefix or a-f digits; plain digits are decimal).\n", dir)
	}
	fmt.Fprintf(stdout, "tunneld refuses it once it has loaded this crl.pem. Refresh the CRL before %s with:\n  tunneld pki crl --dir %s\n",
		pkiTime(u.CRL.NextUpdate), pkiQuote(dir))
	if u.Cert != nil && pkiKind(u.Cert) == "server" {
		fmt.Fprintf(stdout, "Clients do not check the CRL: also issue a new server certificate and restart tunneld with it.\n")
	}
	return nil
}

const pkiCRLUsage = `Usage: tunneld pki crl --dir DIR [--crl-days N]

Re-sign the certificate revocation list DIR/crl.pem with the CA in DIR: same
entries, the next CRL number, and a new validity of --crl-days from now. The file
is replaced atomically (mode 0644), or created empty if it is missing.

tunneld refuses every client once its CRL is past its next-update time, so run
this regularly, well within --crl-days; a daily cron job is typical, e.g. in
/etc/cron.d/tlsvpn-crl:
  17 3 * * *  root  /usr/local/bin/tunneld pki crl --dir ` + pkiExampleDir + `
`

const pkiCRLExamples = `Examples:
  tunneld pki crl --dir ` + pkiExampleDir + `
  tunneld pki crl --dir ` + pkiExampleDir + ` --crl-days 7
`

// pkiCRL runs 'tunneld pki crl'.
func pkiCRL(args []string, stdout io.Writer) error {
	var (
		dir     string
		crlDays int
	)
	fs := pkiFlagSet("crl", pkiCRLUsage, pkiCRLExamples, stdout)
	fs.StringVar(&dir, "dir", "", "directory `DIR` holding ca.crt and ca.key from 'tunneld pki init' (required)")
	pkiCRLDaysFlag(fs, &crlDays)
	if err := pkiParse(fs, "crl", args); err != nil {
		return err
	}
	if dir == "" {
		return fmt.Errorf("pki crl: --dir is required, e.g. tunneld pki crl --dir %s", pkiExampleDir)
	}
	if err := pkiCheckCRLDays(crlDays); err != nil {
		return fmt.Errorf("pki crl: %w", err)
	}
	u, err := certs.RefreshCRL(dir, certs.CRLOptions{Days: crlDays})
	if err != nil {
		return fmt.Errorf("pki crl: %w", err)
	}
	verb := "Re-signed"
	if u.Created {
		verb = "Created"
	}
	fmt.Fprintf(stdout, "%s %s\n", verb, pkiDescribeCRL(u.File, u.CRL))
	return nil
}

const pkiListUsage = `Usage: tunneld pki list --dir DIR

List the certificates in DIR (every NAME.crt except the CA's) with their kind,
serial number, expiry and revocation status according to DIR/crl.pem, and the
revoked serial numbers that have no certificate file left.
`

const pkiListExamples = `Examples:
  tunneld pki list --dir ` + pkiExampleDir + `
`

// pkiList runs 'tunneld pki list'.
func pkiList(args []string, stdout io.Writer) error {
	var dir string
	fs := pkiFlagSet("list", pkiListUsage, pkiListExamples, stdout)
	fs.StringVar(&dir, "dir", "", "directory `DIR` created by 'tunneld pki init' (required)")
	if err := pkiParse(fs, "list", args); err != nil {
		return err
	}
	if dir == "" {
		return fmt.Errorf("pki list: --dir is required, e.g. tunneld pki list --dir %s", pkiExampleDir)
	}
	caCert, err := certs.LoadCACert(filepath.Join(dir, certs.CACertFile))
	if err != nil {
		return fmt.Errorf("pki list: %w", err)
	}
	list, err := certs.ListCerts(dir)
	if err != nil {
		return fmt.Errorf("pki list: %w", err)
	}
	now := time.Now()
	crlFile := filepath.Join(dir, certs.CRLFile)
	crl, crlErr := certs.ReadCRL(crlFile, caCert)
	switch {
	case crlErr != nil:
		fmt.Fprintf(stdout, "CRL: %v\n", crlErr)
	case crl.CheckFresh(now) != nil:
		fmt.Fprintf(stdout, "CRL: %v (tunneld refuses every client until then)\n", crl.CheckFresh(now))
	default:
		fmt.Fprintf(stdout, "CRL %s\n", pkiDescribeCRL(crlFile, crl.List))
	}
	fmt.Fprintln(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tSERIAL\tEXPIRES\tSTATUS")
	listed := map[string]bool{}
	for _, ic := range list {
		if ic.Err != nil {
			fmt.Fprintf(tw, "%s\t-\t-\t-\tunreadable: %v\n", ic.Name, ic.Err)
			continue
		}
		c := ic.Cert
		status := "valid"
		switch {
		case c.CheckSignatureFrom(caCert) != nil:
			status = "not issued by this CA"
		case crl != nil && crl.IsRevoked(c.SerialNumber):
			e, _ := crl.Lookup(c.SerialNumber)
			listed[c.SerialNumber.String()] = true
			status = fmt.Sprintf("revoked %s (%s)", pkiTime(e.RevocationTime), certs.ReasonText(e.ReasonCode))
		case now.After(c.NotAfter):
			status = "expired"
		case crl == nil:
			status = "unknown: no usable CRL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", ic.Name, pkiKind(c), certs.FormatSerial(c.SerialNumber), pkiDate(c.NotAfter), status)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if crl == nil {
		return nil
	}
	first := true
	for _, e := range crl.List.RevokedCertificateEntries {
		if listed[e.SerialNumber.String()] {
			continue
		}
		if first {
			fmt.Fprintf(stdout, "\nRevoked serial numbers without a certificate file in %s:\n", dir)
			first = false
		}
		fmt.Fprintf(stdout, "  %s  revoked %s (%s)\n", certs.FormatSerial(e.SerialNumber), pkiTime(e.RevocationTime), certs.ReasonText(e.ReasonCode))
	}
	return nil
}

// pkiDescribeCRL summarises a CRL written to file for humans.
func pkiDescribeCRL(file string, list *x509.RevocationList) string {
	return fmt.Sprintf("%s: CRL number %v, %d revoked, next update %s.", file, list.Number, len(list.RevokedCertificateEntries), pkiTime(list.NextUpdate))
}

// pkiKind names the kind of certificate c is: "server", "client" or "other".
func pkiKind(c *x509.Certificate) string {
	switch {
	case slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth):
		return "server"
	case slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageClientAuth):
		return "client"
	}
	return "other"
}

// pkiUpperFirst returns s with its first letter in upper case.
func pkiUpperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// pkiTime formats t as a UTC date and time for humans.
func pkiTime(t time.Time) string {
	return t.UTC().Format("2006-01-02 15:04 UTC")
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
