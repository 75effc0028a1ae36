package certs

import (
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"
)

// IssueRequest describes a leaf certificate to issue. Exactly one of Server and Client is set.
type IssueRequest struct {
	// Name is the certificate's CommonName and file name; see [ValidateName]. For a client
	// it is the identity the server sees (see [PeerIdentity]).
	Name string

	Server bool // issue a server certificate (extKeyUsage serverAuth)
	Client bool // issue a client certificate (extKeyUsage clientAuth)

	// IPs and DNSNames are the server's subjectAltNames: the addresses clients dial. A server
	// certificate also carries Name among them (as an IP address if it is one, else as a DNS
	// name if it is a hostname) unless NoNameSAN is set, so a client that dials the name the
	// certificate was issued under can verify it. Repeated addresses are written once. They
	// must be empty for a client certificate, which carries only its CommonName.
	IPs      []net.IP
	DNSNames []string

	// NoNameSAN keeps Name out of a server certificate's subjectAltNames: only IPs and
	// DNSNames are written, and at least one of them must be given.
	NoNameSAN bool

	Days      int       // validity in days; 0 means DefaultLeafDays
	Algorithm Algorithm // key algorithm; "" means ECDSA

	// Now is the issuing time; the zero value means time.Now(). Tests set it to mint
	// expired certificates.
	Now time.Time
}

// template validates r and returns the certificate template for it (without serial number).
func (r IssueRequest) template(caCert *x509.Certificate) (*x509.Certificate, error) {
	if err := ValidateName(r.Name); err != nil {
		return nil, err
	}
	if r.Server == r.Client {
		return nil, errors.New("say which kind of certificate to issue: pass exactly one of --server or --client")
	}
	days, err := validityDays(r.Days, DefaultLeafDays, "validity")
	if err != nil {
		return nil, err
	}
	now := r.Now
	if now.IsZero() {
		now = time.Now()
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: r.Name},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.AddDate(0, 0, days),
		BasicConstraintsValid: true,
		// Ed25519 and ECDSA keys only sign in TLS 1.3; keyEncipherment is for RSA.
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if r.Client {
		if len(r.IPs) > 0 || len(r.DNSNames) > 0 {
			return nil, errors.New("--ip and --dns apply to --server certificates only: a client certificate names its owner with --name")
		}
		if r.NoNameSAN {
			return nil, errors.New("--no-name-san applies to --server certificates only: a client certificate carries no addresses")
		}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		return checkLifetime(tmpl, caCert, days)
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	ips, dnsNames := r.IPs, r.DNSNames
	if !r.NoNameSAN {
		if ip := net.ParseIP(r.Name); ip != nil {
			ips = append([]net.IP{ip}, ips...)
		} else if isHostname(r.Name) {
			dnsNames = append([]string{r.Name}, dnsNames...)
		}
	}
	for _, ip := range ips {
		if ip4 := ip.To4(); ip4 != nil {
			ip = ip4
		} else if len(ip) != net.IPv6len {
			return nil, fmt.Errorf("invalid IP address %v: pass --ip like 203.0.113.10 or 2001:db8::1", ip)
		}
		if !slices.ContainsFunc(tmpl.IPAddresses, ip.Equal) {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		}
	}
	for _, d := range dnsNames {
		if !isHostname(d) {
			if net.ParseIP(d) != nil {
				return nil, fmt.Errorf("%q is an IP address: pass it with --ip %s instead of --dns", d, d)
			}
			return nil, fmt.Errorf("invalid DNS name %q: pass a hostname like vpn.example.com to --dns", d)
		}
		if !slices.ContainsFunc(tmpl.DNSNames, func(s string) bool { return strings.EqualFold(s, d) }) {
			tmpl.DNSNames = append(tmpl.DNSNames, d)
		}
	}
	if len(tmpl.IPAddresses) == 0 && len(tmpl.DNSNames) == 0 {
		if r.NoNameSAN {
			return nil, errors.New("--no-name-san leaves the certificate without an address: pass the addresses clients dial with --dns NAME or --ip IP")
		}
		return nil, fmt.Errorf("server name %q is neither a hostname nor an IP address, so clients cannot dial it: pass the address clients dial with --dns NAME or --ip IP", r.Name)
	}
	return checkLifetime(tmpl, caCert, days)
}

// NameInSANs reports whether a server certificate issued for r carries r.Name among its
// subjectAltNames: unless NoNameSAN is set, it does when Name is an IP address or a hostname.
func (r IssueRequest) NameInSANs() bool {
	return r.Server && !r.NoNameSAN && (net.ParseIP(r.Name) != nil || isHostname(r.Name))
}

// checkLifetime returns tmpl unless it would outlive caCert: chain verification fails once
// the CA expires, so such a certificate would promise a validity it cannot deliver.
func checkLifetime(tmpl, caCert *x509.Certificate, days int) (*x509.Certificate, error) {
	if tmpl.NotAfter.After(caCert.NotAfter) {
		return nil, fmt.Errorf("a %d-day certificate would outlive the CA, which expires %s: pass a smaller --days",
			days, caCert.NotAfter.UTC().Format(time.DateOnly))
	}
	return tmpl, nil
}

// IssueCert issues a leaf certificate signed by ca, in memory. The returned certificate holds
// the leaf only (peers already have the CA), its private key, and the parsed Leaf.
func (ca *CA) IssueCert(req IssueRequest) (tls.Certificate, error) {
	leaf, key, err := ca.issue(req)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// issue validates req, generates a key and signs a certificate for it.
func (ca *CA) issue(req IssueRequest) (*x509.Certificate, crypto.Signer, error) {
	tmpl, err := req.template(ca.Cert)
	if err != nil {
		return nil, nil, err
	}
	if tmpl.SerialNumber, err = randomSerial(); err != nil {
		return nil, nil, err
	}
	key, err := generateKey(req.Algorithm)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate %q: %w", req.Name, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse new certificate %q: %w", req.Name, err)
	}
	return leaf, key, nil
}

// Issue loads the CA from dir (see [LoadCA]), issues the certificate described by req, and
// writes it to dir as NAME.key (mode 0600) and NAME.crt (mode 0644).
//
// Issue never overwrites: if either file exists it returns an error and writes nothing.
func Issue(dir string, req IssueRequest) (Files, error) {
	if err := ValidateName(req.Name); err != nil {
		return Files{}, err
	}
	certFile, keyFile := certPaths(dir, req.Name)
	p := pair{certFile: certFile, keyFile: keyFile}
	if err := p.refuseExisting("certificate", "key", fmt.Sprintf("pick another --name or remove %s and %s", certFile, keyFile)); err != nil {
		return Files{}, err
	}
	ca, err := LoadCA(dir)
	if err != nil {
		return Files{}, err
	}
	leaf, key, err := ca.issue(req)
	if err != nil {
		return Files{}, err
	}
	p.certPEM = encodeCert(leaf.Raw)
	if p.keyPEM, err = encodeKey(key); err != nil {
		return Files{}, err
	}
	if err := p.write(); err != nil {
		return Files{}, err
	}
	return Files{CertFile: certFile, KeyFile: keyFile, Cert: leaf}, nil
}
