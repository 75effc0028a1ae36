package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// curvePreferences is the key exchange order for both sides: the hybrid post-quantum
// X25519MLKEM768 (draft-ietf-tls-ecdhe-mlkem) first, plain X25519 as the fallback. It is set
// explicitly so a change in crypto/tls defaults (or a GODEBUG) cannot silently drop ML-KEM.
var curvePreferences = []tls.CurveID{tls.X25519MLKEM768, tls.X25519}

// baseConfig returns the settings shared by server and client.
func baseConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		// TLS 1.3 only: no renegotiation, no RSA key transport, encrypted certificates, and
		// (in Go) a fixed set of AEAD cipher suites, so there is nothing else to configure.
		MinVersion:       tls.VersionTLS13,
		MaxVersion:       tls.VersionTLS13,
		CurvePreferences: curvePreferences,
		// The tunnel coalesces packets into full 16 KiB records; slow-start record sizing
		// only adds overhead on a long-lived bulk stream.
		DynamicRecordSizingDisabled: true,
	}
}

// ServerConfigFrom returns the server's TLS config for already-loaded material: it presents
// cert and requires every client to present a certificate that chains to a CA in clientCAs
// (which should hold only the project CA, never system roots) and has the clientAuth usage.
// After verification, [PeerIdentity] must succeed for the handshake to complete.
//
// Unlike [ServerConfig] it does not check cert itself, so tests can present deliberately bad
// certificates. The caller sets NextProtos (ALPN) and may set Time (for tests). To check
// client certificates against a CRL, pass the result to [WithRevocation].
func ServerConfigFrom(cert tls.Certificate, clientCAs *x509.CertPool) *tls.Config {
	cfg := baseConfig(cert)
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.ClientCAs = clientCAs
	// Session tickets stay on: a client reconnecting after a network change or a session
	// rotation resumes in one round trip without new signatures. On resumption crypto/tls
	// re-checks the chain's validity period, and VerifyConnection (identity here, the CRL
	// with WithRevocation) runs on resumed connections too; VerifyPeerCertificate would not.
	// VerifyConnection runs after chain verification on every connection, resumed ones
	// included. WithRevocation chains the CRL check after this one.
	cfg.VerifyConnection = verifyClient
	return cfg
}

// verifyClient is the server's VerifyConnection hook.
func verifyClient(cs tls.ConnectionState) error {
	_, err := PeerIdentity(cs)
	return err
}

// ClientConfigFrom returns the client's TLS config for already-loaded material: it presents
// cert, trusts only the CAs in rootCAs (never system roots), and requires the server's
// certificate to have the serverAuth usage and a SAN matching serverName, which is the DNS
// name or IP address the client dials.
//
// Unlike [ClientConfig] it does not check its arguments, so tests can present deliberately bad
// certificates. The caller sets NextProtos (ALPN) and may set Time (for tests).
func ClientConfigFrom(cert tls.Certificate, rootCAs *x509.CertPool, serverName string) *tls.Config {
	cfg := baseConfig(cert)
	cfg.RootCAs = rootCAs
	cfg.ServerName = serverName
	return cfg
}

// ServerConfig loads the server certificate and key and the CA certificate from files and
// returns [ServerConfigFrom] for them. It first checks that the key matches, and that the
// certificate is a server certificate issued by that CA and valid now, so a wrong file fails
// here with advice rather than at every client's handshake.
func ServerConfig(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, pool, err := loadConfigFiles(certFile, keyFile, caFile, "server", x509.ExtKeyUsageServerAuth)
	if err != nil {
		return nil, err
	}
	return ServerConfigFrom(cert, pool), nil
}

// ClientConfig loads the client certificate and key and the CA certificate from files and
// returns [ClientConfigFrom] for them. It first checks that the key matches, and that the
// certificate is a client certificate issued by that CA (one CA signs both server and client
// certificates) and valid now. serverName must be a DNS name or IP address in the server's
// certificate.
func ClientConfig(certFile, keyFile, caFile, serverName string) (*tls.Config, error) {
	if serverName == "" {
		return nil, errors.New("server name is empty: pass the DNS name or IP address the server certificate was issued for")
	}
	cert, pool, err := loadConfigFiles(certFile, keyFile, caFile, "client", x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	return ClientConfigFrom(cert, pool, serverName), nil
}

// loadConfigFiles loads a key pair and CA pool and checks the leaf for role.
func loadConfigFiles(certFile, keyFile, caFile, role string, usage x509.ExtKeyUsage) (tls.Certificate, *x509.CertPool, error) {
	cert, err := loadKeyPair(certFile, keyFile, role)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pool, err := loadPool(caFile)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	if err := checkLeaf(cert, pool, usage, certFile, caFile, role, time.Now()); err != nil {
		return tls.Certificate{}, nil, err
	}
	return cert, pool, nil
}

// checkLeaf verifies cert's leaf against pool for usage at now, as the peer will, and turns
// failures into advice.
func checkLeaf(cert tls.Certificate, pool *x509.CertPool, usage x509.ExtKeyUsage, certFile, caFile, role string, now time.Time) error {
	leaf := cert.Leaf
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("parse intermediate certificate in %s: %w", certFile, err)
		}
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	if err == nil {
		return nil
	}
	reissue := fmt.Sprintf("issue a new one with 'tunneld pki issue --dir DIR --%s --name %s'", role, leaf.Subject.CommonName)
	var invalid x509.CertificateInvalidError
	var unknown x509.UnknownAuthorityError
	switch {
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		if now.Before(leaf.NotBefore) {
			return fmt.Errorf("certificate %s is not valid until %s: check this machine's clock", certFile, leaf.NotBefore.UTC().Format(time.RFC3339))
		}
		return fmt.Errorf("certificate %s expired at %s: %s", certFile, leaf.NotAfter.UTC().Format(time.RFC3339), reissue)
	case errors.As(err, &invalid) && invalid.Reason == x509.IncompatibleUsage:
		return fmt.Errorf("certificate %s is not a %s certificate: %s", certFile, role, reissue)
	case errors.As(err, &unknown):
		return fmt.Errorf("certificate %s was not issued by the CA in %s: pass the ca.crt from the --dir it was issued from, or %s", certFile, caFile, reissue)
	default:
		return fmt.Errorf("verify certificate %s against %s: %w", certFile, caFile, err)
	}
}

// LeafExpiry returns the earliest NotAfter among the certificates cfg presents, so callers can
// log when it expires (and warn when that is soon). It returns the zero Time if cfg presents
// no parsed certificate.
func LeafExpiry(cfg *tls.Config) time.Time {
	var t time.Time
	for _, c := range cfg.Certificates {
		if c.Leaf != nil && (t.IsZero() || c.Leaf.NotAfter.Before(t)) {
			t = c.Leaf.NotAfter
		}
	}
	return t
}

// ErrNoPeerCertificate is returned by [PeerIdentity] when the connection has no verified
// peer certificate.
var ErrNoPeerCertificate = errors.New("no verified peer certificate")

// PeerIdentity returns the identity of the peer of a completed handshake: the CommonName of
// its verified leaf certificate. On the server this is the client's --name from
// 'tunneld pki issue --client'. It fails if the peer's certificate was not verified (for
// example on a config that does not require one) or its CommonName is not a valid name
// (see [ValidateName]).
func PeerIdentity(cs tls.ConnectionState) (string, error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", ErrNoPeerCertificate
	}
	cn := cs.VerifiedChains[0][0].Subject.CommonName
	if cn == "" {
		return "", errors.New("peer certificate has an empty common name, so it names no identity")
	}
	if err := ValidateName(cn); err != nil {
		return "", fmt.Errorf("peer certificate common name %q is not a valid identity: %w", cn, err)
	}
	return cn, nil
}
