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
	"time"
)

// IssueRequest describes a leaf certificate to issue. Exactly one of Server and Client is set.
type IssueRequest struct {
	// Name is the certificate's CommonName and file name; see [ValidateName]. For a client
	// it is the identity the server sees (see [PeerIdentity]).
	Name string

	Server bool // issue a server certificate (extKeyUsage serverAuth)
	Client bool // issue a client certificate (extKeyUsage clientAuth)

	// IPs and DNSNames are the server's subjectAltNames: the addresses clients dial. If both
	// are empty, Name is used as the DNS name when it is a valid hostname. They must be
	// empty for a client certificate, which carries only its CommonName.
	IPs      []net.IP
	DNSNames []string

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
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		return checkLifetime(tmpl, caCert, days)
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	for _, ip := range r.IPs {
		if ip4 := ip.To4(); ip4 != nil {
			ip = ip4
		} else if len(ip) != net.IPv6len {
			return nil, fmt.Errorf("invalid IP address %v: pass --ip like 203.0.113.10 or 2001:db8::1", ip)
		}
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	}
	for _, d := range r.DNSNames {
		if !isHostname(d) {
			if net.ParseIP(d) != nil {
				return nil, fmt.Errorf("%q is an IP address: pass it with --ip %s instead of --dns", d, d)
			}
			return nil, fmt.Errorf("invalid DNS name %q: pass a hostname like vpn.example.com to --dns", d)
		}
		tmpl.DNSNames = append(tmpl.DNSNames, d)
	}
	if len(tmpl.IPAddresses) == 0 && len(tmpl.DNSNames) == 0 {
		if !isHostname(r.Name) {
			return nil, fmt.Errorf("server name %q is not a hostname, so it cannot be the certificate's DNS name: pass the address clients dial with --dns NAME or --ip IP", r.Name)
		}
		tmpl.DNSNames = []string{r.Name}
	}
	return checkLifetime(tmpl, caCert, days)
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
