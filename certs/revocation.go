package certs

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrNoValidCRL is wrapped by every handshake error caused by the CRL rather than by the
// client: none was loaded, the last reload failed, or the loaded one has expired.
var ErrNoValidCRL = errors.New("no valid CRL, refusing every client certificate")

// DefaultWatchInterval is how often [Revocation.Watch] looks at the CRL file when no interval
// is given.
const DefaultWatchInterval = 10 * time.Second

// RevocationOptions configures [NewRevocation]. The zero value is the production setting.
type RevocationOptions struct {
	// Now returns the current time, for CRL expiry and certificate validity; nil means
	// time.Now. Tests inject a clock. Note that inside a testing/synctest bubble time.Now is
	// the bubble's clock, which starts in 2000: a test that runs handshakes in a bubble
	// against real-time certificates must inject the real time here (certstest does).
	Now func() time.Time
	// ReadFile reads the CRL file; nil means os.ReadFile. Tests inject failures.
	ReadFile func(name string) ([]byte, error)
}

// Revocation is the server's revocation checker: it enforces one CRL file, signed by one CA,
// on every client certificate, and reloads the file on request ([Revocation.Reload], e.g. on
// SIGHUP) or when it changes ([Revocation.Watch]).
//
// It fails closed. If a reload fails (the file is missing, unreadable, not a CRL, signed by
// another key, older than a CRL already loaded, or expired), the previous CRL is dropped, not
// kept: until a later reload succeeds every handshake is refused with an error wrapping
// [ErrNoValidCRL] and the reason. Keeping the old list would silently keep accepting
// certificates the operator has just tried to revoke. Likewise, once the loaded CRL passes
// its NextUpdate, handshakes are refused until a fresh one is loaded.
//
// A Revocation is safe for concurrent use. Handshakes read the current CRL through an
// atomic.Pointer and never wait for a reload.
type Revocation struct {
	path     string            // immutable
	ca       *x509.Certificate // immutable
	now      func() time.Time  // immutable
	readFile func(string) ([]byte, error)

	cur atomic.Pointer[revocationState] // never nil after NewRevocation

	mu        sync.Mutex // serialises reloads; guards the fields below
	stamp     fileStamp  // what the last reload attempt read
	maxNumber *big.Int   // highest CRL number loaded so far, to refuse rollbacks
}

// revocationState is what handshakes are checked against: a CRL, or why there is none.
type revocationState struct {
	crl *CRL  // nil iff err != nil
	err error // the reload failure
}

// fileStamp identifies what a read of the CRL file saw: its SHA-256, or the read error. Content
// is compared rather than mtime and size because a same-size rewrite within one mtime tick is
// otherwise missed, and a CRL is small enough to hash every few seconds.
type fileStamp struct {
	sum     [sha256.Size]byte
	readErr string
}

// NewRevocation loads the CRL at path (see [LoadCRL]), which must be signed by ca, and returns a
// checker enforcing it. It fails if the CRL cannot be loaded: a server should not start
// without one. Wire it into the server's config with [WithRevocation].
func NewRevocation(path string, ca *x509.Certificate, opts RevocationOptions) (*Revocation, error) {
	if ca == nil {
		return nil, errors.New("revocation: CA certificate is nil")
	}
	r := &Revocation{path: path, ca: ca, now: opts.Now, readFile: opts.ReadFile}
	if r.now == nil {
		r.now = time.Now
	}
	if r.readFile == nil {
		r.readFile = os.ReadFile
	}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Path returns the CRL file the checker enforces.
func (r *Revocation) Path() string { return r.path }

// Reload reads the CRL file again and enforces it if it is valid. On failure it returns the
// error and, failing closed, refuses every handshake until a later reload succeeds.
func (r *Revocation) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	data, stamp, err := r.read()
	return r.installLocked(data, stamp, err)
}

// ReloadIfChanged reloads the CRL file, as [Revocation.Reload] does, if it differs from what the
// last reload attempt read (content, or the error reading it). It reports whether it reloaded,
// and the reload's error. A file that is still broken is not reloaded again, so the failure is
// reported once per change.
func (r *Revocation) ReloadIfChanged() (reloaded bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	data, stamp, err := r.read()
	if stamp == r.stamp {
		return false, nil
	}
	return true, r.installLocked(data, stamp, err)
}

// transientReadError reports whether a read failed because the process or the system ran out
// of a resource rather than because of the file.
func transientReadError(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.EINTR) || errors.Is(err, syscall.EAGAIN)
}

// read reads the CRL file and stamps what it saw.
func (r *Revocation) read() ([]byte, fileStamp, error) {
	data, err := r.readFile(r.path)
	if err != nil {
		return nil, fileStamp{readErr: err.Error()}, err
	}
	return data, fileStamp{sum: sha256.Sum256(data)}, nil
}

// installLocked parses data (or takes readErr) and swaps in the result. r.mu must be held.
//
// A read that failed for want of local resources (no descriptor free, in the process or the
// system; no memory) says nothing about the file: the CRL in force stays, and the next check
// reads again. Dropping it would close every live session of a server that is only busy. Any
// other failure (missing, unreadable, not a valid CRL, wrongly signed, expired, older) fails
// closed.
func (r *Revocation) installLocked(data []byte, stamp fileStamp, readErr error) error {
	if readErr != nil && transientReadError(readErr) && r.cur.Load() != nil && r.cur.Load().err == nil {
		return fmt.Errorf("%w (keeping the revocation list in force; will retry)", pathError("read CRL", r.path, readErr))
	}
	r.stamp = stamp
	crl, err := r.parse(data, readErr)
	if err != nil {
		r.cur.Store(&revocationState{err: err})
		return err
	}
	r.maxNumber = crl.List.Number
	r.cur.Store(&revocationState{crl: crl})
	return nil
}

// parse turns what read returned into a CRL that may be enforced now.
func (r *Revocation) parse(data []byte, readErr error) (*CRL, error) {
	if readErr != nil {
		return nil, crlReadError(r.path, readErr)
	}
	crl, err := parseCRL(r.path, data, r.ca)
	if err != nil {
		return nil, err
	}
	if err := crl.CheckFresh(r.now()); err != nil {
		return nil, err
	}
	if n := crl.List.Number; r.maxNumber != nil && (n == nil || n.Cmp(r.maxNumber) < 0) {
		return nil, fmt.Errorf("CRL %s has number %v, older than number %v loaded before: an old copy replaced it; "+
			"copy the current crl.pem here, or issue a new one with 'tunneld pki crl'", r.path, n, r.maxNumber)
	}
	return crl, nil
}

// Current returns the CRL being enforced, or the error every handshake is refused with:
// the last reload failed, or the CRL has expired since it was loaded.
func (r *Revocation) Current() (*CRL, error) {
	st := r.cur.Load()
	if st.err != nil {
		return nil, st.err
	}
	if err := st.crl.CheckFresh(r.now()); err != nil {
		return nil, err
	}
	return st.crl, nil
}

// NextUpdate returns when the CRL being enforced expires (its NextUpdate), or, as
// [Revocation.Current], why none is being enforced.
func (r *Revocation) NextUpdate() (time.Time, error) {
	crl, err := r.Current()
	if err != nil {
		return time.Time{}, err
	}
	return crl.List.NextUpdate, nil
}

// IsRevoked reports whether a certificate with serial must be refused because of revocation:
// it is listed in the current CRL, or there is no valid current CRL (fail closed). Use
// [Revocation.Check] to learn why.
func (r *Revocation) IsRevoked(serial *big.Int) bool {
	crl, err := r.Current()
	return err != nil || crl.IsRevoked(serial)
}

// Check returns nil if the client certificate leaf may be used now: there is a valid CRL, the
// certificate is within its validity period, and the CRL does not list its serial. Errors
// wrap [ErrNoValidCRL] or [ErrRevoked] where those apply. It checks neither the signature nor
// the issuer; [Revocation.VerifyConnection] does the latter.
//
// The validity check repeats what chain verification does on a full handshake. It matters for
// long-lived sessions re-checked with Check, and as a guard on resumed sessions (Go 1.26
// re-verifies a resumed session's chain before accepting it, but that is crypto/tls's
// implementation, not its documented contract).
func (r *Revocation) Check(leaf *x509.Certificate) error {
	crl, err := r.Current()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNoValidCRL, err)
	}
	name := leaf.Subject.CommonName
	switch now := r.now(); {
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("certificate %q (serial %s) is not valid until %s", name, FormatSerial(leaf.SerialNumber), leaf.NotBefore.UTC().Format(time.RFC3339))
	case now.After(leaf.NotAfter):
		return fmt.Errorf("certificate %q (serial %s) expired at %s", name, FormatSerial(leaf.SerialNumber), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if e, ok := crl.Lookup(leaf.SerialNumber); ok {
		return fmt.Errorf("%w: %q (serial %s) was revoked at %s (%s)", ErrRevoked, name,
			FormatSerial(leaf.SerialNumber), e.RevocationTime.UTC().Format(time.RFC3339), ReasonText(e.ReasonCode))
	}
	return nil
}

// VerifyConnection checks the verified client certificate of cs with [Revocation.Check], after
// making sure it was issued by the checker's CA: a certificate from any other CA in the pool
// is not covered by this CRL, so it is refused. It has the signature of
// tls.Config.VerifyConnection; [WithRevocation] installs it. Servers can also call it on live
// sessions' ConnectionState after a reload, to close sessions whose certificate was revoked.
func (r *Revocation) VerifyConnection(cs tls.ConnectionState) error {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return ErrNoPeerCertificate
	}
	leaf := cs.VerifiedChains[0][0]
	covered := false
	for _, chain := range cs.VerifiedChains {
		if len(chain) >= 2 && chain[1].Equal(r.ca) {
			covered = true
			break
		}
	}
	if !covered {
		return fmt.Errorf("certificate %q (serial %s) was not issued by CA %q, whose CRL is the only one loaded: "+
			"the server cannot check its revocation", leaf.Subject.CommonName, FormatSerial(leaf.SerialNumber), r.ca.Subject.CommonName)
	}
	return r.Check(leaf)
}

// Watch polls the CRL file every interval (0 means [DefaultWatchInterval]) until ctx is done,
// reloading it when it changes (see [Revocation.ReloadIfChanged]). It calls report, if not
// nil, from Watch's goroutine: with nil after a successful reload, with the error after a
// failed one, and with the expiry error once when the loaded CRL passes its NextUpdate. A
// server uses report to log, and after a successful reload to re-check live sessions with
// [Revocation.VerifyConnection]. Replace the file atomically, as 'tunneld pki' does: a
// half-written file that Watch happens to read fails closed until the next poll.
func (r *Revocation) Watch(ctx context.Context, interval time.Duration, report func(error)) {
	if interval <= 0 {
		interval = DefaultWatchInterval
	}
	if report == nil {
		report = func(error) {}
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var expired *revocationState // the state whose expiry was reported
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if reloaded, err := r.ReloadIfChanged(); reloaded {
			report(err)
			continue
		}
		if st := r.cur.Load(); st.crl != nil && st != expired {
			if err := st.crl.CheckFresh(r.now()); err != nil {
				expired = st
				report(err)
			}
		}
	}
}

// WithRevocation returns a clone of cfg, a server config from [ServerConfigFrom] or
// [ServerConfig], whose VerifyConnection runs cfg's own check and then r's (see
// [Revocation.VerifyConnection]). crypto/tls calls VerifyConnection on every handshake,
// including resumed TLS 1.3 sessions (which skip VerifyPeerCertificate), so a revoked
// certificate is refused even if session tickets are enabled. r must not be nil.
func WithRevocation(cfg *tls.Config, r *Revocation) *tls.Config {
	if r == nil {
		panic("certs.WithRevocation: nil *Revocation")
	}
	out := cfg.Clone()
	prev := cfg.VerifyConnection
	out.VerifyConnection = func(cs tls.ConnectionState) error {
		if prev != nil {
			if err := prev(cs); err != nil {
				return err
			}
		}
		return r.VerifyConnection(cs)
	}
	return out
}

// LoadCACert reads the CA certificate file given to the server (--ca), which must hold exactly
// one CA certificate, for [NewRevocation].
func LoadCACert(caFile string) (*x509.Certificate, error) {
	data, err := readFile(caFile, "CA certificate", "copy ca.crt from the PKI directory (created by 'tunneld pki init')")
	if err != nil {
		return nil, err
	}
	cas, err := parseCerts(caFile, data)
	if err != nil {
		return nil, err
	}
	if len(cas) != 1 || !cas[0].IsCA {
		return nil, fmt.Errorf("%s must hold exactly one CA certificate to check a CRL against, not %d certificate(s): pass the ca.crt from 'tunneld pki init'", caFile, len(cas))
	}
	return cas[0], nil
}
