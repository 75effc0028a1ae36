package certs

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// CRLFile is the name of the certificate revocation list inside a PKI directory.
const CRLFile = "crl.pem"

// DefaultCRLDays is how long a CRL written by this package stays valid (its NextUpdate) when no
// other validity is given: 30 days.
//
// The server fails closed once the CRL it enforces passes NextUpdate, so this is the grace
// period for a forgotten refresh, not how often to refresh. A month is long enough that a
// missed cron run or a holiday does not lock every client out, and short enough that a stale
// copy of crl.pem (one that predates a revocation) stops working within weeks. Refresh it
// daily or weekly with 'tunneld pki crl'.
const DefaultCRLDays = 30

const pemCRL = "X509 CRL"

// ErrRevoked is wrapped by the handshake error for a client certificate listed in the CRL.
var ErrRevoked = errors.New("certificate is revoked")

// CRLRequest describes a CRL to sign with [CA.SignCRL].
type CRLRequest struct {
	// Number is the CRL number (RFC 5280 §5.2.3). It must be positive and grow with every
	// CRL the CA issues, so a server can refuse to go back to an older list. nil means 1.
	Number *big.Int
	// Revoked lists the revoked certificates. Only SerialNumber, RevocationTime and
	// ReasonCode are used.
	Revoked []x509.RevocationListEntry
	// Days is the validity: NextUpdate is Now plus Days days. 0 means DefaultCRLDays.
	Days int
	// Now is ThisUpdate; the zero value means time.Now(). Tests set it to mint expired CRLs.
	Now time.Time
}

// SignCRL signs a CRL for req with the CA's key and returns it parsed (Raw holds the DER).
// It writes nothing; see [Revoke] and [RefreshCRL] for the file in a PKI directory.
func (ca *CA) SignCRL(req CRLRequest) (*x509.RevocationList, error) {
	days, err := validityDays(req.Days, DefaultCRLDays, "CRL validity")
	if err != nil {
		return nil, err
	}
	number := req.Number
	if number == nil {
		number = big.NewInt(1)
	}
	if number.Sign() <= 0 {
		return nil, fmt.Errorf("CRL number %v: use a positive number", number)
	}
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}
	tmpl := &x509.RevocationList{
		Number:     number,
		ThisUpdate: now,
		NextUpdate: now.AddDate(0, 0, days),
	}
	for _, e := range req.Revoked {
		// Copy only what we set: parsed entries carry Extensions (including reasonCode),
		// which CreateRevocationList ignores anyway.
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber:   e.SerialNumber,
			RevocationTime: e.RevocationTime,
			ReasonCode:     e.ReasonCode,
		})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign CRL number %v: %w", number, err)
	}
	list, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("parse new CRL: %w", err)
	}
	return list, nil
}

// EncodeCRL returns list as a PEM "X509 CRL" block, the format of crl.pem.
func EncodeCRL(list *x509.RevocationList) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCRL, Bytes: list.Raw})
}

// CRL is a revocation list whose signature has been verified against the CA. It is immutable
// and safe for concurrent use.
type CRL struct {
	Path string               // file it was read from
	List *x509.RevocationList // the parsed list; do not modify

	revoked map[string]*x509.RevocationListEntry // by serialKey; immutable
}

// serialKey is the map key for a serial number.
func serialKey(serial *big.Int) string {
	return serial.Text(16)
}

// Lookup returns the CRL's entry for serial, if the serial is revoked.
func (c *CRL) Lookup(serial *big.Int) (x509.RevocationListEntry, bool) {
	e, ok := c.revoked[serialKey(serial)]
	if !ok {
		return x509.RevocationListEntry{}, false
	}
	return *e, true
}

// IsRevoked reports whether serial is listed in the CRL. It does not look at NextUpdate; see
// [CRL.CheckFresh] and, for a server, [Revocation].
func (c *CRL) IsRevoked(serial *big.Int) bool {
	_, ok := c.revoked[serialKey(serial)]
	return ok
}

// CheckFresh returns an error saying how to refresh the CRL if now is past its NextUpdate.
// A stale CRL may be missing recent revocations, so the server treats it as no CRL at all.
func (c *CRL) CheckFresh(now time.Time) error {
	if now.After(c.List.NextUpdate) {
		return fmt.Errorf("CRL %s expired at %s: refresh it with 'tunneld pki crl --dir %s'",
			c.Path, c.List.NextUpdate.UTC().Format(time.RFC3339), filepath.Dir(c.Path))
	}
	return nil
}

// LoadCRL reads the CRL in path, verifies it was signed by ca, and checks that it is fresh
// now (see [CRL.CheckFresh]). Every failure is an error that says what to do: a missing,
// unreadable, malformed, wrongly signed or expired CRL never yields a usable *CRL, so callers
// fail closed. Servers usually want a [Revocation], which wraps this with reloading.
func LoadCRL(path string, ca *x509.Certificate) (*CRL, error) {
	c, err := ReadCRL(path, ca)
	if err != nil {
		return nil, err
	}
	if err := c.CheckFresh(time.Now()); err != nil {
		return nil, err
	}
	return c, nil
}

// ReadCRL is [LoadCRL] without the freshness check, for tools that inspect or replace a CRL
// ('tunneld pki list', [Revoke]). Servers must use LoadCRL or [Revocation].
func ReadCRL(path string, ca *x509.Certificate) (*CRL, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, crlReadError(path, err)
	}
	return parseCRL(path, data, ca)
}

// crlReadError turns a failure to read the CRL at path into advice.
func crlReadError(path string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("CRL %s not found: create it with 'tunneld pki crl --dir %s'", path, filepath.Dir(path))
	}
	return pathError("read CRL", path, err)
}

// parseCRL decodes the CRL in data (PEM "X509 CRL", or bare DER as openssl can write it),
// which was read from path, and verifies it against ca.
func parseCRL(path string, data []byte, ca *x509.Certificate) (*CRL, error) {
	redo := fmt.Sprintf("recreate it with 'tunneld pki crl --dir %s'", filepath.Dir(path))
	der, err := crlDER(path, data, redo)
	if err != nil {
		return nil, err
	}
	list, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("parse CRL %s: %w; %s", path, err, redo)
	}
	if !bytes.Equal(list.RawIssuer, ca.RawSubject) {
		return nil, fmt.Errorf("CRL %s was issued by %q, not by the CA %q: use the crl.pem from that CA's --dir, or %s",
			path, list.Issuer.String(), ca.Subject.String(), redo)
	}
	if err := list.CheckSignatureFrom(ca); err != nil {
		return nil, fmt.Errorf("CRL %s is not signed by the CA %q (%v): use the crl.pem from that CA's --dir, or %s",
			path, ca.Subject.String(), err, redo)
	}
	if list.NextUpdate.IsZero() {
		// RFC 5280 §5.1.2.5: conforming issuers MUST include nextUpdate. Without it a
		// stale list could never be recognised as stale.
		return nil, fmt.Errorf("CRL %s has no next update time, so it can never be recognised as stale: %s", path, redo)
	}
	c := &CRL{Path: path, List: list, revoked: make(map[string]*x509.RevocationListEntry, len(list.RevokedCertificateEntries))}
	for i := range list.RevokedCertificateEntries {
		e := &list.RevokedCertificateEntries[i]
		c.revoked[serialKey(e.SerialNumber)] = e
	}
	return c, nil
}

// crlDER extracts the DER CRL from data, read from path.
func crlDER(path string, data []byte, redo string) ([]byte, error) {
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case pemCRL:
			return block.Bytes, nil
		case pemCertificate:
			return nil, fmt.Errorf("%s holds a certificate, not a CRL: pass the crl.pem written by 'tunneld pki', or %s", path, redo)
		}
	}
	if len(data) > 0 && data[0] == 0x30 { // an ASN.1 SEQUENCE: DER, as 'openssl ca -gencrl -outform DER' writes
		return data, nil
	}
	return nil, fmt.Errorf("%s holds no PEM X509 CRL block: pass the crl.pem written by 'tunneld pki', or %s", path, redo)
}

// Revocation reasons accepted by [ParseReason] (RFC 5280 §5.3.1). certificateHold and
// removeFromCRL are left out on purpose: revocation here is permanent, and there are no
// delta CRLs. cACompromise and aACompromise do not apply to a leaf certificate.
var revokeReasons = map[int]string{
	0: "unspecified",
	1: "keyCompromise",
	3: "affiliationChanged",
	4: "superseded",
	5: "cessationOfOperation",
	9: "privilegeWithdrawn",
}

// reasonNames are all RFC 5280 §5.3.1 reason codes, for displaying any CRL.
var reasonNames = map[int]string{
	0: "unspecified", 1: "keyCompromise", 2: "cACompromise", 3: "affiliationChanged",
	4: "superseded", 5: "cessationOfOperation", 6: "certificateHold", 8: "removeFromCRL",
	9: "privilegeWithdrawn", 10: "aACompromise",
}

// ReasonKeywords lists the keywords [ParseReason] accepts, in reason-code order.
const ReasonKeywords = "unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn"

// ParseReason returns the RFC 5280 reason code for a keyword such as "keyCompromise" or
// "superseded" (case-insensitive; "" means unspecified).
func ParseReason(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	for code, name := range revokeReasons {
		if strings.EqualFold(s, name) {
			return code, nil
		}
	}
	return 0, fmt.Errorf("unknown revocation reason %q: use one of %s", s, ReasonKeywords)
}

// ReasonText returns the RFC 5280 keyword for a reason code, e.g. "keyCompromise".
func ReasonText(code int) string {
	if s, ok := reasonNames[code]; ok {
		return s
	}
	return fmt.Sprintf("reason %d", code)
}

// FormatSerial formats a certificate serial number as 0x followed by upper-case hex, the form
// [ParseSerial] reads back unambiguously.
func FormatSerial(serial *big.Int) string {
	if serial.Sign() < 0 {
		return "-0x" + strings.ToUpper(new(big.Int).Neg(serial).Text(16))
	}
	return "0x" + strings.ToUpper(serial.Text(16))
}

// maxSerialBits is RFC 5280's limit: serial numbers are at most 20 octets.
const maxSerialBits = 20 * 8

// ParseSerial parses a certificate serial number. Hex is recognised by a 0x prefix (as
// [FormatSerial] prints), by colons between bytes (as 'openssl x509 -text' prints), or by
// containing a letter a-f (as 'openssl x509 -serial' usually prints); a string of decimal
// digits only is decimal.
func ParseSerial(s string) (*big.Int, error) {
	orig := s
	s = strings.TrimSpace(s)
	base := 10
	switch lower := strings.ToLower(s); {
	case strings.HasPrefix(lower, "0x"):
		base, s = 16, strings.ReplaceAll(s[2:], ":", "")
	case strings.Contains(s, ":"):
		base, s = 16, strings.ReplaceAll(s, ":", "")
	case strings.ContainsAny(lower, "abcdef"):
		base = 16
	}
	valid := s != ""
	for _, r := range s {
		if !('0' <= r && r <= '9' || base == 16 && ('a' <= r && r <= 'f' || 'A' <= r && r <= 'F')) {
			valid = false
		}
	}
	n, ok := new(big.Int).SetString(s, base)
	if !valid || !ok {
		return nil, fmt.Errorf("%q is not a serial number: pass hex like 0x1A2B3C (as 'tunneld pki list' prints) or decimal digits", orig)
	}
	if n.Sign() == 0 || n.BitLen() > maxSerialBits {
		return nil, fmt.Errorf("serial number %s is out of range: serial numbers are 1 to 20 bytes long", orig)
	}
	return n, nil
}

// IssuedCert is a certificate file found in a PKI directory by [ListCerts].
type IssuedCert struct {
	Name string            // file name without ".crt"
	File string            // path of the certificate file
	Cert *x509.Certificate // the first certificate in File; nil if Err is set
	Err  error             // why File could not be read or parsed
}

// ListCerts returns the certificates in dir (every NAME.crt except the CA's own), sorted by
// name. A file that cannot be parsed is returned with Err set rather than failing the list.
func ListCerts(dir string) ([]IssuedCert, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, pathError("list certificates in", dir, err)
	}
	var out []IssuedCert
	for _, e := range entries { // ReadDir sorts by file name
		name, ok := strings.CutSuffix(e.Name(), ".crt")
		if !ok || name == "ca" || !e.Type().IsRegular() {
			continue
		}
		ic := IssuedCert{Name: name, File: filepath.Join(dir, e.Name())}
		data, err := os.ReadFile(ic.File)
		if err == nil {
			var certs []*x509.Certificate
			if certs, err = parseCerts(ic.File, data); err == nil {
				ic.Cert = certs[0]
			}
		}
		ic.Err = err
		out = append(out, ic)
	}
	return out, nil
}

// CRLOptions configures [RefreshCRL].
type CRLOptions struct {
	Days int       // validity of the new CRL; 0 means DefaultCRLDays
	Now  time.Time // ThisUpdate; the zero value means time.Now()
}

// RevokeRequest says which certificate [Revoke] revokes: exactly one of Name and Serial.
type RevokeRequest struct {
	// Name revokes the certificate currently at DIR/NAME.crt, by its serial number.
	Name string
	// Serial revokes a serial number directly, e.g. when the certificate file is gone.
	Serial *big.Int
	// Reason is the RFC 5280 reason code (see [ParseReason]); 0 means unspecified.
	Reason int
	// Days is the validity of the new CRL; 0 means DefaultCRLDays.
	Days int
	// Now is the revocation time and the CRL's ThisUpdate; the zero value means time.Now().
	Now time.Time
}

// CRLUpdate reports what [Revoke] or [RefreshCRL] did to DIR/crl.pem.
type CRLUpdate struct {
	File    string               // path of crl.pem
	CRL     *x509.RevocationList // the CRL now in File
	Created bool                 // File did not exist before
	// AlreadyRevoked is set by Revoke when the serial was already listed: nothing was
	// written, and Entry is the existing entry.
	AlreadyRevoked bool

	// Revoke only: the entry for the revoked serial, and the certificate in DIR with that
	// serial (nil if no NAME.crt in DIR has it) and its file.
	Entry    x509.RevocationListEntry
	Cert     *x509.Certificate
	CertFile string
}

// Revoke adds a certificate to the CRL in dir, signed by the CA in dir: it loads the current
// crl.pem (creating it if it is missing), appends an entry with the revocation time and
// reason, increments the CRL number and writes crl.pem again, atomically (mode 0644).
// Revoking a serial that is already listed changes nothing and sets AlreadyRevoked.
//
// Writers of one directory take turns through an exclusive crl.pem.tmp, so two concurrent
// revocations cannot lose each other's entry; a crl.pem.tmp left by a crash must be removed
// by hand (the error says so).
func Revoke(dir string, req RevokeRequest) (CRLUpdate, error) {
	if (req.Name == "") == (req.Serial == nil) {
		return CRLUpdate{}, errors.New("say what to revoke: pass exactly one of --name NAME or --serial SERIAL")
	}
	if _, ok := revokeReasons[req.Reason]; !ok {
		return CRLUpdate{}, fmt.Errorf("revocation reason %d (%s) is not supported: use one of %s", req.Reason, ReasonText(req.Reason), ReasonKeywords)
	}
	ca, err := LoadCA(dir)
	if err != nil {
		return CRLUpdate{}, err
	}
	var u CRLUpdate
	serial := req.Serial
	if req.Name != "" {
		if err := ValidateName(req.Name); err != nil {
			return CRLUpdate{}, err
		}
		certFile, _ := certPaths(dir, req.Name)
		data, err := readFile(certFile, "certificate", fmt.Sprintf("check --name (see 'tunneld pki list --dir %s'), or pass --serial if the file is gone", dir))
		if err != nil {
			return CRLUpdate{}, err
		}
		certs, err := parseCerts(certFile, data)
		if err != nil {
			return CRLUpdate{}, err
		}
		u.Cert, u.CertFile = certs[0], certFile
		if err := u.Cert.CheckSignatureFrom(ca.Cert); err != nil {
			return CRLUpdate{}, fmt.Errorf("certificate %s was not issued by the CA in %s, so this CA cannot revoke it: revoke it where it was issued", certFile, dir)
		}
		serial = u.Cert.SerialNumber
	} else {
		if serial.Sign() <= 0 {
			return CRLUpdate{}, fmt.Errorf("serial number %v: pass a positive serial number", serial)
		}
		if found, err := ListCerts(dir); err == nil {
			for _, ic := range found {
				if ic.Cert != nil && ic.Cert.SerialNumber.Cmp(serial) == 0 && ic.Cert.CheckSignatureFrom(ca.Cert) == nil {
					u.Cert, u.CertFile = ic.Cert, ic.File
					break
				}
			}
		}
	}
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}
	err = updateCRL(dir, ca, &u, func(old *CRL) (*CRLRequest, error) {
		var r CRLRequest
		if old != nil {
			if e, ok := old.Lookup(serial); ok {
				u.AlreadyRevoked, u.Entry = true, e
				return nil, nil
			}
			r.Revoked = old.List.RevokedCertificateEntries
		}
		r.Revoked = append(r.Revoked[:len(r.Revoked):len(r.Revoked)], x509.RevocationListEntry{
			SerialNumber:   serial,
			RevocationTime: now,
			ReasonCode:     req.Reason,
		})
		r.Days, r.Now = req.Days, now
		return &r, nil
	})
	if err != nil {
		return CRLUpdate{}, err
	}
	if !u.AlreadyRevoked {
		entries := u.CRL.RevokedCertificateEntries
		u.Entry = entries[len(entries)-1]
	}
	return u, nil
}

// RefreshCRL re-signs the CRL in dir with the same entries, a new ThisUpdate and NextUpdate
// and the next CRL number, creating an empty CRL if crl.pem is missing. Run it regularly (for
// example daily from cron) so the CRL never expires: servers refuse every client once it has.
func RefreshCRL(dir string, opts CRLOptions) (CRLUpdate, error) {
	ca, err := LoadCA(dir)
	if err != nil {
		return CRLUpdate{}, err
	}
	var u CRLUpdate
	err = updateCRL(dir, ca, &u, func(old *CRL) (*CRLRequest, error) {
		r := &CRLRequest{Days: opts.Days, Now: opts.Now}
		if old != nil {
			r.Revoked = old.List.RevokedCertificateEntries
		}
		return r, nil
	})
	return u, err
}

// updateCRL replaces dir/crl.pem while holding its lock: it reads and verifies the current CRL
// (nil if missing), asks change for the next one (nil means leave it as it is), and signs and
// writes it with the next CRL number. It sets u.File, u.CRL and u.Created.
func updateCRL(dir string, ca *CA, u *CRLUpdate, change func(old *CRL) (*CRLRequest, error)) error {
	u.File = filepath.Join(dir, CRLFile)
	w, err := lockFile(u.File)
	if err != nil {
		return err
	}
	defer w.abort()
	var old *CRL
	if _, err := os.Lstat(u.File); errors.Is(err, fs.ErrNotExist) {
		u.Created = true
	} else if old, err = ReadCRL(u.File, ca.Cert); err == nil {
		u.CRL = old.List
	} else {
		return fmt.Errorf("%w; if this CRL is not from the CA in %s, move it away and run the command again "+
			"(a new CRL starts empty: revoke again whatever must stay revoked)", err, dir)
	}
	req, err := change(old)
	if err != nil || req == nil {
		return err
	}
	req.Number = big.NewInt(1)
	if old != nil && old.List.Number != nil {
		req.Number = new(big.Int).Add(old.List.Number, big.NewInt(1))
	}
	list, err := ca.SignCRL(*req)
	if err != nil {
		return err
	}
	if err := w.commit(EncodeCRL(list), certFileMode); err != nil {
		return err
	}
	u.CRL = list
	return nil
}

// lockedFile is an exclusively created temporary file next to a destination file. It is both
// the lock that serialises writers and the staging file for an atomic replace.
type lockedFile struct {
	f        *os.File
	tmp, dst string
	done     bool
}

// lockFile creates dst+".tmp" exclusively, or fails saying another writer holds it.
func lockFile(dst string) (*lockedFile, error) {
	tmp := dst + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("%s exists: another 'tunneld pki' command is updating %s; wait for it and retry, or remove %s if none is running",
			tmp, filepath.Base(dst), tmp)
	}
	if err != nil {
		return nil, pathError("create", tmp, err)
	}
	return &lockedFile{f: f, tmp: tmp, dst: dst}, nil
}

// commit writes data with mode to the temporary file, syncs it and renames it over dst, so
// readers see either the old or the new file, never a partial one.
func (w *lockedFile) commit(data []byte, mode fs.FileMode) error {
	if err := w.f.Chmod(mode); err != nil {
		return pathError("chmod", w.tmp, err)
	}
	if _, err := w.f.Write(data); err != nil {
		return pathError("write", w.tmp, err)
	}
	if err := w.f.Sync(); err != nil {
		return pathError("sync", w.tmp, err)
	}
	if err := w.f.Close(); err != nil {
		return pathError("close", w.tmp, err)
	}
	if err := os.Rename(w.tmp, w.dst); err != nil {
		return pathError("replace", w.dst, err)
	}
	w.done = true
	// Make the rename durable. Some file systems cannot sync a directory; the new file is
	// already complete and in place, so that is not worth failing for.
	if d, err := os.Open(filepath.Dir(w.dst)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// abort removes the temporary file unless commit succeeded, releasing the lock.
func (w *lockedFile) abort() {
	if w.done {
		return
	}
	w.f.Close()
	os.Remove(w.tmp)
	w.done = true
}
