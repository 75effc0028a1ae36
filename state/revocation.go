package state

import (
	"tlsvpn/certs"
)

// The revocation checker of today is certs.Revocation's: one CRL file.
var _ Revocation = (*certs.Revocation)(nil)

// OpenRevocation loads the CRL file at path, which must be signed by the
// CA in caFile, and returns the checker enforcing it.
func OpenRevocation(caFile, path string) (Revocation, error) {
	ca, err := certs.LoadCACert(caFile)
	if err != nil {
		return nil, err
	}
	r, err := certs.NewRevocation(path, ca, certs.RevocationOptions{})
	if err != nil {
		return nil, err
	}
	return r, nil
}
