package certs

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// clockSkew is how far before "now" certificates become valid, so a peer whose clock is a
// little behind still accepts a certificate issued a moment ago.
const clockSkew = 5 * time.Minute

// CAOptions configures a new CA. The zero value gives an ECDSA P-256 CA named
// [DefaultCACommonName], valid for [DefaultCADays] days.
type CAOptions struct {
	Algorithm  Algorithm // key algorithm; "" means ECDSA
	CommonName string    // subject CommonName; "" means DefaultCACommonName
	Days       int       // validity in days; 0 means DefaultCADays
	CRLDays    int       // validity of the empty CRL InitCA writes; 0 means DefaultCRLDays
	// Now is the issuing time; the zero value means time.Now(). Tests set it to mint
	// expired or not-yet-valid CAs.
	Now time.Time
}

// CA is a certificate authority in memory: the certificate and its signing key.
// A CA is immutable after creation and safe for concurrent use.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewCA creates a self-signed CA in memory. It writes nothing; [InitCA] is NewCA plus files.
//
// The certificate is a CA (BasicConstraints cA=TRUE) with MaxPathLen 0, so it can sign leaf
// certificates only, and key usages certSign and cRLSign (the latter for revocation lists).
func NewCA(opts CAOptions) (*CA, error) {
	days, err := validityDays(opts.Days, DefaultCADays, "CA validity")
	if err != nil {
		return nil, err
	}
	cn := opts.CommonName
	if cn == "" {
		cn = DefaultCACommonName
	}
	if len(cn) > maxNameLen {
		return nil, fmt.Errorf("CA common name %.20q... is %d characters long: use at most %d", cn, len(cn), maxNameLen)
	}
	key, err := generateKey(opts.Algorithm)
	if err != nil {
		return nil, err
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.AddDate(0, 0, days),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse new CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// InitCA creates a new CA (see [NewCA]) and writes it to dir as ca.key (mode 0600) and ca.crt
// (mode 0644), plus an empty CRL signed by it as crl.pem (mode 0644; CRL number 1, valid for
// opts.CRLDays), creating dir with mode 0700 if it is missing.
//
// InitCA never overwrites: if any of the files exists it returns an error and writes nothing.
// If it fails part way it removes what it created, so a retry starts from a clean state.
func InitCA(dir string, opts CAOptions) (Files, error) {
	if opts.CRLDays < 0 {
		return Files{}, fmt.Errorf("CRL validity of %d days: use a positive number of days", opts.CRLDays)
	}
	ca, err := NewCA(opts)
	if err != nil {
		return Files{}, err
	}
	crl, err := ca.SignCRL(CRLRequest{Days: opts.CRLDays, Now: opts.Now})
	if err != nil {
		return Files{}, err
	}
	crlFile := filepath.Join(dir, CRLFile)
	keyPEM, err := encodeKey(ca.Key)
	if err != nil {
		return Files{}, err
	}
	p := pair{
		certFile: filepath.Join(dir, CACertFile),
		keyFile:  filepath.Join(dir, CAKeyFile),
		certPEM:  encodeCert(ca.Cert.Raw),
		keyPEM:   keyPEM,
	}
	undoDir, err := ensureDir(dir)
	if err != nil {
		return Files{}, err
	}
	if err := p.refuseExisting("CA certificate", "CA key", fmt.Sprintf("use the existing CA, or remove %s and %s to start over (every certificate it issued stops working)", p.certFile, p.keyFile)); err != nil {
		undoDir()
		return Files{}, err
	}
	if _, err := os.Lstat(crlFile); !errors.Is(err, fs.ErrNotExist) {
		undoDir()
		if err != nil {
			return Files{}, pathError("check", crlFile, err)
		}
		return Files{}, fmt.Errorf("CRL %s already exists: refusing to overwrite; it belongs to a previous CA: move it away first", crlFile)
	}
	if err := p.write(); err != nil {
		undoDir()
		return Files{}, err
	}
	if err := writeExclusive(crlFile, EncodeCRL(crl), certFileMode); err != nil {
		os.Remove(p.certFile)
		os.Remove(p.keyFile)
		undoDir()
		return Files{}, err
	}
	return Files{CertFile: p.certFile, KeyFile: p.keyFile, CRLFile: crlFile, Cert: ca.Cert}, nil
}

// LoadCA reads the CA written by [InitCA] from dir and checks that the key matches the
// certificate and that the certificate is a CA.
func LoadCA(dir string) (*CA, error) {
	certFile := filepath.Join(dir, CACertFile)
	keyFile := filepath.Join(dir, CAKeyFile)
	certPEM, err := os.ReadFile(certFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no CA in %s (%s): run 'tunneld pki init --dir %s' first", dir, certFile, dir)
	}
	if err != nil {
		return nil, pathError("read CA certificate", certFile, err)
	}
	keyPEM, err := readFile(keyFile, "CA key", "issue certificates where the CA key is kept: pass the directory given to 'tunneld pki init' as --dir")
	if err != nil {
		return nil, err
	}
	certs, err := parseCerts(certFile, certPEM)
	if err != nil {
		return nil, err
	}
	cert := certs[0]
	if !cert.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate: pass the --dir given to 'tunneld pki init'", certFile)
	}
	key, err := parseKey(keyFile, keyPEM)
	if err != nil {
		return nil, err
	}
	if !keyMatches(cert, key) {
		return nil, fmt.Errorf("CA key %s does not match CA certificate %s: restore the pair written by 'tunneld pki init'", keyFile, certFile)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Pool returns a new pool holding only the CA certificate, for use as RootCAs or ClientCAs.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return pool
}

// serialLimit bounds serial numbers to 128 bits, well inside RFC 5280's 20-octet limit.
var serialLimit = new(big.Int).Lsh(big.NewInt(1), 128)

// randomSerial returns a random positive serial number of up to 128 bits.
func randomSerial() (*big.Int, error) {
	for {
		n, err := rand.Int(rand.Reader, serialLimit)
		if err != nil {
			return nil, fmt.Errorf("generate serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// validityDays returns days, or def when days is 0; a negative number is
// an error naming what.
func validityDays(days, def int, what string) (int, error) {
	if days == 0 {
		return def, nil
	}
	if days < 0 {
		return 0, fmt.Errorf("%s of %d days: use a positive number of days", what, days)
	}
	return days, nil
}
