package certs

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// File modes of what this package writes. Keys are private to the owner; certificates are public.
const (
	keyFileMode  fs.FileMode = 0o600
	certFileMode fs.FileMode = 0o644
	dirMode      fs.FileMode = 0o700
)

const (
	pemCertificate = "CERTIFICATE"
	pemPrivateKey  = "PRIVATE KEY"
)

// encodeCert returns der as a PEM CERTIFICATE block.
func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der})
}

// encodeKey returns key as a PEM PKCS#8 PRIVATE KEY block.
func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// pair is one certificate and key to write side by side.
type pair struct {
	certFile, keyFile string
	certPEM, keyPEM   []byte
}

// refuseExisting returns an error naming the file if either file of p already exists, ending
// with advice; certKind and keyKind describe the two files.
func (p pair) refuseExisting(certKind, keyKind, advice string) error {
	for _, f := range []struct{ kind, path string }{{certKind, p.certFile}, {keyKind, p.keyFile}} {
		_, err := os.Lstat(f.path)
		if err == nil {
			return fmt.Errorf("%s %s already exists: refusing to overwrite; %s", f.kind, f.path, advice)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return pathError("check", f.path, err)
		}
	}
	return nil
}

// write creates the key file and then the certificate file, each with O_EXCL so an existing
// file is never replaced (even one created after refuseExisting ran). The key goes first so
// a certificate on disk always has its key; if the certificate cannot be written, the key
// written here is removed again.
func (p pair) write() error {
	if err := writeExclusive(p.keyFile, p.keyPEM, keyFileMode); err != nil {
		return err
	}
	if err := writeExclusive(p.certFile, p.certPEM, certFileMode); err != nil {
		os.Remove(p.keyFile)
		return err
	}
	return nil
}

// writeExclusive creates path with exactly mode and writes data to it, failing if path exists.
// On any error after creation the partial file is removed.
func writeExclusive(path string, data []byte, mode fs.FileMode) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s already exists: refusing to overwrite; remove it first", path)
		}
		return pathError("create", path, err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = pathError("close", path, cerr)
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	// The umask may have narrowed mode; set it exactly (it never widens a key beyond 0600).
	if err := f.Chmod(mode); err != nil {
		return pathError("chmod", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return pathError("write", path, err)
	}
	if err := f.Sync(); err != nil {
		return pathError("sync", path, err)
	}
	return nil
}

// ensureDir creates dir with mode 0700 if it does not exist. It returns a func that removes
// dir again if, and only if, this call created it and it is still empty.
func ensureDir(dir string) (undo func(), err error) {
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return nil, fmt.Errorf("%s is not a directory: pass a directory to --dir", dir)
		}
		return func() {}, nil
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, pathError("create directory", dir, err)
	}
	return func() { os.Remove(dir) }, nil
}

// readFile reads path; if it does not exist the error says what it is and how to create it.
func readFile(path, what, howToCreate string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s %s not found: %s", what, path, howToCreate)
	}
	if err != nil {
		return nil, pathError("read "+what, path, err)
	}
	return b, nil
}

// pathError returns "VERB PATH: REASON" for err from an operation on path. The *fs.PathError
// (or *os.LinkError) of the os package names the path itself, so when it is path the reason
// alone is kept: "read server key a.key: is a directory", not "read server key a.key: read
// a.key: is a directory". errors.Is still sees the underlying error.
func pathError(verb, path string, err error) error {
	var pe *fs.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &pe) && pe.Path == path:
		err = pe.Err
	case errors.As(err, &le) && (le.Old == path || le.New == path):
		err = le.Err
	}
	return fmt.Errorf("%s %s: %w", verb, path, err)
}

// parseCerts decodes every CERTIFICATE block in data, which was read from path.
func parseCerts(path string, data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != pemCertificate {
			if block.Type == pemPrivateKey || block.Type == "EC PRIVATE KEY" {
				return nil, fmt.Errorf("%s holds a private key, not a certificate: pass the .crt file here", path)
			}
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate in %s: %w", path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s holds no PEM CERTIFICATE block: pass a .crt file written by 'tunneld pki'", path)
	}
	return certs, nil
}

// parseKey decodes the PKCS#8 PRIVATE KEY block in data, which was read from path.
func parseKey(path string, data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("%s holds no PEM PRIVATE KEY block: pass the .key file written by 'tunneld pki'", path)
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case pemPrivateKey:
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case pemCertificate:
			return nil, fmt.Errorf("%s holds a certificate, not a private key: pass the .key file here", path)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse private key in %s: %w", path, err)
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("private key in %s is a %T, not a signing key", path, key)
		}
		return s, nil
	}
}

// keyMatches reports whether key is the private half of cert's public key.
func keyMatches(cert *x509.Certificate, key crypto.Signer) bool {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(cert.PublicKey)
}

// loadKeyPair reads a leaf certificate (optionally followed by intermediates) and its key.
// role is "server" or "client" and only shapes the advice in errors.
func loadKeyPair(certFile, keyFile, role string) (tls.Certificate, error) {
	howTo := fmt.Sprintf("create it with 'tunneld pki issue --dir DIR --%s --name NAME'", role)
	certPEM, err := readFile(certFile, role+" certificate", howTo)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := readFile(keyFile, role+" key", howTo+" (it writes NAME.crt and NAME.key together)")
	if err != nil {
		return tls.Certificate{}, err
	}
	chain, err := parseCerts(certFile, certPEM)
	if err != nil {
		return tls.Certificate{}, err
	}
	key, err := parseKey(keyFile, keyPEM)
	if err != nil {
		return tls.Certificate{}, err
	}
	if !keyMatches(chain[0], key) {
		return tls.Certificate{}, fmt.Errorf("key %s does not match certificate %s: pass the .key written together with this .crt", keyFile, certFile)
	}
	tc := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc, nil
}

// loadPool reads the CA certificate file into a pool holding only those certificates.
func loadPool(caFile string) (*x509.CertPool, error) {
	data, err := readFile(caFile, "CA certificate", fmt.Sprintf("copy %s from the server's PKI directory (created by 'tunneld pki init')", filepath.Base(caFile)))
	if err != nil {
		return nil, err
	}
	cas, err := parseCerts(caFile, data)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		if !c.IsCA {
			return nil, fmt.Errorf("%s holds %q, which is not a CA certificate: pass the ca.crt from 'tunneld pki init'", caFile, c.Subject.CommonName)
		}
		pool.AddCert(c)
	}
	return pool, nil
}
