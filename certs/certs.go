// Package certs is the private PKI of tlsvpn: it creates the CA, issues server and client
// certificates, and builds the strict tls.Configs both binaries use.
//
// The trust model is deliberately small. One CA per deployment signs every certificate; it is
// the only root either side trusts (never the system roots). The server presents a certificate
// with the serverAuth usage whose SANs name the address clients dial; every client presents a
// clientAuth certificate whose CommonName is its identity (see [PeerIdentity]). Connections are
// TLS 1.3 only with the hybrid post-quantum key exchange X25519MLKEM768 preferred.
//
// On disk a PKI directory holds ca.crt/ca.key, NAME.crt/NAME.key pairs and crl.pem: certificates
// are PEM "CERTIFICATE" blocks (mode 0644), keys are PEM PKCS#8 "PRIVATE KEY" blocks (mode
// 0600), and the certificate revocation list is a PEM "X509 CRL" block (mode 0644). Nothing
// here ever overwrites an existing certificate or key; crl.pem is replaced atomically (write a
// temporary file, then rename) each time it is re-signed.
//
// Revocation is enforced by the server in tls.Config.VerifyConnection (see [WithRevocation]),
// which crypto/tls calls on every handshake including resumed ones, unlike
// VerifyPeerCertificate. It fails closed: a missing, unreadable, wrongly signed or expired CRL
// refuses every client until a good one is loaded (see [Revocation]).
//
// The package uses only the standard library.
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"net"
	"path/filepath"
	"strings"
)

// Algorithm names a key algorithm for a CA or leaf key.
type Algorithm string

// Supported key algorithms. The zero value "" means [ECDSA].
const (
	ECDSA   Algorithm = "ecdsa"   // ECDSA on NIST P-256 (the default)
	Ed25519 Algorithm = "ed25519" // Ed25519 (RFC 8032)
)

// Defaults applied when the corresponding option is zero.
const (
	DefaultCADays       = 3650        // CA validity: ten years
	DefaultLeafDays     = 365         // server and client certificate validity
	DefaultCACommonName = "tlsvpn CA" // CA subject CommonName
)

// File names inside a PKI directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// Files describes a certificate and key written by [InitCA] or [Issue].
type Files struct {
	CertFile string            // path of the PEM certificate (mode 0644)
	KeyFile  string            // path of the PEM PKCS#8 private key (mode 0600)
	CRLFile  string            // InitCA only: path of the empty CRL (mode 0644)
	Cert     *x509.Certificate // the certificate that was written
}

// maxNameLen is the upper bound on a certificate name: RFC 5280's ub-common-name.
const maxNameLen = 64

// ValidateName reports whether name may be used as a certificate name with [Issue]: 1 to 64
// characters of [A-Za-z0-9._-], not starting with '.' or '-', and not "ca" (any case), which
// is reserved for the CA's own files. The name becomes both the file name and the
// certificate's CommonName, so the rules keep it safe as a path element and in logs.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("empty name: pass --name, e.g. --name laptop")
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("name %.20q... is %d characters long: use at most %d", name, len(name), maxNameLen)
	}
	for _, r := range name {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9', r == '.', r == '_', r == '-':
		default:
			return fmt.Errorf("name %q contains %q: use only letters, digits, '.', '_' and '-'", name, r)
		}
	}
	if name[0] == '.' || name[0] == '-' {
		return fmt.Errorf("name %q starts with %q: start it with a letter, digit or '_'", name, name[0])
	}
	if strings.EqualFold(name, "ca") {
		return fmt.Errorf("name %q is reserved for the CA's own files: pick another name", name)
	}
	return nil
}

// isHostname reports whether s is a DNS hostname usable as a dNSName SAN (RFC 1123 labels,
// no trailing dot, no wildcard) and not an IP address literal.
func isHostname(s string) bool {
	if s == "" || len(s) > 253 || net.ParseIP(s) != nil {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// generateKey returns a new private key for alg.
func generateKey(alg Algorithm) (crypto.Signer, error) {
	switch alg {
	case ECDSA, "":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case Ed25519:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	default:
		return nil, fmt.Errorf("unknown key algorithm %q: use %q or %q", alg, ECDSA, Ed25519)
	}
}

// describeKey names a public key for humans, e.g. "ECDSA P-256".
func describeKey(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	default:
		return fmt.Sprintf("%T", pub)
	}
}

// DescribeKey names the key algorithm of cert for humans, e.g. "ECDSA P-256" or "Ed25519".
func DescribeKey(cert *x509.Certificate) string {
	return describeKey(cert.PublicKey)
}

// certPaths returns the certificate and key paths for name in dir.
func certPaths(dir, name string) (certFile, keyFile string) {
	return filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
}
